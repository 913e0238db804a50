// Bindings of the unet area: pseudo-labels, multi-defect composition, the
// U-Net module, its training loop and tiled prediction. Arrays are checked in
// Python (stemroi.models.unet) first; here only shapes, then the GIL is released.
#include "common.hpp"
#include "stemroi/parallel.hpp"
#include "stemroi/pseudo_labels.hpp"
#include "stemroi/torch_io.hpp"
#include "stemroi/unet.hpp"

namespace stemroi::bind {

namespace {
PseudoLabelOptions pl_options(double sigma, int64_t size, double percentile, const std::string& method = "deviation") {
  PseudoLabelOptions o;
  o.method = method;
  o.sigma = sigma;
  o.size = size;
  o.percentile = percentile;
  return o;
}
}  // namespace

void bind_unet(py::module_& m) {
  m.def(
      "local_deviation",
      [](const carray<float>& images, double sigma, int64_t size, int n_threads) {
        require_ndim(images, 3, "images");
        auto s = shape_of(images);
        py::array_t<float> out(std::vector<py::ssize_t>(s.begin(), s.end()));
        const float* in = images.data();
        float* o = out.mutable_data();
        auto opts = pl_options(sigma, size, 98.0);
        {
          py::gil_scoped_release release;
          local_deviation(in, o, s[0], s[1], s[2], opts, n_threads);
        }
        return out;
      },
      py::arg("images"), py::arg("sigma"), py::arg("size"), py::arg("n_threads") = 0);
  m.def(
      "pseudo_label_masks",
      [](const carray<float>& images, const carray<uint8_t>& is_bulk, double sigma, int64_t size, double percentile,
         const std::string& method, int n_threads) {
        require_ndim(images, 3, "images");
        require_ndim(is_bulk, 1, "is_bulk");
        auto s = shape_of(images);
        if (is_bulk.shape(0) != s[0])
          throw ValueError(concat("is_bulk must have ", s[0], " entries, got ", is_bulk.shape(0)));
        py::array_t<uint8_t> out(std::vector<py::ssize_t>(s.begin(), s.end()));
        const float* in = images.data();
        const uint8_t* b = is_bulk.data();
        uint8_t* o = out.mutable_data();
        auto opts = pl_options(sigma, size, percentile, method);
        {
          py::gil_scoped_release release;
          pseudo_label_masks(in, o, s[0], s[1], s[2], b, opts, n_threads);
        }
        return out;
      },
      py::arg("images"), py::arg("is_bulk"), py::arg("sigma"), py::arg("size"), py::arg("percentile"),
      py::arg("method") = "deviation", py::arg("n_threads") = 0);
  m.def(
      "pseudo_label_scores",
      [](const carray<float>& images, double sigma, int64_t size, const std::string& method, int n_threads) {
        require_ndim(images, 3, "images");
        auto s = shape_of(images);
        py::array_t<float> out(std::vector<py::ssize_t>(s.begin(), s.end()));
        const float* in = images.data();
        float* o = out.mutable_data();
        auto opts = pl_options(sigma, size, 98.0, method);
        {
          py::gil_scoped_release release;
          pseudo_label_scores(in, o, s[0], s[1], s[2], opts, n_threads);
        }
        return out;
      },
      py::arg("images"), py::arg("sigma"), py::arg("size"), py::arg("method"), py::arg("n_threads") = 0);
  m.def(
      "estimate_lattice_vectors",
      [](const carray<float>& image) -> py::object {
        require_ndim(image, 2, "image");
        auto lv = estimate_lattice_vectors(image.data(), image.shape(0), image.shape(1));
        if (!lv.found) return py::none();
        return py::make_tuple(py::make_tuple(lv.a1y, lv.a1x), py::make_tuple(lv.a2y, lv.a2x));
      },
      py::arg("image"));
  m.def(
      "compose_multi_defect",
      [](const py::array& patches, const py::array& masks, const py::array& labels, int64_t n_classes,
         int64_t n_samples, int64_t max_parts, uint64_t seed) {
        auto p = numpy_to_tensor(patches), mk = numpy_to_tensor(masks), l = numpy_to_tensor(labels);
        MultiDefectSamples s;
        {
          py::gil_scoped_release release;
          s = compose_multi_defect(p, mk, l, n_classes, n_samples, max_parts, seed);
        }
        return py::make_tuple(tensor_to_numpy(s.images), tensor_to_numpy(s.targets));
      },
      py::arg("patches"), py::arg("masks"), py::arg("labels"), py::arg("n_classes"), py::arg("n_samples"),
      py::arg("max_parts"), py::arg("seed"));

  auto unet = py::class_<UNetImpl, std::shared_ptr<UNetImpl>>(m, "UNet")
      .def(py::init([](int64_t n_outputs, int64_t base_channels, int64_t in_channels, uint64_t seed,
                       bool standardize_input) {
             UNetConfig c;
             c.n_outputs = n_outputs;
             c.base_channels = base_channels;
             c.in_channels = in_channels;
             c.standardize_input = standardize_input;
             return make_unet(c, seed).ptr();
           }),
           py::arg("n_outputs"), py::kw_only(), py::arg("base_channels") = UNetConfig{}.base_channels,
           py::arg("in_channels") = UNetConfig{}.in_channels, py::arg("seed") = 0,
           py::arg("standardize_input") = UNetConfig{}.standardize_input)
      .def_property_readonly("n_outputs", [](const UNetImpl& n) { return n.config().n_outputs; })
      .def_property_readonly("base_channels", [](const UNetImpl& n) { return n.config().base_channels; })
      .def_property_readonly("standardize_input", [](const UNetImpl& n) { return n.config().standardize_input; })
      .def("state_dict", [](const UNetImpl& n) { return state_to_dict(module_state(n)); })
      .def(
          "load_state_dict",
          [](UNetImpl& n, const py::dict& d, const std::string& origin) {
            auto st = dict_to_state(d);
            py::gil_scoped_release release;
            load_module_state(n, st, true, origin);
          },
          py::arg("state"), py::arg("origin") = "a state dict")
      .def(
          "forward",
          [](std::shared_ptr<UNetImpl> n, const carray<float>& x, int n_threads) {
            return eval_forward(*n, x, n_threads, [&](const torch::Tensor& t) { return n->forward(t); });
          },
          py::arg("x"), py::arg("n_threads") = 0)
      .def(
          "probabilities",
          [](std::shared_ptr<UNetImpl> n, const carray<float>& x, int n_threads) {
            return eval_forward(*n, x, n_threads, [&](const torch::Tensor& t) { return n->probabilities(t); });
          },
          py::arg("x"), py::arg("n_threads") = 0,
          "sigmoid of forward(x): per-channel probabilities (n, n_outputs, H, W)")
      .def(
          "embed",
          [](std::shared_ptr<UNetImpl> n, const carray<float>& x, int n_threads) {
            return eval_forward(*n, x, n_threads, [&](const torch::Tensor& t) { return n->embed(t); });
          },
          py::arg("x"), py::arg("n_threads") = 0,
          "spatial mean then max of the bottleneck features (n, 8 * base_channels)");
  def_network_device(unet, [](UNetImpl& n) -> torch::nn::Module& { return n; });

  m.def(
      "train_unet",
      [](std::shared_ptr<UNetImpl> n, const carray<float>& patches, const carray<uint8_t>& masks,
         const carray<int64_t>& labels, int64_t epochs, int64_t batch_size, double learning_rate,
         int64_t samples_per_epoch, int64_t max_parts, uint64_t seed, int n_threads, const py::object& progress,
         double positive_weight, const AugmentOptions& augment) {
        require_ndim(patches, 3, "patches");
        auto p = tensor_view(patches).clone(), mk = tensor_view(masks).clone(), l = tensor_view(labels).clone();
        SegmenterTrainOptions o;
        o.epochs = epochs;
        o.batch_size = batch_size;
        o.learning_rate = learning_rate;
        o.samples_per_epoch = samples_per_epoch;
        o.max_parts = max_parts;
        o.positive_weight = positive_weight;
        o.augment = augment;
        o.seed = seed;
        o.n_threads = n_threads;
        auto cb = wrap_progress(progress);
        UNet net(n);
        py::gil_scoped_release release;
        return train_unet(net, p, mk, l, o, cb);
      },
      py::arg("net"), py::arg("patches"), py::arg("masks"), py::arg("labels"), py::kw_only(),
      py::arg("epochs") = SegmenterTrainOptions{}.epochs, py::arg("batch_size") = SegmenterTrainOptions{}.batch_size,
      py::arg("learning_rate") = SegmenterTrainOptions{}.learning_rate,
      py::arg("samples_per_epoch") = SegmenterTrainOptions{}.samples_per_epoch,
      py::arg("max_parts") = SegmenterTrainOptions{}.max_parts, py::arg("seed") = SegmenterTrainOptions{}.seed,
      py::arg("n_threads") = 0, py::arg("progress") = py::none(),
      py::arg("positive_weight") = SegmenterTrainOptions{}.positive_weight, py::arg("augment") = AugmentOptions{});
  m.def(
      "unet_predict_tiled",
      [](std::shared_ptr<UNetImpl> n, const carray<float>& image, int64_t tile, int64_t stride, int64_t batch_size,
         int n_threads, const py::object& progress) {
        require_ndim(image, 2, "image");
        auto img = tensor_view(image);
        auto cb = wrap_progress(progress);
        UNet net(n);
        torch::Tensor out;
        {
          py::gil_scoped_release release;
          out = predict_tiled(net, img, tile, stride, batch_size, n_threads, cb);
        }
        return tensor_to_numpy(out);
      },
      py::arg("net"), py::arg("image"), py::arg("tile"), py::arg("stride"), py::arg("batch_size") = 16,
      py::arg("n_threads") = 0, py::arg("progress") = py::none());
}

}  // namespace stemroi::bind
