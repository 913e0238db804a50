// Bindings shared by every area: threads, filters, the model file format,
// tensor <-> NumPy conversion.
#include <cstring>

#include "common.hpp"
#include "stemroi/filters.hpp"
#include "stemroi/model_file.hpp"
#include "stemroi/parallel.hpp"
#include "stemroi/torch_io.hpp"

namespace stemroi::bind {

py::dict state_to_dict(const StateDict& state) {
  py::dict out;
  for (const auto& [name, t] : state) out[py::str(name)] = tensor_to_numpy(t);
  return out;
}

StateDict dict_to_state(const py::dict& d) {
  StateDict out;
  for (auto item : d) out[py::cast<std::string>(item.first)] = numpy_to_tensor(py::cast<py::array>(item.second));
  return out;
}

py::array tensor_to_numpy(const torch::Tensor& t) {
  auto c = t.detach().to(torch::kCPU).contiguous();
  py::dtype dt;
  switch (c.scalar_type()) {
    case torch::kFloat32: dt = py::dtype::of<float>(); break;
    case torch::kFloat64: dt = py::dtype::of<double>(); break;
    case torch::kInt64: dt = py::dtype::of<int64_t>(); break;
    case torch::kInt32: dt = py::dtype::of<int32_t>(); break;
    case torch::kInt16: dt = py::dtype::of<int16_t>(); break;
    case torch::kInt8: dt = py::dtype::of<int8_t>(); break;
    case torch::kUInt8: dt = py::dtype::of<uint8_t>(); break;
    case torch::kBool: dt = py::dtype::of<bool>(); break;
    case torch::kFloat16: dt = py::dtype("float16"); break;
    case torch::kBFloat16:
      c = c.to(torch::kFloat32);
      dt = py::dtype::of<float>();
      break;
    default: throw TypeError(concat("cannot convert tensor of dtype ", c10::toString(c.scalar_type()), " to NumPy"));
  }
  std::vector<py::ssize_t> shape(c.sizes().begin(), c.sizes().end());
  py::array out(dt, shape);
  if (c.numel() > 0) std::memcpy(out.mutable_data(), c.data_ptr(), c.numel() * c.element_size());
  return out;
}

torch::Tensor numpy_to_tensor(const py::array& a_in) {
  py::array a = py::array::ensure(a_in, py::array::c_style);
  if (!a) throw TypeError("expected an array convertible to a C-contiguous NumPy array");
  auto kind = a.dtype().kind();
  auto size = a.itemsize();
  c10::ScalarType st;
  if (kind == 'f' && size == 4) st = torch::kFloat32;
  else if (kind == 'f' && size == 8) st = torch::kFloat64;
  else if (kind == 'f' && size == 2) st = torch::kFloat16;
  else if (kind == 'i' && size == 8) st = torch::kInt64;
  else if (kind == 'i' && size == 4) st = torch::kInt32;
  else if (kind == 'i' && size == 2) st = torch::kInt16;
  else if (kind == 'i' && size == 1) st = torch::kInt8;
  else if (kind == 'u' && size == 1) st = torch::kUInt8;
  else if (kind == 'b') st = torch::kBool;
  else throw TypeError(concat("unsupported array dtype '", std::string(py::str(a.dtype())), "'"));
  std::vector<int64_t> shape(a.shape(), a.shape() + a.ndim());
  auto t = torch::empty(shape, torch::TensorOptions().dtype(st));
  if (t.numel() > 0) std::memcpy(t.data_ptr(), a.data(), t.numel() * t.element_size());
  return t;
}

namespace {
template <typename T>
py::array_t<T> gaussian_filter(const carray<T>& images, double sigma, double truncate, int n_threads) {
  require_ndim(images, 3, "images");
  auto s = shape_of(images);
  py::array_t<T> out(std::vector<py::ssize_t>(s.begin(), s.end()));
  const T* in = images.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    gaussian_filter_batch<T>(in, o, s[0], s[1], s[2], sigma, truncate, n_threads);
  }
  return out;
}
template <typename T>
py::array_t<T> uniform_filter(const carray<T>& images, int64_t size, int n_threads) {
  require_ndim(images, 3, "images");
  auto s = shape_of(images);
  py::array_t<T> out(std::vector<py::ssize_t>(s.begin(), s.end()));
  const T* in = images.data();
  T* o = out.mutable_data();
  {
    py::gil_scoped_release release;
    uniform_filter_batch<T>(in, o, s[0], s[1], s[2], size, n_threads);
  }
  return out;
}
}  // namespace

void bind_common(py::module_& m) {
  m.def("resolve_n_threads", &resolve_n_threads, py::arg("n_threads"),
        "Number of threads used for n_threads (<= 0: all available, respecting OMP_NUM_THREADS and cgroup quotas).");

  m.def("gaussian_filter", &gaussian_filter<float>, py::arg("images").noconvert(), py::arg("sigma"),
        py::arg("truncate") = 4.0, py::arg("n_threads") = 0);
  m.def("gaussian_filter", &gaussian_filter<double>, py::arg("images").noconvert(), py::arg("sigma"),
        py::arg("truncate") = 4.0, py::arg("n_threads") = 0);
  m.def("uniform_filter", &uniform_filter<float>, py::arg("images").noconvert(), py::arg("size"),
        py::arg("n_threads") = 0);
  m.def("uniform_filter", &uniform_filter<double>, py::arg("images").noconvert(), py::arg("size"),
        py::arg("n_threads") = 0);

  m.def(
      "write_model_file",
      [](const std::string& path, const py::dict& tensors, const std::map<std::string, std::string>& metadata) {
        StateDict state;
        for (auto item : tensors) state[py::cast<std::string>(item.first)] = numpy_to_tensor(py::cast<py::array>(item.second));
        ModelFile f = model_file_from_state(state, metadata);
        py::gil_scoped_release release;
        write_model_file(path, f);
      },
      py::arg("path"), py::arg("tensors"), py::arg("metadata"),
      "Write tensors (name -> array) and string metadata atomically in the safe model format.");
  m.def(
      "read_model_file",
      [](const std::string& path, const std::string& sha256) {
        ModelFile f;
        {
          py::gil_scoped_release release;
          f = read_model_file(path, sha256);
        }
        py::dict tensors;
        for (const auto& t : f.tensors) tensors[py::str(t.name)] = tensor_to_numpy(named_to_tensor(t));
        return py::make_tuple(tensors, f.metadata);
      },
      py::arg("path"), py::arg("sha256") = "",
      "Read (tensors, metadata) from a model file; never executes code. Verifies the file's own SHA-256 fields "
      "and, when sha256 is given, that the whole file has that SHA-256.");
}

}  // namespace stemroi::bind
