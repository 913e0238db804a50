#include "stemroi/classifier.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <limits>
#include <map>

#include "stemroi/compute_device.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/normalization.hpp"
#include "stemroi/parallel.hpp"
#include "stemroi/preprocess.hpp"
#include "stemroi/torch_io.hpp"

namespace stemroi {

namespace F = torch::nn::functional;

PatchNetImpl::PatchNetImpl(std::shared_ptr<Backbone> backbone, PatchNetOptions options)
    : backbone_(std::move(backbone)), options_(std::move(options)) {
  STEMROI_CHECK(options_.n_classes >= 2, "n_classes must be >= 2, got ", options_.n_classes);
  STEMROI_CHECK(options_.hidden >= 0, "hidden units must be >= 0 (0: a linear head), got ", options_.hidden);
  STEMROI_CHECK(options_.dropout >= 0.0 && options_.dropout < 1.0, "dropout must be in [0, 1), got ", options_.dropout);
  int64_t d = 0;
  if (backbone_) {
    register_module<Backbone>("backbone", backbone_);
    STEMROI_CHECK(options_.pooling == "avg" || options_.pooling == "avgmax",
                  "pooling must be 'avg' or 'avgmax', got '", options_.pooling, "'");
    d = backbone_->out_channels() * (options_.pooling == "avgmax" ? 2 : 1);
    if (!options_.preprocessing.empty()) normalization_preset(options_.preprocessing);  // validates the name
    STEMROI_CHECK(options_.patch_contrast == "none" || options_.patch_contrast == "standardize",
                  "patch_contrast must be 'none' or 'standardize', got '", options_.patch_contrast, "'");
  } else {
    STEMROI_CHECK(options_.in_features >= 1, "head mode needs in_features >= 1, got ", options_.in_features);
    d = options_.in_features;
  }
  feature_dim_ = d;
  drop1_ = register_module("drop1", torch::nn::Dropout(options_.dropout));
  if (options_.hidden > 0) {
    dense_ = register_module("dense", torch::nn::Linear(d, options_.hidden));
    drop2_ = register_module("drop2", torch::nn::Dropout(options_.dropout));
  }
  logits_ = register_module("logits", torch::nn::Linear(options_.hidden > 0 ? options_.hidden : d,
                                                        options_.n_classes));
}

std::string PatchNetImpl::preprocessing() const {
  if (!backbone_) return "none";
  return options_.preprocessing.empty() ? backbone_->preprocessing() : options_.preprocessing;
}

torch::Tensor PatchNetImpl::prepare(const torch::Tensor& x_in) const {
  if (!backbone_) {
    STEMROI_CHECK(x_in.dim() == 2 && x_in.size(1) == options_.in_features, "features must be (n, ",
                  options_.in_features, "), got ", shape_str(x_in.sizes().vec()));
    return x_in.to(module_device(*this), torch::kFloat32);
  }
  torch::Tensor x = x_in.to(torch::kFloat32);
  if (x.dim() == 3) x = x.unsqueeze(1);
  STEMROI_CHECK(x.dim() == 4 && (x.size(1) == 1 || x.size(1) == 3),
                "patches must be (n, h, w), (n, 1, h, w) or (n, 3, h, w), got ", shape_str(x_in.sizes().vec()));
  if (options_.patch_contrast == "standardize") x = standardize_contrast(x);
  const Normalization& norm = normalization_preset(preprocessing() == "none" ? "unit" : preprocessing());
  // the caller's TorchThreadsGuard sets LibTorch's thread count: the input uses as many
  return network_input_on(x, options_.input_size, options_.input_size, norm, ResizeMethod::Bilinear,
                          at::get_num_threads(), module_device(*this));
}

torch::Tensor standardize_contrast(const torch::Tensor& x) {
  STEMROI_CHECK(x.dim() == 4, "standardize_contrast expects (n, c, h, w), got ", shape_str(x.sizes().vec()));
  auto mean = x.mean({2, 3}, /*keepdim=*/true);
  // population std (ddof 0), as numpy's x.std()
  auto stdv = (x - mean).pow(2).mean({2, 3}, true).sqrt();
  // std floored at 1e-3 (patches are on [0, 1]): a flat patch maps to 0.5 instead
  // of blowing float32 rounding noise up into a pattern
  return ((x - mean) / stdv.clamp_min(1e-3) * 0.15 + 0.5).clamp(0.0, 1.0);
}

torch::Tensor PatchNetImpl::embed(const torch::Tensor& prepared) {
  if (!backbone_) return prepared;
  auto maps = backbone_->features(prepared);
  if (options_.pooling == "avgmax") return torch::cat({maps.mean({2, 3}), maps.amax({2, 3})}, 1);
  return maps.mean({2, 3});
}

torch::Tensor PatchNetImpl::head(const torch::Tensor& features) {
  auto h = drop1_->forward(features);
  if (!dense_) return logits_->forward(h);  // linear head: multinomial logistic regression
  h = torch::relu(dense_->forward(h));
  h = drop2_->forward(h);
  return logits_->forward(h);
}

torch::Tensor PatchNetImpl::forward(const torch::Tensor& x) { return head(embed(prepare(x))); }

torch::Tensor dihedral_transform(const torch::Tensor& x, const torch::Tensor& k_in) {
  STEMROI_CHECK(x.dim() >= 2, "dihedral_transform needs (n, ..., h, w), got ", shape_str(x.sizes().vec()));
  STEMROI_CHECK(k_in.dim() == 1 && k_in.size(0) == x.size(0), "dihedral_transform needs one k per sample, got ",
                k_in.numel(), " for ", x.size(0), " samples");
  const bool square = x.size(-1) == x.size(-2);
  auto k = k_in.to(torch::kInt64).contiguous();
  auto out = x.clone();
  const int64_t* kp = k.data_ptr<int64_t>();
  std::map<int64_t, std::vector<int64_t>> by_k;
  for (int64_t i = 0; i < k.numel(); ++i) {
    int64_t t = ((kp[i] % 8) + 8) % 8;
    if (!square && (t % 2 == 1)) t -= 1;  // only 0/180 degree rotations keep the shape
    by_k[t].push_back(i);
  }
  for (auto& [t, idx_v] : by_k) {
    if (t == 0) continue;
    auto idx = torch::tensor(idx_v, torch::kInt64).to(x.device());
    auto sub = x.index_select(0, idx);
    if (t % 4) sub = torch::rot90(sub, t % 4, {x.dim() - 2, x.dim() - 1});
    if (t >= 4) sub = sub.flip({x.dim() - 1});
    out.index_copy_(0, idx, sub);
  }
  return out;
}

torch::Tensor smoothed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& y, double smoothing,
                                     const torch::Tensor& class_weights) {
  const int64_t K = logits.size(1);
  auto logp = torch::log_softmax(logits, 1);
  auto target = F::one_hot(y, K).to(logp.dtype()) * (1.0 - smoothing) + smoothing / double(K);
  auto per_sample = -(target * logp).sum(1);
  if (!class_weights.defined()) return per_sample.mean();
  auto w = class_weights.index_select(0, y);
  return (w * per_sample).sum() / w.sum();
}

