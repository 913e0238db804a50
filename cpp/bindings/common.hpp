// Shared binding helpers: array checks and conversions (GIL held), progress
// callbacks that re-acquire the GIL, and tensor <-> NumPy conversion.
// No algorithms here.
#pragma once
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "stemroi/callbacks.hpp"
#include "stemroi/compute_device.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"
#include "stemroi/torch_io.hpp"

namespace py = pybind11;

namespace stemroi::bind {

// C-contiguous, exactly dtype T, no conversion (validated in Python first).
template <typename T>
using carray = py::array_t<T, py::array::c_style>;

inline std::vector<int64_t> shape_of(const py::array& a) {
  return std::vector<int64_t>(a.shape(), a.shape() + a.ndim());
}

// Throws ValueError "<name>: expected a 3-D array, got shape (64, 64)".
inline void require_ndim(const py::array& a, int ndim, const char* name) {
  if (a.ndim() != ndim)
    throw ValueError(concat(name, ": expected a ", ndim, "-D array, got shape ", shape_str(shape_of(a))));
}

// Wraps an optional Python callable progress(done, total) for the core; calls
// it with the GIL re-acquired (the core runs with the GIL released).
inline ProgressFn wrap_progress(const py::object& cb) {
  if (cb.is_none()) return {};
  auto holder = std::make_shared<py::object>(cb);
  return [holder](int64_t done, int64_t total) {
    py::gil_scoped_acquire gil;
    (*holder)(done, total);
  };
}

// View a C-contiguous float array as a CPU tensor without copying. The array
// must outlive the tensor (clone() if it is kept).
template <typename T>
torch::Tensor tensor_view(const carray<T>& a) {
  std::vector<int64_t> shape = shape_of(a);
  return torch::from_blob(const_cast<T*>(a.data()), shape, torch::TensorOptions().dtype(torch::CppTypeToScalarType<T>()));
}

// Copy a tensor (any device) into a new NumPy array of the same dtype.
py::array tensor_to_numpy(const torch::Tensor& t);

// Copy a NumPy array (any numeric dtype, made contiguous) into a new CPU tensor.
torch::Tensor numpy_to_tensor(const py::array& a);

// {name: array} <-> StateDict (copies), for the modules' state_dict bindings.
py::dict state_to_dict(const StateDict& state);
StateDict dict_to_state(const py::dict& d);

// Inference on a 4-D float array: GIL released, LibTorch threads set, no
// gradients, module in eval mode, input on the module's device; fn(tensor) ->
// tensor does the forward pass.
template <typename Module, typename Fn>
py::array eval_forward(Module& module, const carray<float>& x, int n_threads, Fn&& fn) {
  require_ndim(x, 4, "x");
  auto t = tensor_view(x);
  torch::Tensor y;
  {
    py::gil_scoped_release release;
    TorchThreadsGuard threads(n_threads);
    torch::NoGradGuard no_grad;
    module.eval();
    y = fn(t.to(module_device(module)));
  }
  return tensor_to_numpy(y);
}

// `device` (where the parameters are: "cpu", "cuda:0", ...) and `to(device)`
// (moves them; names of parse_network_device) of a bound network class;
// module(self) -> torch::nn::Module&.
template <typename PyClass, typename GetModule>
PyClass& def_network_device(PyClass& cls, GetModule module) {
  using Self = typename PyClass::type;
  cls.def_property_readonly(
      "device", [module](Self& self) { return module_device(module(self)).str(); },
      "Device of the parameters ('cpu', 'cuda:0', ...).");
  cls.def(
      "to",
      [module](Self& self, const std::string& device) {
        const c10::Device target = torch_device(parse_network_device(device));
        py::gil_scoped_release release;
        module(self).to(target);
      },
      py::arg("device"), "Move the parameters to device ('cpu', 'cuda', 'cuda:N' or 'auto').");
  return cls;
}

}  // namespace stemroi::bind
