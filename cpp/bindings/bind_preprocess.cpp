// Bindings of the preprocess area: resize, channel replication, normalisation,
// per-patch scaling and the network input. Arrays are validated in
// python/stemroi/preprocessing/transforms.py first.
#include "common.hpp"
#include "stemroi/filters.hpp"
#include "stemroi/normalization.hpp"
#include "stemroi/preprocess.hpp"

namespace stemroi::bind {
namespace {

// (n, h, w) -> (n, oh, ow); channels are folded into n by the caller.
template <typename T>
py::array_t<T> resize(const carray<T>& images, int64_t oh, int64_t ow, const std::string& method, int n_threads) {
  require_ndim(images, 3, "images");
  const auto s = shape_of(images);
  const ResizeMethod m = parse_resize_method(method);
  py::array_t<T> out(std::vector<py::ssize_t>{s[0], oh, ow});
  const T* in = images.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    resize_batch<T>(in, o, s[0], s[1], s[2], oh, ow, m, n_threads);
  }
  return out;
}

template <typename T>
py::array_t<T> to_rgb(const carray<T>& images, int n_threads) {
  require_ndim(images, 3, "images");
  const auto s = shape_of(images);
  py::array_t<T> out(std::vector<py::ssize_t>{s[0], 3, s[1], s[2]});
  const T* in = images.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    grey_to_rgb_batch<T>(in, o, s[0], s[1], s[2], n_threads);
  }
  return out;
}

template <typename T>
py::array_t<T> normalize(const carray<T>& images, const std::string& preset, int n_threads) {
  require_ndim(images, 4, "images");
  const auto s = shape_of(images);
  STEMROI_CHECK(s[1] == 3, "images: expected 3 channels (n, 3, h, w), got shape ", shape_str(s));
  const Normalization& p = normalization_preset(preset);
  py::array_t<T> out(std::vector<py::ssize_t>(s.begin(), s.end()));
  const T* in = images.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    normalize_batch<T>(in, o, s[0], s[2], s[3], p, n_threads);
  }
  return out;
}

// kind: "divide_by_max" | "minmax" | "blur" (sigma used by blur only)
template <typename T>
py::array_t<T> per_patch(const carray<T>& images, const std::string& kind, double sigma, double truncate,
                         int n_threads) {
  require_ndim(images, 3, "images");
  const auto s = shape_of(images);
  py::array_t<T> out(std::vector<py::ssize_t>(s.begin(), s.end()));
  const T* in = images.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    if (kind == "divide_by_max")
      divide_by_max_batch<T>(in, o, s[0], s[1], s[2], n_threads);
    else if (kind == "minmax")
      minmax_scale_batch<T>(in, o, s[0], s[1], s[2], n_threads);
    else if (kind == "blur")
      gaussian_filter_batch<T>(in, o, s[0], s[1], s[2], sigma, truncate, n_threads);
    else
      throw ValueError(concat("unknown per-patch operation '", kind, "'"));
  }
  return out;
}

// (n, h, w) or (n, c, h, w) float32 (c = 1 or 3) -> (n, 3, size, size).
py::array_t<float> network_input_array(const carray<float>& patches, int64_t size, const std::string& preset,
                                       const std::string& method, int n_threads) {
  if (patches.ndim() != 3 && patches.ndim() != 4)
    throw ValueError(concat("patches: expected (n, h, w) or (n, c, h, w), got shape ", shape_str(shape_of(patches))));
  auto s = shape_of(patches);
  if (s.size() == 3) s.insert(s.begin() + 1, 1);
  const Normalization& p = normalization_preset(preset);
  const ResizeMethod m = parse_resize_method(method);
  STEMROI_CHECK(size >= 1, "size must be >= 1, got ", size);
  py::array_t<float> out(std::vector<py::ssize_t>{s[0], 3, size, size});
  const float* in = patches.data();
  float* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    network_input_batch(in, o, s[0], s[1], s[2], s[3], size, size, p, m, n_threads);
  }
  return out;
}

template <typename T>
void def_typed(py::module_& m) {
  m.def("resize", &resize<T>, py::arg("images").noconvert(), py::arg("oh"), py::arg("ow"), py::arg("method"),
        py::arg("n_threads") = 0);
}

template <typename T>
void def_float(py::module_& m) {
  def_typed<T>(m);
  m.def("to_rgb", &to_rgb<T>, py::arg("images").noconvert(), py::arg("n_threads") = 0);
  m.def("normalize", &normalize<T>, py::arg("images").noconvert(), py::arg("preset"), py::arg("n_threads") = 0);
  m.def("per_patch", &per_patch<T>, py::arg("images").noconvert(), py::arg("kind"), py::arg("sigma") = 0.0,
        py::arg("truncate") = 4.0, py::arg("n_threads") = 0);
}

}  // namespace

void bind_preprocess(py::module_& m) {
  def_float<float>(m);
  def_float<double>(m);
  def_typed<uint8_t>(m);
  def_typed<uint16_t>(m);
  m.def("to_rgb", &to_rgb<uint8_t>, py::arg("images").noconvert(), py::arg("n_threads") = 0);
  m.def("to_rgb", &to_rgb<uint16_t>, py::arg("images").noconvert(), py::arg("n_threads") = 0);
  m.def("network_input", &network_input_array, py::arg("patches").noconvert(), py::arg("size"), py::arg("preset"),
        py::arg("method") = "bilinear", py::arg("n_threads") = 0,
        "Network input: (n, h, w) or (n, c, h, w) float32 on [0, 1] (c = 1 or 3) -> resized, 3-channel, "
        "normalised (n, 3, size, size).");
  m.def(
      "normalization_preset",
      [](const std::string& name) {
        const Normalization& p = normalization_preset(name);
        py::dict d;
        d["name"] = std::string(p.name);
        d["input_scale"] = p.input_scale;
        d["mean"] = std::vector<float>(p.mean.begin(), p.mean.end());
        d["std"] = std::vector<float>(p.std.begin(), p.std.end());
        d["bgr"] = p.bgr;
        return d;
      },
      py::arg("name"), "The constants of a normalisation preset (from normalization.hpp).");
}

}  // namespace stemroi::bind
