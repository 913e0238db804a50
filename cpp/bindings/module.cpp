// stemroi._core: the private compiled module. Each area registers itself in
// its own bind_<area>.cpp; this file wires them up and maps exceptions.
#include <Python.h>

#include <cstring>

#include "common.hpp"
#include "stemroi/parallel.hpp"

namespace stemroi::bind {
void bind_common(py::module_& m);
void bind_numeric(py::module_& m);
void bind_patches(py::module_& m);
void bind_data(py::module_& m);
void bind_preprocess(py::module_& m);
void bind_vgg16(py::module_& m);
void bind_classifier(py::module_& m);
void bind_cvae(py::module_& m);
void bind_unet(py::module_& m);
void bind_mobilenet(py::module_& m);

namespace {
// Polled by long computations: true once Python has a pending signal (Ctrl-C).
struct PythonInterruptCallback : InterruptCallback {
  bool want_interrupt() override {
    py::gil_scoped_acquire gil;
    if (PyErr_CheckSignals() != 0) {
      PyErr_Clear();  // the core raises stemroi::Interrupted -> KeyboardInterrupt
      return true;
    }
    return false;
  }
};
}  // namespace
}  // namespace stemroi::bind

namespace {
// Messages may quote bytes of a corrupt file that are not valid UTF-8:
// decode with replacement so the message survives (PyErr_SetString would
// raise a UnicodeDecodeError and lose it).
void set_error(PyObject* type, const char* message) {
  PyObject* text = PyUnicode_DecodeUTF8(message, static_cast<Py_ssize_t>(std::strlen(message)), "replace");
  if (text == nullptr) {
    PyErr_Clear();
    PyErr_SetString(type, "(message could not be decoded)");
    return;
  }
  PyErr_SetObject(type, text);
  Py_DECREF(text);
}
}  // namespace

PYBIND11_MODULE(_core, m) {
  using namespace stemroi;
  using namespace stemroi::bind;
  m.doc() = "stemroi compiled core (private; use the stemroi package)";
  m.attr("__version__") = STEMROI_VERSION;
  m.attr("torch_version") = TORCH_VERSION;

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const stemroi::Interrupted& e) {
      set_error(PyExc_KeyboardInterrupt, e.what());
    } catch (const stemroi::TypeError& e) {
      set_error(PyExc_TypeError, e.what());
    } catch (const stemroi::ValueError& e) {
      set_error(PyExc_ValueError, e.what());
    } catch (const stemroi::IOError& e) {
      set_error(PyExc_OSError, e.what());
    } catch (const c10::Error& e) {
      // LibTorch checks: keep the message, drop the C++ backtrace.
      set_error(PyExc_RuntimeError, e.what_without_backtrace());
    }
  });
  InterruptCallback::install(std::make_unique<PythonInterruptCallback>());

  bind_common(m);
  bind_numeric(m);
  bind_patches(m);
  bind_data(m);
  bind_preprocess(m);
  bind_vgg16(m);
  bind_classifier(m);
  bind_cvae(m);
  bind_unet(m);
  bind_mobilenet(m);
}
