#include "stemroi/vgg16.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <regex>

#include "stemroi/compute_device.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"
#include "stemroi/patches.hpp"

namespace stemroi {

namespace {

// torchvision cfg "D": channels per conv, 0 = 2x2 max pool.
constexpr int64_t kCfg[] = {64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0};
constexpr int kConvsPerBlock[] = {2, 2, 3, 3, 3};

std::string vec_str(const std::vector<std::string>& v) {
  std::string s = "[";
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", '" : "'") + v[i] + "'";
  return s + "]";
}

c10::ScalarType parse_dtype(const std::string& d) {
  if (d == "float32" || d == "float") return torch::kFloat32;
  if (d == "bfloat16" || d == "bf16") return torch::kBFloat16;
  throw ValueError(concat("dtype must be 'float32' or 'bfloat16', got '", d, "'"));
}

std::string resolve_backend(const std::string& backend, const torch::Device& dev) {
  if (backend == "auto") return dev.is_cpu() ? "mkldnn" : "channels_last";
  if (backend == "mkldnn") {
    STEMROI_CHECK(dev.is_cpu(), "backend 'mkldnn' runs on the CPU only, got device '", dev.str(), "'");
    STEMROI_CHECK(torch::globalContext().userEnabledMkldnn() && at::hasMKLDNN(),
                  "backend 'mkldnn' requested but this LibTorch was built without (or disabled) oneDNN");
    return backend;
  }
  if (backend == "eager" || backend == "channels_last") return backend;
  throw ValueError(concat("backend must be 'auto', 'mkldnn', 'channels_last' or 'eager', got '", backend, "'"));
}

std::vector<VGG16Tap> parse_taps(const std::vector<std::string>& layers) {
  STEMROI_CHECK(!layers.empty(), "layers must name at least one layer (e.g. ['block5_pool'])");
  std::vector<VGG16Tap> taps;
  for (const auto& l : layers) taps.push_back(vgg16_tap(l));
  return taps;
}

int64_t pooled_dim(const VGG16Tap& t, const std::string& pooling, int64_t h, int64_t w) {
  if (pooling == "avg" || pooling == "max") return t.channels;
  if (pooling == "flatten") {
    // Each 2x2 pool before the tap floors the size; log2(stride) pools.
    for (int64_t f = t.stride; f > 1; f /= 2) h /= 2, w /= 2;
    return t.channels * h * w;
  }
  throw ValueError(concat("pooling must be 'avg', 'max' or 'flatten', got '", pooling, "'"));
}

torch::Tensor pool_map(const torch::Tensor& m, const std::string& pooling) {
  auto f = m.to(torch::kFloat32);
  if (pooling == "avg") return f.mean({2, 3});
  if (pooling == "max") return f.amax({2, 3});
  return f.contiguous().flatten(1);  // torch order (C, H, W)
}

// Weights (n_windows, n_cells): the fraction of window k's span [a_k, a_k + len)
// (in map cells) that falls on cell j, normalised over the cells that exist.
torch::Tensor window_weights(const std::vector<double>& starts, double len, int64_t n_cells) {
  auto w = torch::zeros({static_cast<int64_t>(starts.size()), n_cells}, torch::kFloat64);
  auto acc = w.accessor<double, 2>();
  for (size_t k = 0; k < starts.size(); ++k) {
    double a = starts[k], b = a + len, total = 0.0;
    int64_t j0 = std::max<int64_t>(0, static_cast<int64_t>(std::floor(a)));
    int64_t j1 = std::min<int64_t>(n_cells, static_cast<int64_t>(std::ceil(b)));
    for (int64_t j = j0; j < j1; ++j) {
      double o = std::min(b, double(j + 1)) - std::max(a, double(j));
      if (o > 0) acc[k][j] = o, total += o;
    }
    STEMROI_CHECK(total > 0, "window ", k, " covers no cell of the feature map (", n_cells, " cells)");
    for (int64_t j = j0; j < j1; ++j) acc[k][j] /= total;
  }
  return w.to(torch::kFloat32);
}

}  // namespace