torch::Tensor nt_xent_loss(const torch::Tensor& z1, const torch::Tensor& z2, double temperature) {
  STEMROI_CHECK(z1.dim() == 2 && z1.sizes() == z2.sizes(), "nt_xent_loss needs two (n, d) views of one shape, got ",
                shape_str(z1.sizes().vec()), " and ", shape_str(z2.sizes().vec()));
  STEMROI_CHECK(z1.size(0) >= 2, "nt_xent_loss needs at least 2 pairs (the other pairs are the negatives), got ",
                z1.size(0));
  STEMROI_CHECK(temperature > 0, "contrastive temperature must be > 0, got ", temperature);
  const int64_t n = z1.size(0);
  auto z = F::normalize(torch::cat({z1, z2}, 0), F::NormalizeFuncOptions().dim(1).eps(1e-8));
  auto sim = torch::mm(z, z.t()) / temperature;
  // an anchor is never its own negative
  sim = sim.masked_fill(torch::eye(2 * n, torch::TensorOptions().dtype(torch::kBool).device(sim.device())),
                        -std::numeric_limits<float>::infinity());
  auto target = torch::cat({torch::arange(n, 2 * n), torch::arange(0, n)}).to(sim.device());
  return F::cross_entropy(sim, target);
}

namespace {

StateDict snapshot(torch::nn::Module& m) {
  StateDict s;
  for (const auto& p : m.named_parameters(true)) s[p.key()] = p.value().detach().clone();
  for (const auto& b : m.named_buffers(true)) s[b.key()] = b.value().detach().clone();
  return s;
}

void restore(torch::nn::Module& m, const StateDict& s) {
  torch::NoGradGuard no_grad;
  for (auto& p : m.named_parameters(true)) p.value().copy_(s.at(p.key()));
  for (auto& b : m.named_buffers(true)) b.value().copy_(s.at(b.key()));
}

void check_xy(const PatchNetImpl& net, const torch::Tensor& X, const torch::Tensor& y, const char* what) {
  STEMROI_CHECK(y.dim() == 1 && y.size(0) == X.size(0), what, ": labels must be (n,) with n = ", X.size(0),
                ", got ", shape_str(y.sizes().vec()));
  if (y.numel() == 0) return;
  auto lo = y.min().item<int64_t>(), hi = y.max().item<int64_t>();
  STEMROI_CHECK(lo >= 0 && hi < net.options().n_classes, what, ": labels must be in [0, ", net.options().n_classes,
                "), got range [", lo, ", ", hi, "]");
}

struct EvalResult {
  double loss;
  double accuracy;
};

EvalResult evaluate(PatchNetImpl& net, const torch::Tensor& X, const torch::Tensor& y, double smoothing,
                    int64_t batch_size) {
  torch::NoGradGuard no_grad;
  net.eval();
  double loss_sum = 0.0;
  int64_t correct = 0, n = X.size(0);
  for (int64_t s = 0; s < n; s += batch_size) {
    InterruptCallback::check();
    int64_t e = std::min(n, s + batch_size);
    auto logits = net.forward(X.slice(0, s, e));
    auto yb = y.slice(0, s, e).to(logits.device());
    loss_sum += smoothed_cross_entropy(logits, yb, smoothing).item<double>() * double(e - s);
    correct += logits.argmax(1).eq(yb).sum().item<int64_t>();
  }
  return {loss_sum / double(n), double(correct) / double(n)};
}

// "Precise BatchNorm": the running statistics of a trained backbone are
// recomputed with the final weights (cumulative average over the training
// data, train-mode forward without gradients). With few batches per epoch the
// exponential running average lags the changing weights and inference
// collapses; this makes inference statistics match the trained network.
void recompute_batchnorm_stats(PatchNetImpl& net, const torch::Tensor& X, int64_t batch_size) {
  if (!net.has_backbone()) return;
  std::vector<torch::nn::BatchNorm2dImpl*> bns;
  for (auto& m : net.backbone()->modules(false))
    if (auto* bn = m->as<torch::nn::BatchNorm2d>()) bns.push_back(bn);
  if (bns.empty()) return;
  std::vector<c10::optional<double>> momentum;
  for (auto* bn : bns) {
    momentum.push_back(bn->options.momentum());
    bn->options.momentum(c10::nullopt);  // cumulative moving average
    bn->reset_running_stats();
    bn->train();
  }
  {
    torch::NoGradGuard no_grad;
    for (int64_t s = 0; s < X.size(0); s += batch_size) {
      InterruptCallback::check();
      int64_t e = std::min(X.size(0), s + batch_size);
      if (e - s < 2 && s > 0) break;
      net.backbone()->features(net.prepare(X.slice(0, s, e)));
    }
  }
  for (size_t i = 0; i < bns.size(); ++i) bns[i]->options.momentum(momentum[i]);
}

void set_lr(torch::optim::Adam& opt, double lr) {
  for (auto& g : opt.param_groups()) static_cast<torch::optim::AdamOptions&>(g.options()).lr(lr);
}

void check_train_options(const TrainOptions& opt) {
  STEMROI_CHECK(!opt.stages.empty(), "at least one training stage is needed");
  STEMROI_CHECK(opt.batch_size >= 1, "batch_size must be >= 1, got ", opt.batch_size);
  STEMROI_CHECK(opt.patience >= 1, "patience must be >= 1, got ", opt.patience);
  STEMROI_CHECK(opt.plateau_factor > 0 && opt.plateau_factor <= 1, "plateau_factor must be in (0, 1], got ",
                opt.plateau_factor);
  STEMROI_CHECK(opt.contrastive_weight >= 0 && std::isfinite(opt.contrastive_weight),
                "contrastive_weight must be finite and >= 0, got ", opt.contrastive_weight);
  STEMROI_CHECK(opt.contrastive_temperature > 0, "contrastive_temperature must be > 0, got ",
                opt.contrastive_temperature);
  for (const auto& st : opt.stages) {
    STEMROI_CHECK(st.max_epochs >= 1, "max_epochs of a stage must be >= 1, got ", st.max_epochs);
    STEMROI_CHECK(st.learning_rate > 0, "learning_rate must be > 0, got ", st.learning_rate);
    STEMROI_CHECK(st.label_smoothing >= 0 && st.label_smoothing < 1, "label_smoothing must be in [0, 1), got ",
                  st.label_smoothing);
  }
}

// Training (and optional validation) data as float32 / int64, checked against the network.
struct TrainData {
  torch::Tensor X, y, Xv, yv;
  bool has_val = false;
};

TrainData prepare_train_data(PatchNetImpl& net, const torch::Tensor& X_in, const torch::Tensor& y_in,
                             const torch::Tensor& Xv_in, const torch::Tensor& yv_in) {
  STEMROI_CHECK(X_in.size(0) >= 2, "at least 2 training samples are needed, got ", X_in.size(0));
  TrainData data;
  data.X = X_in.to(torch::kFloat32).contiguous();
  data.y = y_in.to(torch::kInt64).contiguous();
  check_xy(net, data.X, data.y, "training data");
  net.prepare(data.X.slice(0, 0, 1));  // shape check before any work
  data.has_val = Xv_in.defined() && Xv_in.numel() > 0;
  if (data.has_val) {
    data.Xv = Xv_in.to(torch::kFloat32).contiguous();
    data.yv = yv_in.to(torch::kInt64).contiguous();
    check_xy(net, data.Xv, data.yv, "validation data");
    net.prepare(data.Xv.slice(0, 0, 1));
  }
  return data;
}

// n / (classes present * n_c) per class (0 for absent classes).
torch::Tensor balanced_class_weights(const torch::Tensor& y, int64_t n_classes) {
  const int64_t n = y.size(0);
  auto counts = torch::bincount(y, {}, n_classes).to(torch::kFloat64);
  int64_t present = (counts > 0).sum().item<int64_t>();
  return torch::where(counts > 0, double(n) / (double(present) * counts), torch::zeros_like(counts))
      .to(torch::kFloat32);
}

// Freezes the backbone except its trailing `unfrozen_stages` stages; returns
// the parameters to train (those stages and the head). all_unfrozen: every
// backbone stage trains.
std::vector<torch::Tensor> unfreeze_for_stage(PatchNetImpl& net, const TrainStage& st, bool& all_unfrozen) {
  std::vector<torch::Tensor> trainable;
  all_unfrozen = false;
  if (auto bb = net.backbone()) {
    const auto stage_names = bb->stages();
    for (auto& p : bb->parameters()) p.set_requires_grad(false);
    int64_t k = st.unfrozen_stages < 0 ? int64_t(stage_names.size())
                                       : std::min<int64_t>(st.unfrozen_stages, stage_names.size());
    all_unfrozen = k == int64_t(stage_names.size());
    for (int64_t j = int64_t(stage_names.size()) - k; j < int64_t(stage_names.size()); ++j)
      for (auto& p : bb->stage_parameters(stage_names[j])) {
        p.set_requires_grad(true);
        trainable.push_back(p);
      }
  }
  for (const auto& p : net.named_parameters(true))
    if (p.key().rfind("backbone.", 0) != 0) {
      p.value().set_requires_grad(true);
      trainable.push_back(p.value());
    }
  return trainable;
}

// One pass over the shuffled training data; returns the mean training loss.
double train_epoch(PatchNetImpl& net, torch::optim::Adam& adam, const TrainData& data, const TrainOptions& opt,
                   const TrainStage& st, const torch::Tensor& class_weights, bool augment, bool all_unfrozen,
                   at::Generator& gen, torch::nn::Sequential projection) {
  const int64_t n = data.X.size(0);
  auto bb = net.backbone();
  net.train();
  // Frozen stages keep BatchNorm in inference mode (as Keras fine-tuning does).
  if (bb && !all_unfrozen) bb->eval();
  auto perm = torch::randperm(n, gen, torch::TensorOptions().dtype(torch::kInt64));
  double loss_sum = 0.0;
  int64_t seen = 0;
  for (int64_t s = 0; s < n; s += opt.batch_size) {
    InterruptCallback::check();
    int64_t e = std::min(n, s + opt.batch_size);
    if (e - s < 2 && seen > 0) break;  // a batch of one breaks BatchNorm; it is reshuffled next epoch
    auto idx = perm.slice(0, s, e);
    auto x0 = data.X.index_select(0, idx);
    auto yb = data.y.index_select(0, idx).to(module_device(net));
    auto view = [&](const torch::Tensor& x) {
      torch::Tensor v = x;
      if (augment) v = dihedral_transform(v, torch::randint(0, 8, {e - s}, gen, torch::kInt64));
      if (net.has_backbone() && opt.acquisition.any()) v = augment_batch(v, opt.acquisition, gen);
      return v;
    };
    auto xb = view(x0);
    adam.zero_grad();
    torch::Tensor loss, total;
    if (projection) {
      // both views in one batch (BatchNorm statistics over 2n), both train the head
      auto feats = net.embed(net.prepare(torch::cat({xb, view(x0)}, 0)));
      auto logits = net.head(feats);
      auto z = projection->forward(feats);
      loss = total = smoothed_cross_entropy(logits, torch::cat({yb, yb}, 0), st.label_smoothing, class_weights) +
                     opt.contrastive_weight *
                         nt_xent_loss(z.slice(0, 0, e - s), z.slice(0, e - s), opt.contrastive_temperature);
    } else {
      auto logits = net.forward(xb);
      loss = total = smoothed_cross_entropy(logits, yb, st.label_smoothing, class_weights);
    }
    if (opt.l2 > 0) total = total + opt.l2 * net.head_kernel().pow(2).sum();
    total.backward();
    adam.step();
    loss_sum += loss.item<double>() * double(e - s);
    seen += e - s;
  }
  // Backbone trained in train mode: make its BatchNorm statistics match the new weights.
  if (bb && all_unfrozen) recompute_batchnorm_stats(net, data.X, std::max<int64_t>(opt.batch_size, 64));
  return loss_sum / double(std::max<int64_t>(seen, 1));
}

// Early stopping and learning-rate plateau of one stage, on the monitored loss.
struct StageMonitor {
  double best = std::numeric_limits<double>::infinity();
  int64_t best_epoch = -1, wait = 0, plateau_wait = 0;

