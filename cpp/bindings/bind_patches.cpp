// Bindings of the patches area: the PatchGrid geometry and batch extraction.
// Arrays are validated in python/stemroi/preprocessing/grid.py first.
#include <cstring>

#include "common.hpp"
#include "stemroi/patches.hpp"

namespace stemroi::bind {
namespace {

PatchGrid make_grid(int64_t patch_size, int64_t stride, const std::string& edge) {
  return PatchGrid(patch_size, stride, parse_edge_mode(edge));
}

// Patches [start, stop) of an h x w image from `band`, the image rows
// [band_row0, band_row0 + band.shape[0]) (the whole image when band_row0 = 0
// and band has h rows; a memory map is read in place).
template <typename T>
py::array_t<T> extract(const carray<T>& band, int64_t band_row0, int64_t h, int64_t w, int64_t patch_size,
                       int64_t stride, const std::string& edge, int64_t start, int64_t stop, bool check_finite,
                       int n_threads) {
  require_ndim(band, 2, "image");
  STEMROI_CHECK(band.shape(1) == w, "image band has ", band.shape(1), " columns, expected ", w);
  const PatchGrid grid = make_grid(patch_size, stride, edge);
  const int64_t p = grid.patch_size();
  const int64_t count = std::max<int64_t>(stop - start, 0);
  py::array_t<T> out(std::vector<py::ssize_t>{count, p, p});
  const T* in = band.data();
  T* o = out.mutable_data();
  const int64_t band_rows = band.shape(0);
  {
    py::gil_scoped_release release;
    grid.extract<T>(in, band_row0, band_rows, h, w, start, stop, o, check_finite, n_threads);
  }
  return out;
}

template <typename T>
void def_extract(py::module_& m) {
  m.def("patch_grid_extract", &extract<T>, py::arg("band").noconvert(), py::arg("band_row0"), py::arg("h"),
        py::arg("w"), py::arg("patch_size"), py::arg("stride"), py::arg("edge"), py::arg("start"), py::arg("stop"),
        py::arg("check_finite") = true, py::arg("n_threads") = 0);
}

}  // namespace

void bind_patches(py::module_& m) {
  m.def(
      "patch_grid_origins",
      [](int64_t patch_size, int64_t stride, const std::string& edge, int64_t h, int64_t w) {
        const auto o = make_grid(patch_size, stride, edge).origins(h, w);
        py::array_t<int64_t> out(std::vector<py::ssize_t>{static_cast<py::ssize_t>(o.size() / 2), 2});
        if (!o.empty()) std::memcpy(out.mutable_data(), o.data(), o.size() * sizeof(int64_t));
        return out;
      },
      py::arg("patch_size"), py::arg("stride"), py::arg("edge"), py::arg("h"), py::arg("w"),
      "(row, col) origins of every patch, row-major, as an (n, 2) int64 array.");
  m.def(
      "patch_grid_axis_origins",
      [](int64_t patch_size, int64_t stride, const std::string& edge, int64_t h, int64_t w) {
        const PatchGrid grid = make_grid(patch_size, stride, edge);
        return py::make_tuple(py::array(py::cast(grid.axis_origins(h, h, w))), py::array(py::cast(grid.axis_origins(w, h, w))));
      },
      py::arg("patch_size"), py::arg("stride"), py::arg("edge"), py::arg("h"), py::arg("w"),
      "(row origins, column origins) of the grid; patch i is at (rows[i // len(cols)], cols[i % len(cols)]).");
  m.def(
      "patch_grid_n_patches",
      [](int64_t patch_size, int64_t stride, const std::string& edge, int64_t h, int64_t w) {
        return make_grid(patch_size, stride, edge).n_patches(h, w);
      },
      py::arg("patch_size"), py::arg("stride"), py::arg("edge"), py::arg("h"), py::arg("w"));
  m.def(
      "patch_grid_row_span",
      [](int64_t patch_size, int64_t stride, const std::string& edge, int64_t h, int64_t w, int64_t start,
         int64_t stop) { return make_grid(patch_size, stride, edge).row_span(h, w, start, stop); },
      py::arg("patch_size"), py::arg("stride"), py::arg("edge"), py::arg("h"), py::arg("w"), py::arg("start"),
      py::arg("stop"), "Rows [first, last) of the image that patches [start, stop) read.");
  def_extract<float>(m);
  def_extract<double>(m);
  def_extract<uint8_t>(m);
  def_extract<uint16_t>(m);
}

}  // namespace stemroi::bind
