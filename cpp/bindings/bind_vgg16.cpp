// Bindings of the vgg16 area: the VGG16 module (state in/out, feature
// extraction with its network input, dense mode) and layer lookup. Arrays are
// checked with the GIL held; the network runs with it released.
#include "common.hpp"
#include "stemroi/normalization.hpp"
#include "stemroi/parallel.hpp"
#include "stemroi/torch_io.hpp"
#include "stemroi/vgg16.hpp"

namespace stemroi::bind {

namespace {

VGG16FeatureOptions feature_options(const std::vector<std::string>& layers, const std::string& pooling,
                                    int64_t input_size, const std::string& preprocessing, int64_t batch_size,
                                    int n_threads, const std::string& dtype, const std::string& backend,
                                    const std::string& device) {
  VGG16FeatureOptions o;
  o.layers = layers;
  o.pooling = pooling;
  o.input_size = input_size;
  o.preprocessing = preprocessing;
  o.batch_size = batch_size;
  o.n_threads = n_threads;
  o.dtype = dtype;
  o.backend = backend;
  o.device = device;
  return o;
}

}  // namespace

void bind_vgg16(py::module_& m) {
  auto vgg16 = py::class_<VGG16Impl, std::shared_ptr<VGG16Impl>>(m, "VGG16",
                                                    "VGG16 (torchvision parameter names) with the patch-embedding "
                                                    "inference path; weights start seeded-random (untrained).")
      .def(py::init([](bool include_top, int64_t num_classes, const std::string& preprocessing, uint64_t seed) {
             VGG16Options o;
             o.include_top = include_top;
             o.num_classes = num_classes;
             o.preprocessing = preprocessing;
             auto model = std::make_shared<VGG16Impl>(o);  // initialised with seed 0
             if (seed != 0) model->reset_parameters(seed);
             return model;
           }),
           py::arg("include_top") = false, py::arg("num_classes") = 1000, py::arg("preprocessing") = "torchvision",
           py::arg("seed") = 0)
      .def("reset_parameters", &VGG16Impl::reset_parameters, py::arg("seed"),
           "Seeded torchvision initialisation (untrained weights).")
      .def_property("preprocessing", &VGG16Impl::preprocessing, &VGG16Impl::set_preprocessing)
      .def_property_readonly("architecture", &VGG16Impl::architecture)
      .def_property_readonly("include_top", [](const VGG16Impl& v) { return v.options().include_top; })
      .def_property_readonly("stages", &VGG16Impl::stages)
      .def(
          "state_dict",
          [](const VGG16Impl& v) { return state_to_dict(module_state(v)); },
          "Parameters as {torchvision name: float32 array}.")
      .def(
          "load_state_dict",
          [](VGG16Impl& v, const py::dict& state, bool strict, const std::string& origin) {
            StateDict s = dict_to_state(state);
            py::gil_scoped_release release;
            load_module_state(v, s, strict, origin);
          },
          py::arg("state"), py::arg("strict") = true, py::arg("origin") = "state dict",
          "Copy {name: array} into the parameters; names and shapes are checked (ValueError lists the problems).")
      .def(
          "feature_dim",
          [](const VGG16Impl& v, const std::vector<std::string>& layers, const std::string& pooling,
             int64_t input_size, int64_t h, int64_t w) {
            VGG16FeatureOptions o;
            o.layers = layers;
            o.pooling = pooling;
            o.input_size = input_size;
            return v.feature_dim(o, h, w);
          },
          py::arg("layers"), py::arg("pooling"), py::arg("input_size"), py::arg("h"), py::arg("w"))
      .def(
          "extract",
          [](VGG16Impl& v, const carray<float>& patches, const std::vector<std::string>& layers,
             const std::string& pooling, int64_t input_size, const std::string& preprocessing, int64_t batch_size,
             int n_threads, const std::string& dtype, const std::string& backend, const std::string& device,
             const py::object& progress) {
            if (patches.ndim() != 3 && patches.ndim() != 4)
              throw ValueError(concat("patches: expected a 3-D (n, h, w) or 4-D (n, c, h, w) array, got shape ",
                                      shape_str(shape_of(patches))));
            auto opts = feature_options(layers, pooling, input_size, preprocessing, batch_size, n_threads, dtype,
                                        backend, device);
            auto cb = wrap_progress(progress);
            auto x = tensor_view(patches);
            torch::Tensor out;
            {
              py::gil_scoped_release release;
              out = v.extract(x, opts, cb);
            }
            return tensor_to_numpy(out);
          },
          py::arg("patches").noconvert(), py::arg("layers"), py::arg("pooling") = "avg",
          py::arg("input_size") = 224, py::arg("preprocessing") = "", py::arg("batch_size") = 16,
          py::arg("n_threads") = 0, py::arg("dtype") = "float32", py::arg("backend") = "auto",
          py::arg("device") = "cpu", py::arg("progress") = py::none(),
          "Patches (n, h, w) float32 on [0, 1] -> (n, d) float32 features.")
      .def(
          "dense",
          [](VGG16Impl& v, const carray<float>& image, int64_t patch, int64_t stride,
             const std::vector<std::string>& layers, int64_t input_size, const std::string& preprocessing,
             int n_threads, const std::string& dtype, const std::string& backend, const std::string& device,
             int64_t strip_bytes, const py::object& progress) {
            require_ndim(image, 2, "image");
            auto opts =
                feature_options(layers, "avg", input_size, preprocessing, 1, n_threads, dtype, backend, device);
            opts.dense_strip_bytes = strip_bytes;
            auto cb = wrap_progress(progress);
            auto x = tensor_view(image);
            DenseFeatures out;
            {
              py::gil_scoped_release release;
              out = v.dense(x, patch, stride, opts, cb);
            }
            return py::make_tuple(tensor_to_numpy(out.features), tensor_to_numpy(out.origins));
          },
          py::arg("image").noconvert(), py::arg("patch"), py::arg("stride"), py::arg("layers"),
          py::arg("input_size") = 224, py::arg("preprocessing") = "", py::arg("n_threads") = 0,
          py::arg("dtype") = "float32", py::arg("backend") = "auto", py::arg("device") = "cpu",
          py::arg("strip_bytes") = int64_t(1) << 30, py::arg("progress") = py::none(),
          "Dense mode: (features (n, d), origins (n, 2)) of all windows from one pass over the image.");
  def_network_device(vgg16, [](VGG16Impl& v) -> torch::nn::Module& { return v; });

  m.def(
      "vgg16_conv_layers",
      []() { return vgg16_conv_layers(); },
      "[(torchvision features index, Keras layer name)] of the 13 convolutions.");
  m.def(
      "vgg16_tap",
      [](const std::string& layer) {
        auto t = vgg16_tap(layer);
        return py::make_tuple(t.name, t.index, t.channels, t.stride);
      },
      py::arg("layer"), "(canonical name, features index, channels, stride) of a layer name.");
}

}  // namespace stemroi::bind
