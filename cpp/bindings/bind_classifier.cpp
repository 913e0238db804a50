// Bindings of the classifier area: PatchNet (backbone + softmax head), its
// staged training loop, prediction, state in/out. No algorithms here.
#include <ATen/CPUGeneratorImpl.h>

#include "common.hpp"
#include "stemroi/augment.hpp"
#include "stemroi/classifier.hpp"
#include "stemroi/small_cnn.hpp"
#include "stemroi/torch_io.hpp"

namespace stemroi::bind {

namespace {

torch::Tensor float_input(const py::array& X, const char* name) {
  auto t = numpy_to_tensor(X);
  if (t.scalar_type() != torch::kFloat32) throw TypeError(concat(name, ": expected float32, got ", c10::toString(t.scalar_type())));
  return t;
}

torch::Tensor label_input(const py::array& y, const char* name) {
  auto t = numpy_to_tensor(y);
  if (t.scalar_type() != torch::kInt64) throw TypeError(concat(name, ": expected int64 labels, got ", c10::toString(t.scalar_type())));
  return t;
}


}  // namespace

void bind_classifier(py::module_& m) {
  m.def(
      "resolve_network_device", [](const std::string& device) { return torch_device(parse_network_device(device)).str(); },
      py::arg("device"),
      "The device a network runs on for a device name: 'cpu', 'cuda:N' ('cuda' and 'auto' resolved); "
      "ValueError for a malformed name or a CUDA device this LibTorch cannot use.");
  m.def("available_backbones", &available_backbones, "Backbones PatchNet can build in this build.");
  m.def(
      "standardize_contrast",
      [](const py::array& X) {
        auto x = float_input(X, "X");
        if (x.dim() != 3)
          throw ValueError(concat("X: expected patches (n, h, w), got ", shape_str(x.sizes().vec())));
        torch::Tensor out;
        {
          py::gil_scoped_release release;
          out = standardize_contrast(x.unsqueeze(1)).squeeze(1).contiguous();
        }
        return tensor_to_numpy(out);
      },
      py::arg("X"), "Per-patch z-score (std floored at 1e-3) mapped to [0, 1] as 0.5 + 0.15 z, clamped (PatchNet's patch_contrast).");

  py::class_<AugmentOptions>(m, "AugmentOptions",
                             "Acquisition-like training augmentations (fields and ranges as in augment.hpp).")
      .def(py::init([](double gain, double offset, double gamma, double noise, double blur, double scale,
                       double rotate, double shear) {
             AugmentOptions o{gain, offset, gamma, noise, blur, scale, rotate, shear};
             check_augment_options(o);
             return o;
           }),
           py::kw_only(), py::arg("gain") = 0.0, py::arg("offset") = 0.0, py::arg("gamma") = 0.0,
           py::arg("noise") = 0.0, py::arg("blur") = 0.0, py::arg("scale") = 0.0, py::arg("rotate") = 0.0, py::arg("shear") = 0.0)
      .def_readwrite("gain", &AugmentOptions::gain)
      .def_readwrite("offset", &AugmentOptions::offset)
      .def_readwrite("gamma", &AugmentOptions::gamma)
      .def_readwrite("noise", &AugmentOptions::noise)
      .def_readwrite("blur", &AugmentOptions::blur)
      .def_readwrite("scale", &AugmentOptions::scale)
      .def_readwrite("rotate", &AugmentOptions::rotate)
      .def_readwrite("shear", &AugmentOptions::shear)
      .def("any", &AugmentOptions::any)
      .def("__repr__", [](const AugmentOptions& o) {
        return concat("AugmentOptions(gain=", o.gain, ", offset=", o.offset, ", gamma=", o.gamma, ", noise=", o.noise,
                      ", blur=", o.blur, ", scale=", o.scale, ", rotate=", o.rotate,
                      ", shear=", o.shear, ")");
      });
  m.def(
      "augment_batch",
      [](const py::array& X, const AugmentOptions& o, uint64_t seed) {
        auto x = float_input(X, "X");
        if (x.dim() != 3 && x.dim() != 4)
          throw ValueError(concat("X: expected (n, h, w) or (n, c, h, w), got ", shape_str(x.sizes().vec())));
        torch::Tensor out;
        {
          py::gil_scoped_release release;
          auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
          out = augment_batch(x.clone(), o, gen).contiguous();
        }
        return tensor_to_numpy(out);
      },
      py::arg("X"), py::arg("options"), py::arg("seed") = 0,
      "One augmented batch (the training loops' per-batch transform), drawn from a generator seeded with seed.");

  py::class_<TrainStage>(m, "TrainStage", "One stage of PatchNet training (fields as in classifier.hpp).")
      .def(py::init([](int64_t unfrozen_stages, double learning_rate, double label_smoothing, int64_t max_epochs) {
             return TrainStage{unfrozen_stages, learning_rate, label_smoothing, max_epochs};
           }),
           py::kw_only(), py::arg("unfrozen_stages") = TrainStage{}.unfrozen_stages,
           py::arg("learning_rate") = TrainStage{}.learning_rate,
           py::arg("label_smoothing") = TrainStage{}.label_smoothing, py::arg("max_epochs") = TrainStage{}.max_epochs)
      .def_readwrite("unfrozen_stages", &TrainStage::unfrozen_stages)
      .def_readwrite("learning_rate", &TrainStage::learning_rate)
      .def_readwrite("label_smoothing", &TrainStage::label_smoothing)
      .def_readwrite("max_epochs", &TrainStage::max_epochs)
      .def("__repr__", [](const TrainStage& s) {
        return concat("TrainStage(unfrozen_stages=", s.unfrozen_stages, ", learning_rate=", s.learning_rate,
                      ", label_smoothing=", s.label_smoothing, ", max_epochs=", s.max_epochs, ")");
      });

  py::class_<TrainOptions>(m, "TrainOptions", "Options of PatchNet.fit (fields as in classifier.hpp).")
      .def(py::init([](const std::vector<TrainStage>& stages, int64_t batch_size, double l2, bool class_balanced,
                       bool augment, int64_t patience, int64_t plateau_patience, double plateau_factor,
                       double min_learning_rate, uint64_t seed, int n_threads, const AugmentOptions& acquisition,
                       double contrastive_weight, double contrastive_temperature) {
             TrainOptions o;
             o.stages = stages;
             o.batch_size = batch_size;
             o.l2 = l2;
             o.class_balanced = class_balanced;
             o.augment = augment;
             o.patience = patience;
             o.plateau_patience = plateau_patience;
             o.plateau_factor = plateau_factor;
             o.min_learning_rate = min_learning_rate;
             o.seed = seed;
             o.n_threads = n_threads;
             o.acquisition = acquisition;
             o.contrastive_weight = contrastive_weight;
             o.contrastive_temperature = contrastive_temperature;
             return o;
           }),
           py::kw_only(), py::arg("stages") = TrainOptions{}.stages, py::arg("batch_size") = TrainOptions{}.batch_size,
           py::arg("l2") = TrainOptions{}.l2, py::arg("class_balanced") = TrainOptions{}.class_balanced,
           py::arg("augment") = TrainOptions{}.augment, py::arg("patience") = TrainOptions{}.patience,
           py::arg("plateau_patience") = TrainOptions{}.plateau_patience,
           py::arg("plateau_factor") = TrainOptions{}.plateau_factor,
           py::arg("min_learning_rate") = TrainOptions{}.min_learning_rate, py::arg("seed") = TrainOptions{}.seed,
           py::arg("n_threads") = TrainOptions{}.n_threads, py::arg("acquisition") = AugmentOptions{},
           py::arg("contrastive_weight") = TrainOptions{}.contrastive_weight,
           py::arg("contrastive_temperature") = TrainOptions{}.contrastive_temperature)
      .def_readwrite("stages", &TrainOptions::stages)
      .def_readwrite("batch_size", &TrainOptions::batch_size)
      .def_readwrite("l2", &TrainOptions::l2)
      .def_readwrite("class_balanced", &TrainOptions::class_balanced)
      .def_readwrite("augment", &TrainOptions::augment)
      .def_readwrite("acquisition", &TrainOptions::acquisition)
      .def_readwrite("patience", &TrainOptions::patience)
      .def_readwrite("plateau_patience", &TrainOptions::plateau_patience)
      .def_readwrite("plateau_factor", &TrainOptions::plateau_factor)
      .def_readwrite("min_learning_rate", &TrainOptions::min_learning_rate)
      .def_readwrite("seed", &TrainOptions::seed)
      .def_readwrite("n_threads", &TrainOptions::n_threads)
      .def_readwrite("contrastive_weight", &TrainOptions::contrastive_weight)
      .def_readwrite("contrastive_temperature", &TrainOptions::contrastive_temperature);

  auto patch_net = py::class_<PatchNetImpl, std::shared_ptr<PatchNetImpl>>(m, "PatchNet", "Backbone + the study's softmax head (private).")
      .def(py::init([](const std::string& backbone, int64_t n_classes, int64_t in_features, int64_t hidden,
                       double dropout, int64_t input_size, const std::string& preprocessing, uint64_t seed,
                       const std::string& pooling, const std::string& patch_contrast) {
             std::shared_ptr<Backbone> bb;
             if (backbone != "none") bb = make_backbone(backbone, seed);
             PatchNetOptions o;
             o.n_classes = n_classes;
             o.in_features = in_features;
             o.hidden = hidden;
             o.dropout = dropout;
             o.input_size = input_size;
             o.preprocessing = preprocessing;
             o.pooling = pooling;
             o.patch_contrast = patch_contrast;
             torch::manual_seed(seed);  // head initialisation
             return std::make_shared<PatchNetImpl>(bb, o);
           }),
           py::arg("backbone"), py::arg("n_classes"), py::arg("in_features") = 0, py::arg("hidden") = 256,
           py::arg("dropout") = 0.4, py::arg("input_size") = 0, py::arg("preprocessing") = "", py::arg("seed") = 0,
           py::arg("pooling") = "avg", py::arg("patch_contrast") = "none")
      .def_property_readonly("preprocessing", &PatchNetImpl::preprocessing)
      .def_property_readonly("architecture",
                             [](const PatchNetImpl& n) { return n.has_backbone() ? n.backbone()->architecture() : std::string("none"); })
      .def_property_readonly("stages",
                             [](const PatchNetImpl& n) { return n.has_backbone() ? n.backbone()->stages() : std::vector<std::string>{}; })
      .def_property_readonly("feature_dim", [](const PatchNetImpl& n) {
        return n.has_backbone() ? n.backbone()->out_channels() : n.options().in_features;
      })
      .def_property_readonly("pooling", [](const PatchNetImpl& n) { return n.options().pooling; })
      .def_property_readonly("patch_contrast", [](const PatchNetImpl& n) { return n.options().patch_contrast; })
      .def(
          "fit",
          [](PatchNetImpl& net, const py::array& X, const py::array& y, const py::object& X_val, const py::object& y_val,
             const TrainOptions& options, const py::object& progress) {
            auto Xt = float_input(X, "X");
            auto yt = label_input(y, "y");
            torch::Tensor Xv, yv;
            if (!X_val.is_none()) {
              Xv = float_input(py::cast<py::array>(X_val), "X_val");
              yv = label_input(py::cast<py::array>(y_val), "y_val");
            }
            auto prog = wrap_progress(progress);
            TrainHistory h;
            {
              py::gil_scoped_release release;
              h = train_patch_net(net, Xt, yt, Xv, yv, options, prog);
            }
            py::list epochs;
            for (const auto& e : h.epochs) {
              py::dict r;
              r["stage"] = e.stage;
              r["epoch"] = e.epoch;
              r["train_loss"] = e.train_loss;
              r["val_loss"] = e.val_loss;
              r["val_accuracy"] = e.val_accuracy;
              r["learning_rate"] = e.learning_rate;
              epochs.append(r);
            }
            py::dict out;
            out["epochs"] = epochs;
            out["best_epoch"] = h.best_epoch;
            out["best_loss"] = h.best_loss;
            return out;
          },
          py::arg("X"), py::arg("y"), py::arg("X_val") = py::none(), py::arg("y_val") = py::none(), py::kw_only(),
          py::arg("options") = TrainOptions{}, py::arg("progress") = py::none())
      .def(
          "logits",
          [](PatchNetImpl& net, const py::array& X, int64_t batch_size, int n_threads, const py::object& progress) {
            auto Xt = float_input(X, "X");
            auto prog = wrap_progress(progress);
            torch::Tensor out;
            {
              py::gil_scoped_release release;
              out = predict_logits(net, Xt, batch_size, n_threads, prog);
            }
            return tensor_to_numpy(out);
          },
          py::arg("X"), py::arg("batch_size") = 128, py::arg("n_threads") = 0, py::arg("progress") = py::none())
      .def(
          "embed",
          [](PatchNetImpl& net, const py::array& X, int64_t batch_size, int n_threads) {
            auto Xt = float_input(X, "X");
            torch::Tensor out;
            {
              py::gil_scoped_release release;
              out = embed_patches(net, Xt, batch_size, n_threads);
            }
            return tensor_to_numpy(out);
          },
          py::arg("X"), py::arg("batch_size") = 128, py::arg("n_threads") = 0)
      .def("state_dict", [](PatchNetImpl& net) { return state_to_dict(module_state(net)); })
      .def(
          "load_state_dict",
          [](PatchNetImpl& net, const py::dict& state, const std::string& origin) {
            auto s = dict_to_state(state);
            py::gil_scoped_release release;
            load_module_state(net, s, /*strict=*/true, origin);
          },
          py::arg("state"), py::arg("origin") = "state dict")
      .def(
          "load_backbone_state",
          [](PatchNetImpl& net, const py::dict& state, const std::string& origin) {
            if (!net.has_backbone()) throw ValueError("this PatchNet has no backbone (head mode)");
            auto s = dict_to_state(state);
            // Pretrained files may carry a classifier the backbone does not build: keep what it has.
            StateDict target = module_state(*net.backbone()), kept;
            for (auto& [k, v] : s)
              if (target.count(k)) kept[k] = v;
            // features() never uses an ImageNet classifier ("classifier.*", MobileNetV2): files without
            // one (the STEM-pretrained backbones) keep the model's own values there.
            for (auto& [k, v] : target)
              if (!kept.count(k) && k.rfind("classifier.", 0) == 0) kept[k] = v;
            py::gil_scoped_release release;
            load_module_state(*net.backbone(), kept, /*strict=*/false, origin);
          },
          py::arg("state"), py::arg("origin") = "pretrained weights");
  def_network_device(patch_net, [](PatchNetImpl& n) -> torch::nn::Module& { return n; });

  m.def(
      "dihedral_transform",
      [](const py::array& X, const py::array& k) {
        auto Xt = numpy_to_tensor(X);
        auto kt = numpy_to_tensor(k);
        return tensor_to_numpy(dihedral_transform(Xt, kt));
      },
      py::arg("X"), py::arg("k"));
  m.def(
      "smoothed_cross_entropy",
      [](const py::array& logits, const py::array& y, double smoothing, const py::object& class_weights) {
        torch::Tensor w;
        if (!class_weights.is_none()) w = numpy_to_tensor(py::cast<py::array>(class_weights));
        return smoothed_cross_entropy(numpy_to_tensor(logits), numpy_to_tensor(y), smoothing, w).item<double>();
      },
      py::arg("logits"), py::arg("y"), py::arg("smoothing"), py::arg("class_weights") = py::none());
  m.def(
      "nt_xent_loss",
      [](const py::array& z1, const py::array& z2, double temperature) {
        return nt_xent_loss(numpy_to_tensor(z1).to(torch::kFloat64), numpy_to_tensor(z2).to(torch::kFloat64),
                            temperature)
            .item<double>();
      },
      py::arg("z1"), py::arg("z2"), py::arg("temperature"));
}

}  // namespace stemroi::bind