const std::vector<std::pair<int64_t, std::string>>& vgg16_conv_layers() {
  static const std::vector<std::pair<int64_t, std::string>> layers = [] {
    std::vector<std::pair<int64_t, std::string>> out;
    int64_t idx = 0;
    for (int b = 0; b < 5; ++b) {
      for (int i = 0; i < kConvsPerBlock[b]; ++i) {
        out.emplace_back(idx, concat("block", b + 1, "_conv", i + 1));
        idx += 2;  // conv, relu
      }
      idx += 1;  // pool
    }
    return out;
  }();
  return layers;
}

VGG16Tap vgg16_tap(const std::string& layer) {
  static const std::regex re("^block([1-5])(?:_(pool|conv([1-3])))?$");
  std::smatch m;
  if (std::regex_match(layer, m, re)) {
    int b = std::stoi(m[1].str());
    const int64_t channels[] = {64, 128, 256, 512, 512};
    int64_t first = 0;  // index of the block's first conv in features
    for (int k = 0; k < b - 1; ++k) first += 2 * kConvsPerBlock[k] + 1;
    int64_t block_stride = int64_t(1) << (b - 1);
    if (!m[2].matched || m[2].str() == "pool")
      return {concat("block", b, "_pool"), first + 2 * kConvsPerBlock[b - 1], channels[b - 1], 2 * block_stride};
    int i = std::stoi(m[3].str());
    if (i <= kConvsPerBlock[b - 1])
      return {concat("block", b, "_conv", i), first + 2 * (i - 1) + 1, channels[b - 1], block_stride};
  }
  throw ValueError(concat("unknown VGG16 layer '", layer,
                          "' (expected 'block{b}_pool' or 'block{b}', b = 1..5, or 'block{b}_conv{i}', "
                          "i = 1..2 for blocks 1-2 and 1..3 for blocks 3-5)"));
}

VGG16Impl::VGG16Impl(VGG16Options options) : options_(std::move(options)) {
  normalization_preset(options_.preprocessing);  // validates the name
  STEMROI_CHECK(options_.num_classes >= 1, "num_classes must be >= 1, got ", options_.num_classes);
  features_ = torch::nn::Sequential();
  int64_t in = 3;
  for (int64_t c : kCfg) {
    if (c == 0) {
      features_->push_back(torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
    } else {
      conv_index_.push_back(static_cast<int64_t>(features_->size()));
      torch::nn::Conv2d conv(torch::nn::Conv2dOptions(in, c, 3).padding(1));
      convs_.push_back(conv);
      features_->push_back(conv);
      features_->push_back(torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)));
      in = c;
    }
  }
  register_module("features", features_);
  if (options_.include_top) {
    classifier_ = torch::nn::Sequential(
        torch::nn::Linear(512 * 7 * 7, 4096), torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)),
        torch::nn::Dropout(0.5), torch::nn::Linear(4096, 4096),
        torch::nn::ReLU(torch::nn::ReLUOptions().inplace(true)), torch::nn::Dropout(0.5),
        torch::nn::Linear(4096, options_.num_classes));
    register_module("classifier", classifier_);
  }
  reset_parameters(0);
}

void VGG16Impl::reset_parameters(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& conv : convs_) {
    auto& w = conv->weight;
    double fan_out = static_cast<double>(w.size(0) * w.size(2) * w.size(3));
    auto v = torch::empty(w.sizes(), torch::kFloat32).normal_(0.0, std::sqrt(2.0 / fan_out), gen);
    w.copy_(v);
    conv->bias.zero_();
  }
  if (classifier_) {
    for (auto& m : classifier_->modules(/*include_self=*/false)) {
      if (auto* lin = m->as<torch::nn::Linear>()) {
        lin->weight.copy_(torch::empty(lin->weight.sizes(), torch::kFloat32).normal_(0.0, 0.01, gen));
        lin->bias.zero_();
      }
    }
  }
}

void VGG16Impl::set_preprocessing(const std::string& preset) {
  options_.preprocessing = normalization_preset(preset).name;
}

std::vector<std::string> VGG16Impl::stages() const {
  std::vector<std::string> s{"block1", "block2", "block3", "block4", "block5"};
  if (classifier_) s.push_back("classifier");
  return s;
}