  // Returns true when the monitored loss improved (the caller keeps a snapshot).
  bool update(double monitored, int64_t epoch, const TrainOptions& opt, double& lr, torch::optim::Adam& adam) {
    if (monitored < best) {
      best = monitored;
      best_epoch = epoch;
      wait = plateau_wait = 0;
      return true;
    }
    ++wait;
    ++plateau_wait;
    if (plateau_wait >= opt.plateau_patience) {
      lr = std::max(opt.min_learning_rate, lr * opt.plateau_factor);
      set_lr(adam, lr);
      plateau_wait = 0;
    }
    return false;
  }
  bool should_stop(const TrainOptions& opt) const { return wait >= opt.patience; }
};

// Trains one stage until early stopping or max_epochs and restores its best
// weights; appends its epochs to hist. done_epochs counts epochs for progress.
void train_stage(PatchNetImpl& net, const TrainData& data, const TrainOptions& opt, size_t si,
                 const torch::Tensor& class_weights, bool augment, at::Generator& gen, TrainHistory& hist,
                 int64_t& done_epochs, int64_t total_epochs, const ProgressFn& progress,
                 torch::nn::Sequential projection) {
  const TrainStage& st = opt.stages[si];
  bool all_unfrozen = false;
  std::vector<torch::Tensor> trainable = unfreeze_for_stage(net, st, all_unfrozen);
  if (projection)
    for (auto& p : projection->parameters()) trainable.push_back(p);
  torch::optim::Adam adam(trainable, torch::optim::AdamOptions(st.learning_rate));
  double lr = st.learning_rate;
  StageMonitor monitor;
  StateDict best_state = snapshot(net);

  for (int64_t epoch = 0; epoch < st.max_epochs; ++epoch) {
    EpochRecord rec;
    rec.stage = int64_t(si);
    rec.epoch = epoch;
    rec.train_loss = train_epoch(net, adam, data, opt, st, class_weights, augment, all_unfrozen, gen, projection);
    rec.learning_rate = lr;
    double monitored = rec.train_loss;
    if (data.has_val) {
      auto ev = evaluate(net, data.Xv, data.yv, st.label_smoothing, std::max<int64_t>(opt.batch_size, 64));
      rec.val_loss = ev.loss;
      rec.val_accuracy = ev.accuracy;
      monitored = ev.loss;
    } else {
      rec.val_loss = rec.val_accuracy = std::numeric_limits<double>::quiet_NaN();
    }
    STEMROI_CHECK(std::isfinite(monitored), "training diverged (loss ", monitored, " at stage ", si, " epoch ",
                  epoch, "); lower the learning rate");
    hist.epochs.push_back(rec);
    ++done_epochs;
    if (monitor.update(monitored, epoch, opt, lr, adam)) best_state = snapshot(net);
    if (progress) progress(done_epochs, total_epochs);
    if (monitor.should_stop(opt)) break;
  }
  restore(net, best_state);
  hist.best_epoch.push_back(monitor.best_epoch);
  hist.best_loss.push_back(monitor.best);
}

}  // namespace

