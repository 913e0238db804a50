// Bindings of the mobilenet area: the MobileNetV2 backbone (torchvision
// names), torchvision state loading, forward and features. Its input comes
// from the preprocess area's network_input; training goes through the patch
// classifier's PatchNet (backbone "mobilenet_v2").
#include "common.hpp"
#include "stemroi/mobilenet.hpp"
#include "stemroi/parallel.hpp"
#include "stemroi/torch_io.hpp"

namespace stemroi::bind {

void bind_mobilenet(py::module_& m) {
  auto mobilenet = py::class_<MobileNetV2Impl, std::shared_ptr<MobileNetV2Impl>>(m, "MobileNetV2")
      .def(py::init([](int64_t num_classes, double dropout, uint64_t seed) {
             MobileNetV2Config c;
             c.num_classes = num_classes;
             c.dropout = dropout;
             return make_mobilenet_v2(c, seed).ptr();
           }),
           py::arg("num_classes") = 1000, py::arg("dropout") = 0.2, py::arg("seed") = 0)
      .def_property_readonly("num_classes", [](const MobileNetV2Impl& n) { return n.config().num_classes; })
      .def_property_readonly("out_channels", &MobileNetV2Impl::out_channels)
      .def_property_readonly("preprocessing", &MobileNetV2Impl::preprocessing)
      .def_property_readonly("architecture", &MobileNetV2Impl::architecture)
      .def("stages", &MobileNetV2Impl::stages)
      .def("state_dict",
           [](const MobileNetV2Impl& n) { return state_to_dict(module_state(n)); })
      .def(
          "load_torchvision_state",
          [](MobileNetV2Impl& n, const py::dict& d, bool include_classifier, const std::string& origin) {
            StateDict st = dict_to_state(d);
            py::gil_scoped_release release;
            n.load_torchvision_state(st, include_classifier, origin);
          },
          py::arg("state"), py::arg("include_classifier") = true, py::arg("origin") = "a state dict")
      .def(
          "forward",
          [](MobileNetV2Impl& n, const carray<float>& x, int n_threads) {
            return eval_forward(n, x, n_threads, [&](const torch::Tensor& t) { return n.forward(t); });
          },
          py::arg("x"), py::arg("n_threads") = 0)
      .def(
          "features",
          [](MobileNetV2Impl& n, const carray<float>& x, int n_threads) {
            return eval_forward(n, x, n_threads, [&](const torch::Tensor& t) { return n.features(t); });
          },
          py::arg("x"), py::arg("n_threads") = 0);
  def_network_device(mobilenet, [](MobileNetV2Impl& n) -> torch::nn::Module& { return n; });
}

}  // namespace stemroi::bind