std::vector<torch::Tensor> VGG16Impl::stage_parameters(const std::string& stage) {
  if (stage == "classifier") {
    STEMROI_CHECK(static_cast<bool>(classifier_), "stage 'classifier' exists only with include_top=true");
    return classifier_->parameters();
  }
  const auto all = stages();
  int b = -1;
  for (int k = 0; k < 5; ++k)
    if (stage == all[k]) b = k;
  STEMROI_CHECK(b >= 0, "unknown VGG16 stage '", stage, "' (expected one of ", vec_str(all), ")");
  int first = 0;
  for (int k = 0; k < b; ++k) first += kConvsPerBlock[k];
  std::vector<torch::Tensor> out;
  for (int i = first; i < first + kConvsPerBlock[b]; ++i) {
    out.push_back(convs_[i]->weight);
    out.push_back(convs_[i]->bias);
  }
  return out;
}

torch::Tensor VGG16Impl::features(const torch::Tensor& x) {
  STEMROI_CHECK(x.dim() == 4 && x.size(1) == 3, "VGG16 expects a normalised batch (n, 3, H, W), got shape ",
                shape_str(x.sizes().vec()));
  return features_->forward(x);
}

torch::Tensor VGG16Impl::forward(const torch::Tensor& x) {
  STEMROI_CHECK(static_cast<bool>(classifier_), "forward() needs the classifier head (include_top=true)");
  auto y = torch::adaptive_avg_pool2d(features(x), {7, 7}).flatten(1);
  return classifier_->forward(y);
}

std::vector<torch::Tensor> VGG16Impl::feature_maps(const torch::Tensor& x, const std::vector<VGG16Tap>& taps) {
  STEMROI_CHECK(x.dim() == 4 && x.size(1) == 3, "VGG16 expects a normalised batch (n, 3, H, W), got shape ",
                shape_str(x.sizes().vec()));
  int64_t last = 0;
  for (const auto& t : taps) last = std::max(last, t.index);
  std::vector<torch::Tensor> out(taps.size());
  auto y = x;
  int64_t i = 0;
  for (auto& m : *features_) {
    if (i > last) break;
    y = m.forward(y);
    for (size_t k = 0; k < taps.size(); ++k)
      if (taps[k].index == i) out[k] = y.clone();  // later in-place ReLUs must not change it
    ++i;
  }
  return out;
}

std::vector<std::pair<const void*, uint32_t>> VGG16Impl::weight_signature() const {
  std::vector<std::pair<const void*, uint32_t>> s;
  for (const auto& c : convs_) {
    s.emplace_back(c->weight.data_ptr(), static_cast<uint32_t>(c->weight._version()));
    s.emplace_back(c->bias.data_ptr(), static_cast<uint32_t>(c->bias._version()));
  }
  return s;
}

namespace {
// oneDNN has bf16 convolutions only on CPUs with AVX512 BW/VL/DQ: say so,
// instead of passing on LibTorch's message about a weight reorder or oneDNN's
// "could not create a primitive descriptor iterator" (the latter also when
// DNNL_MAX_CPU_ISA caps oneDNN below what the CPU has).
std::runtime_error no_bf16_convolutions(const std::string& said) {
  return std::runtime_error(concat(
      "dtype='bfloat16' needs oneDNN's bf16 convolutions, which this CPU lacks (they need AVX512 BW, VL and "
      "DQ); use dtype='float32', which is also the faster one on such CPUs. The library said: ",
      said));
}
}  // namespace