TrainHistory train_patch_net(PatchNetImpl& net, const torch::Tensor& X_in, const torch::Tensor& y_in,
                             const torch::Tensor& Xv_in, const torch::Tensor& yv_in, const TrainOptions& opt,
                             const ProgressFn& progress) {
  check_train_options(opt);
  check_augment_options(opt.acquisition);
  TorchThreadsGuard threads(opt.n_threads);
  const TrainData data = prepare_train_data(net, X_in, y_in, Xv_in, yv_in);
  const torch::Tensor class_weights = opt.class_balanced
                                         ? balanced_class_weights(data.y, net.options().n_classes).to(module_device(net))
                                         : torch::Tensor();
  const DeterministicCudnnGuard deterministic(module_device(net));

  torch::manual_seed(opt.seed);  // dropout draws from the default generator
  auto gen = at::make_generator<at::CPUGeneratorImpl>(opt.seed ^ 0x9E3779B97F4A7C15ULL);
  const bool augment = opt.augment && net.has_backbone();
  torch::nn::Sequential projection{nullptr};
  if (opt.contrastive_weight > 0) {
    STEMROI_CHECK(net.has_backbone(), "the contrastive term needs a backbone (head mode trains on fixed features)");
    STEMROI_CHECK(augment || opt.acquisition.any(),
                  "the contrastive term needs augmentation (dihedral or acquisition): without it both views are "
                  "the same patch");
    const int64_t d = net.feature_dim();
    projection = torch::nn::Sequential(torch::nn::Linear(d, 256), torch::nn::ReLU(), torch::nn::Linear(256, 64));
    projection->to(module_device(net));
  }

  int64_t total_epochs = 0;
  for (const auto& st : opt.stages) total_epochs += st.max_epochs;

  TrainHistory hist;
  for (size_t si = 0; si < opt.stages.size(); ++si) {
    int64_t done_epochs = 0;
    for (size_t j = 0; j < si; ++j) done_epochs += opt.stages[j].max_epochs;
    train_stage(net, data, opt, si, class_weights, augment, gen, hist, done_epochs, total_epochs, progress,
                projection);
    // a stage stopped early still counts all its epochs
    done_epochs = 0;
    for (size_t j = 0; j <= si; ++j) done_epochs += opt.stages[j].max_epochs;
    if (progress) progress(done_epochs, total_epochs);
  }
  if (auto bb = net.backbone())
    for (auto& p : bb->parameters()) p.set_requires_grad(true);
  net.eval();
  return hist;
}

