// Bindings of the mobilenet area: the MobileNetV2 backbone (torchvision
// names), torchvision state loading, input preparation and the simple
// fine-tuning loop.
#include "common.hpp"
#include "stemroi/mobilenet.hpp"
#include "stemroi/parallel.hpp"
#include "stemroi/torch_io.hpp"

namespace stemroi::bind {

void bind_mobilenet(py::module_& m) {
  py::class_<MobileNetV2Impl, std::shared_ptr<MobileNetV2Impl>>(m, "MobileNetV2")
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
           [](const MobileNetV2Impl& n) {
             py::dict out;
             for (const auto& [name, t] : module_state(n)) out[py::str(name)] = tensor_to_numpy(t);
             return out;
           })
      .def(
          "load_torchvision_state",
          [](MobileNetV2Impl& n, const py::dict& d, bool include_classifier, const std::string& origin) {
            StateDict st;
            for (auto item : d)
              st[py::cast<std::string>(item.first)] = numpy_to_tensor(py::cast<py::array>(item.second));
            py::gil_scoped_release release;
            n.load_torchvision_state(st, include_classifier, origin);
          },
          py::arg("state"), py::arg("include_classifier") = true, py::arg("origin") = "a state dict")
      .def(
          "forward",
          [](MobileNetV2Impl& n, const carray<float>& x, int n_threads) {
            require_ndim(x, 4, "x");
            auto t = tensor_view(x);
            torch::Tensor y;
            {
              py::gil_scoped_release release;
              TorchThreadsGuard g(n_threads);
              torch::NoGradGuard ng;
              n.eval();
              y = n.forward(t);
            }
            return tensor_to_numpy(y);
          },
          py::arg("x"), py::arg("n_threads") = 0)
      .def(
          "features",
          [](MobileNetV2Impl& n, const carray<float>& x, int n_threads) {
            require_ndim(x, 4, "x");
            auto t = tensor_view(x);
            torch::Tensor y;
            {
              py::gil_scoped_release release;
              TorchThreadsGuard g(n_threads);
              torch::NoGradGuard ng;
              n.eval();
              y = n.features(t);
            }
            return tensor_to_numpy(y);
          },
          py::arg("x"), py::arg("n_threads") = 0);

  m.def(
      "prepare_backbone_input",
      [](const carray<float>& patches, int64_t size, const std::string& preset) {
        auto t = tensor_view(patches);
        torch::Tensor out;
        {
          py::gil_scoped_release release;
          out = prepare_backbone_input(t, size, preset);
        }
        return tensor_to_numpy(out);
      },
      py::arg("patches"), py::arg("size"), py::arg("preset"));
  m.def(
      "train_backbone_classifier",
      [](std::shared_ptr<MobileNetV2Impl> n, const carray<float>& inputs, const carray<int64_t>& labels,
         int64_t epochs, int64_t batch_size, double learning_rate, double weight_decay,
         const std::vector<std::string>& trainable_stages, double dropout, uint64_t seed, int n_threads,
         const py::object& progress) {
        require_ndim(inputs, 4, "inputs");
        require_ndim(labels, 1, "labels");
        auto x = tensor_view(inputs).clone(), y = tensor_view(labels).clone();
        BackboneTrainOptions o;
        o.epochs = epochs;
        o.batch_size = batch_size;
        o.learning_rate = learning_rate;
        o.weight_decay = weight_decay;
        o.trainable_stages = trainable_stages;
        o.dropout = dropout;
        o.seed = seed;
        o.n_threads = n_threads;
        auto cb = wrap_progress(progress);
        auto head = n->classifier_linear();
        py::gil_scoped_release release;
        return train_backbone_classifier(*n, head, x, y, o, cb);
      },
      py::arg("net"), py::arg("inputs"), py::arg("labels"), py::arg("epochs"), py::arg("batch_size"),
      py::arg("learning_rate"), py::arg("weight_decay"), py::arg("trainable_stages"), py::arg("dropout"),
      py::arg("seed"), py::arg("n_threads") = 0, py::arg("progress") = py::none());
  m.def(
      "backbone_classifier_logits",
      [](std::shared_ptr<MobileNetV2Impl> n, const carray<float>& inputs, int64_t batch_size, int n_threads) {
        require_ndim(inputs, 4, "inputs");
        auto x = tensor_view(inputs);
        auto head = n->classifier_linear();
        torch::Tensor out;
        {
          py::gil_scoped_release release;
          out = backbone_classifier_logits(*n, head, x, batch_size, n_threads);
        }
        return tensor_to_numpy(out);
      },
      py::arg("net"), py::arg("inputs"), py::arg("batch_size") = 64, py::arg("n_threads") = 0);
}

}  // namespace stemroi::bind