std::shared_ptr<const VGG16Impl::Packed> VGG16Impl::packed(c10::ScalarType dtype) {
  // Reordering costs ~60 MB of copies: done once per dtype and redone only
  // when the weights changed (load, optimiser step: version counters move).
  std::lock_guard<std::mutex> lock(packed_mutex_);
  auto sig = weight_signature();
  for (const auto& p : packed_)
    if (p->dtype == dtype && p->signature == sig) return p;
  packed_.erase(std::remove_if(packed_.begin(), packed_.end(),
                               [&](const std::shared_ptr<const Packed>& p) { return p->dtype == dtype; }),
                packed_.end());
  auto p = std::make_shared<Packed>();
  p->dtype = dtype;
  p->signature = sig;
  c10::InferenceMode guard;
  for (auto& c : convs_) {
    auto w = c->weight.detach().to(torch::kCPU, torch::kFloat32).contiguous();
    try {
      p->weight.push_back(at::mkldnn_reorder_conv2d_weight(w.to_mkldnn(dtype), {1, 1}, {1, 1}, {1, 1}, 1));
    } catch (const std::exception& e) {  // a c10::Error, or oneDNN's own dnnl::error
      if (dtype != torch::kBFloat16) throw;
      const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
      throw no_bf16_convolutions(c10_error ? c10_error->what_without_backtrace() : e.what());
    }
    // oneDNN adds a float32 bias also for bf16 convolutions (as torch.utils.mkldnn does).
    p->bias.push_back(c->bias.detach().to(torch::kCPU, torch::kFloat32).contiguous().to_mkldnn());
  }
  packed_.push_back(p);
  return p;
}

std::vector<torch::Tensor> VGG16Impl::run_taps(const torch::Tensor& x_in, const std::vector<VGG16Tap>& taps,
                                               const std::string& backend, c10::ScalarType dtype) {
  int64_t last = 0;
  for (const auto& t : taps) last = std::max(last, t.index);
  std::vector<torch::Tensor> out(taps.size());
  auto grab = [&](int64_t i, const torch::Tensor& y) {
    for (size_t k = 0; k < taps.size(); ++k)
      if (taps[k].index == i) out[k] = backend == "mkldnn" ? y.to_dense(torch::kFloat32) : y.to(torch::kFloat32, false, true);
  };
  torch::Tensor y;
  std::shared_ptr<const Packed> pk;
  if (backend == "mkldnn") {
    pk = packed(dtype);
    y = x_in.to_mkldnn(dtype);
  } else {
    y = x_in.to(dtype);
    if (backend == "channels_last") y = y.contiguous(torch::MemoryFormat::ChannelsLast);
  }
  size_t conv = 0;
  for (int64_t i = 0; i <= last; ++i) {
    if (conv < conv_index_.size() && conv_index_[conv] == i) {
      if (pk) {
        y = at::mkldnn_convolution(y, pk->weight[conv], pk->bias[conv], {1, 1}, {1, 1}, {1, 1}, 1);
      } else {
        auto w = convs_[conv]->weight.detach().to(y.device(), dtype);
        auto b = convs_[conv]->bias.detach().to(y.device(), dtype);
        if (backend == "channels_last") w = w.contiguous(torch::MemoryFormat::ChannelsLast);
        y = torch::conv2d(y, w, b, 1, 1);
      }
      grab(i, y);
      ++conv;
      ++i;  // the ReLU, in place
      y.relu_();
      grab(i, y);
    } else {  // 2x2 max pool
      y = torch::max_pool2d(y, {2, 2}, {2, 2});
      grab(i, y);
    }
  }
  return out;
}

int64_t VGG16Impl::feature_dim(const VGG16FeatureOptions& opt, int64_t h, int64_t w) const {
  auto taps = parse_taps(opt.layers);
  if (opt.input_size > 0) h = w = opt.input_size;
  int64_t d = 0;
  for (const auto& t : taps) d += pooled_dim(t, opt.pooling, h, w);
  return d;
}