torch::Tensor predict_logits(PatchNetImpl& net, const torch::Tensor& X_in, int64_t batch_size, int n_threads,
                             const ProgressFn& progress) {
  STEMROI_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size);
  TorchThreadsGuard threads(n_threads);
  torch::NoGradGuard no_grad;
  net.eval();
  const int64_t n = X_in.size(0);
  if (n == 0) return torch::empty({0, net.options().n_classes}, torch::kFloat32);
  net.prepare(X_in.slice(0, 0, 1));
  std::vector<torch::Tensor> parts;
  for (int64_t s = 0; s < n; s += batch_size) {
    InterruptCallback::check();
    int64_t e = std::min(n, s + batch_size);
    parts.push_back(net.forward(X_in.slice(0, s, e)).to(torch::kCPU));
    if (progress) progress(e, n);
  }
  return torch::cat(parts, 0).contiguous();
}

torch::Tensor embed_patches(PatchNetImpl& net, const torch::Tensor& X_in, int64_t batch_size, int n_threads) {
  STEMROI_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size);
  TorchThreadsGuard threads(n_threads);
  torch::NoGradGuard no_grad;
  net.eval();
  std::vector<torch::Tensor> parts;
  for (int64_t s = 0; s < X_in.size(0); s += batch_size) {
    InterruptCallback::check();
    int64_t e = std::min(X_in.size(0), s + batch_size);
    parts.push_back(net.embed(net.prepare(X_in.slice(0, s, e))).to(torch::kCPU));
  }
  if (parts.empty()) return torch::empty({0, 0});
  return torch::cat(parts, 0).contiguous();
}

}  // namespace stemroi