torch::Tensor VGG16Impl::extract(const torch::Tensor& patches, const VGG16FeatureOptions& opt,
                                 const ProgressFn& progress) {
  auto taps = parse_taps(opt.layers);
  const auto& norm = normalization_preset(opt.preprocessing.empty() ? options_.preprocessing : opt.preprocessing);
  STEMROI_CHECK(opt.batch_size >= 1, "batch_size must be >= 1, got ", opt.batch_size);
  STEMROI_CHECK(opt.input_size <= 0 || opt.input_size >= 32, "input_size must be >= 32 (five 2x2 pools), got ",
                opt.input_size);
  const auto dtype = parse_dtype(opt.dtype);
  const auto device = torch_device(parse_network_device(opt.device));
  const auto backend = resolve_backend(opt.backend, device);
  STEMROI_CHECK(patches.dim() == 3 || patches.dim() == 4,
                "patches: expected (n, h, w) or (n, c, h, w), got shape ", shape_str(patches.sizes().vec()));
  const int64_t n = patches.size(0);
  STEMROI_CHECK(n > 0, "patches: empty array of shape ", shape_str(patches.sizes().vec()));
  const int64_t h = patches.size(-2), w = patches.size(-1);
  const int64_t s_h = opt.input_size > 0 ? opt.input_size : h, s_w = opt.input_size > 0 ? opt.input_size : w;
  STEMROI_CHECK(s_h >= 32 && s_w >= 32, "patches of ", h, "x", w,
                " are too small for VGG16 without resizing (>= 32x32 needed); set input_size");
  for (const auto& t : taps)
    pooled_dim(t, opt.pooling, s_h, s_w);  // validates pooling
  const int64_t d = feature_dim(opt, s_h, s_w);
  // oneDNN on the CPU is fastest when one pass's first-block activation stays
  // about cache-sized: each batch runs through the network in sub-batches of
  // at most kSubBatchBytes of it (2 Zen 5 cores, 224 input: 1 patch per pass
  // FP32 and 2 BF16 are 16 % / 24 % faster than 16; at 64 input the sub-batch
  // is the batch). Sub-batches depend only on batch_size, input size and dtype:
  // the same call gives the same bits.
  constexpr int64_t kSubBatchBytes = int64_t(16) << 20;
  const int64_t first_block_bytes = 64 * s_h * s_w * (dtype == torch::kBFloat16 ? 2 : 4);
  const int64_t sub = backend == "mkldnn"
                          ? std::max<int64_t>(1, std::min<int64_t>(opt.batch_size, kSubBatchBytes / first_block_bytes))
                          : opt.batch_size;
  TorchThreadsGuard threads(opt.n_threads);
  c10::InferenceMode guard;
  auto out = torch::empty({n, d}, torch::kFloat32);
  {
    for (int64_t start = 0; start < n; start += opt.batch_size) {
      InterruptCallback::check();
      int64_t stop = std::min(n, start + opt.batch_size);
      auto x = network_input_on(patches.slice(0, start, stop), opt.input_size, opt.input_size, norm,
                                ResizeMethod::Bilinear, opt.n_threads, device);
      for (int64_t s0 = 0; s0 < stop - start; s0 += sub) {
        const int64_t s1 = std::min(stop - start, s0 + sub);
        auto maps = run_taps(x.slice(0, s0, s1), taps, backend, dtype);
        std::vector<torch::Tensor> parts;
        for (auto& m : maps) parts.push_back(pool_map(m, opt.pooling));
        out.slice(0, start + s0, start + s1).copy_(torch::cat(parts, 1).to(torch::kCPU));
      }
      if (progress) progress(stop, n);
    }
  }
  return out;
}

DenseFeatures VGG16Impl::dense(const torch::Tensor& image, int64_t patch, int64_t stride,
                               const VGG16FeatureOptions& opt, const ProgressFn& progress) {
  auto taps = parse_taps(opt.layers);
  const auto& norm = normalization_preset(opt.preprocessing.empty() ? options_.preprocessing : opt.preprocessing);
  STEMROI_CHECK(opt.pooling == "avg", "dense mode pools windows by averaging; pooling must be 'avg', got '",
                opt.pooling, "'");
  STEMROI_CHECK(image.dim() == 2, "image: expected a 2-D (H, W) array, got shape ", shape_str(image.sizes().vec()));
  const int64_t H = image.size(0), W = image.size(1);
  STEMROI_CHECK(patch >= 1, "patch_size must be >= 1, got ", patch);
  STEMROI_CHECK(stride >= 1, "stride must be >= 1, got ", stride);
  STEMROI_CHECK(patch <= H && patch <= W, "patch_size must be <= image size (", H, ", ", W, "), got ", patch);
  const auto dtype = parse_dtype(opt.dtype);
  const auto device = torch_device(parse_network_device(opt.device));
  const auto backend = resolve_backend(opt.backend, device);
  const int64_t size = opt.input_size > 0 ? opt.input_size : patch;
  STEMROI_CHECK(size >= 32, "dense mode needs windows of >= 32 pixels after resizing, got ", size);
  const double scale = static_cast<double>(size) / static_cast<double>(patch);
  const int64_t RH = static_cast<int64_t>(std::llround(H * scale)), RW = static_cast<int64_t>(std::llround(W * scale));

  // Window origins (row-major), edge windows that do not fit are dropped.
  const PatchGrid grid(patch, stride, EdgeMode::Drop);
  const std::vector<int64_t> rows = grid.axis_origins(H, H, W), cols = grid.axis_origins(W, H, W);
  const int64_t nr = rows.size(), nc = cols.size();

  TorchThreadsGuard threads(opt.n_threads);
  c10::InferenceMode guard;

  // (1, 3, RH, RW): the whole image resized by size / patch, then the network input
  auto x = network_input_on(image.reshape({1, 1, H, W}), RH, RW, norm, ResizeMethod::Bilinear, opt.n_threads, device);

  // Strips of whole 32-pixel cell rows plus a halo of 96 pixels above and
  // below: a block5_pool cell reads input rows [32 r - 90, 32 r + 121], so
  // every map row kept from a strip sees exactly what the full image gives it
  // (strip starts stay on the 32-pixel grid, so every pool is aligned).
  constexpr int64_t kGrid = 32, kHalo = 96;
  const int64_t cell_rows = RH / kGrid;
  const int64_t elem = dtype == torch::kBFloat16 ? 2 : 4;
  int64_t strip_cells = (opt.dense_strip_bytes / (RW * 64 * elem) - 2 * kHalo) / kGrid;
  strip_cells = std::max<int64_t>(1, std::min<int64_t>(strip_cells, std::max<int64_t>(cell_rows, 1)));
  std::vector<std::vector<torch::Tensor>> tap_rows(taps.size());
  const int64_t n_strips = std::max<int64_t>(1, (cell_rows + strip_cells - 1) / strip_cells);
  {
    for (int64_t s = 0; s < n_strips; ++s) {
      InterruptCallback::check();
      const int64_t r0 = s * strip_cells, r1 = (s == n_strips - 1) ? cell_rows : (s + 1) * strip_cells;
      const int64_t in0 = std::max<int64_t>(0, r0 * kGrid - kHalo);
      const int64_t in1 = (s == n_strips - 1) ? RH : std::min<int64_t>(RH, r1 * kGrid + kHalo);
      auto maps = run_taps(x.slice(2, in0, in1), taps, backend, dtype);
      for (size_t k = 0; k < taps.size(); ++k) {
        const int64_t f = taps[k].stride;
        const int64_t keep0 = (r0 * kGrid - in0) / f;
        const int64_t keep1 = (s == n_strips - 1) ? maps[k].size(2) : keep0 + (r1 - r0) * kGrid / f;
        tap_rows[k].push_back(maps[k][0].slice(1, keep0, keep1).to(torch::kCPU));
      }
      if (progress) progress(s + 1, n_strips);
    }
  }

  std::vector<torch::Tensor> parts;
  for (size_t k = 0; k < taps.size(); ++k) {
    auto map = torch::cat(tap_rows[k], 1);  // (C, Hf, Wf)
    const double f = static_cast<double>(taps[k].stride);
    std::vector<double> a_r, a_c;
    for (auto r : rows) a_r.push_back(r * scale / f);
    for (auto c : cols) a_c.push_back(c * scale / f);
    auto wr = window_weights(a_r, size / f, map.size(1));
    auto wc = window_weights(a_c, size / f, map.size(2));
    // (nr, C, nc) -> (nr, nc, C)
    auto pooled = torch::einsum("ai,cij,bj->abc", {wr, map, wc});
    parts.push_back(pooled.reshape({nr * nc, map.size(0)}));
  }
  DenseFeatures out;
  out.features = torch::cat(parts, 1).contiguous();
  auto origins = torch::empty({nr * nc, 2}, torch::kInt64);
  auto acc = origins.accessor<int64_t, 2>();
  for (int64_t i = 0; i < nr; ++i)
    for (int64_t j = 0; j < nc; ++j) acc[i * nc + j][0] = rows[i], acc[i * nc + j][1] = cols[j];
  out.origins = origins;
  return out;
}

}  // namespace stemroi
