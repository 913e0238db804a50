#include "stemroi/cvae.hpp"

#include <algorithm>
#include <cmath>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>

#include <ATen/CPUGeneratorImpl.h>

#include "stemroi/compute_device.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"
#include "stemroi/torch_io.hpp"

namespace stemroi {

namespace {
constexpr const char* kArchitecture = "cvae";

// Keras' glorot_uniform for a conv/dense kernel given fan_in/fan_out.
void glorot_(torch::Tensor w, int64_t fan_in, int64_t fan_out, at::Generator& gen) {
  double limit = std::sqrt(6.0 / static_cast<double>(fan_in + fan_out));
  torch::NoGradGuard g;
  w.uniform_(-limit, limit, gen);
}

torch::Tensor as_nchw(const torch::Tensor& data, int64_t crop) {
  STEMROI_CHECK_TYPE(data.scalar_type() == torch::kFloat32, "data: expected float32, got ",
                     c10::toString(data.scalar_type()));
  torch::Tensor x = data;
  if (x.dim() == 3) x = x.unsqueeze(1);
  std::vector<int64_t> s(data.sizes().begin(), data.sizes().end());
  STEMROI_CHECK(x.dim() == 4 && x.size(1) == 1 && x.size(2) == crop && x.size(3) == crop,
                "data: expected crops of shape (n, ", crop, ", ", crop, "), got ", shape_str(s));
  STEMROI_CHECK(x.size(0) >= 1, "data: at least one crop needed, got shape ", shape_str(s));
  return x.contiguous();
}
}  // namespace

// ---- config --------------------------------------------------------------------
std::string CVAEConfig::to_json() const {
  nlohmann::json j;
  j["latent_dim"] = latent_dim;
  j["variant"] = variant;
  j["crop_size"] = crop_size;
  return j.dump();
}

CVAEConfig CVAEConfig::from_json(const std::string& text) {
  CVAEConfig c;
  try {
    auto j = nlohmann::json::parse(text);
    // JSON integers only: get<int64_t>() of a float such as 1e55 is undefined behaviour
    auto integer = [&](const char* key) {
      const auto& v = j.at(key);
      if (!v.is_number_integer())
        throw IOError(concat("CVAE config '", key, "' must be an integer, got ", v.dump()));
      return v.get<int64_t>();
    };
    c.latent_dim = integer("latent_dim");
    c.variant = j.at("variant").get<std::string>();
    c.crop_size = integer("crop_size");
  } catch (const nlohmann::json::exception& e) {
    throw IOError(concat("CVAE config is not valid JSON with latent_dim, variant, crop_size: ", e.what()));
  }
  c.validate();
  return c;
}

void CVAEConfig::validate() const {
  STEMROI_CHECK(latent_dim >= 1 && latent_dim <= 4096, "latent_dim must be in [1, 4096], got ", latent_dim);
  STEMROI_CHECK(variant == "study" || variant == "dataset_repo",
                "variant must be 'study' or 'dataset_repo', got '", variant, "'");
  STEMROI_CHECK(crop_size >= 16 && crop_size % 8 == 0 && crop_size <= 4096,
                "crop_size must be a multiple of 8 in [16, 4096], got ", crop_size);
  // A config read from a model file decides what is allocated before any weight
  // is checked: bound the dense layers (at most (s/8+1)^2*128 -> 2*latent values)
  // so that a corrupt or hostile file cannot ask for terabytes.
  constexpr int64_t kMaxDenseValues = int64_t(1) << 28;  // 1 GiB of float32
  const int64_t side = crop_size / 8 + 1, dense = side * side * 128 * 2 * latent_dim;
  STEMROI_CHECK(dense <= kMaxDenseValues, "crop_size ", crop_size, " with latent_dim ", latent_dim,
                " needs dense layers of up to ", dense, " values, more than the limit of ", kMaxDenseValues);
}

// ---- model ---------------------------------------------------------------------
CVAEImpl::CVAEImpl(const CVAEConfig& config, uint64_t seed) : config_(config) {
  config_.validate();
  const bool same = config_.variant == "dataset_repo";
  const int64_t s = config_.crop_size;
  // 'valid' 3x3 stride 2: floor((n - 3) / 2) + 1; 'same' stride 2: ceil(n / 2).
  auto down = [same](int64_t n) { return same ? (n + 1) / 2 : (n - 3) / 2 + 1; };
  encoded_size_ = down(down(down(s)));
  decoder_channels_ = same ? 64 : 32;
  const int64_t L = config_.latent_dim, r = s / 8;
  using namespace torch::nn;
  enc1_ = register_module("enc1", Conv2d(Conv2dOptions(1, 64, 3).stride(2)));
  enc2_ = register_module("enc2", Conv2d(Conv2dOptions(64, 128, 3).stride(2)));
  enc3_ = register_module("enc3", Conv2d(Conv2dOptions(128, 128, 3).stride(2)));
  enc_fc_ = register_module("enc_fc", Linear(128 * encoded_size_ * encoded_size_, 2 * L));
  dec_fc_ = register_module("dec_fc", Linear(L, r * r * decoder_channels_));
  dec1_ = register_module("dec1", ConvTranspose2d(ConvTranspose2dOptions(decoder_channels_, 128, 3).stride(2)));
  dec2_ = register_module("dec2", ConvTranspose2d(ConvTranspose2dOptions(128, 128, 3).stride(2)));
  dec3_ = register_module("dec3", ConvTranspose2d(ConvTranspose2dOptions(128, 64, 3).stride(2)));
  dec_out_ = register_module("dec_out", ConvTranspose2d(ConvTranspose2dOptions(64, 1, 3).stride(1).padding(1)));

  at::Generator gen = at::detail::createCPUGenerator(seed);
  torch::NoGradGuard g;
  // Keras fans for a conv kernel: in*k*k and out*k*k (the same for transposed).
  for (auto* conv : {&enc1_, &enc2_, &enc3_}) {
    auto& w = (*conv)->weight;
    glorot_(w, w.size(1) * 9, w.size(0) * 9, gen);
    (*conv)->bias.zero_();
  }
  for (auto* conv : {&dec1_, &dec2_, &dec3_, &dec_out_}) {
    auto& w = (*conv)->weight;  // (in, out, k, k)
    glorot_(w, w.size(0) * 9, w.size(1) * 9, gen);
    (*conv)->bias.zero_();
  }
  for (auto* fc : {&enc_fc_, &dec_fc_}) {
    auto& w = (*fc)->weight;  // (out, in)
    glorot_(w, w.size(1), w.size(0), gen);
    (*fc)->bias.zero_();
  }
}

torch::Tensor CVAEImpl::conv_same_or_valid(torch::nn::Conv2d& conv, const torch::Tensor& x) {
  if (config_.variant == "dataset_repo") {
    // TF 'same', stride 2, k 3: pad_total = max((ceil(n/2) - 1) * 2 + 3 - n, 0);
    // the smaller half goes first (top/left).
    const int64_t n = x.size(2);
    const int64_t total = std::max<int64_t>(((n + 1) / 2 - 1) * 2 + 3 - n, 0);
    const int64_t before = total / 2, after = total - before;
    return conv(torch::constant_pad_nd(x, {before, after, before, after}, 0));
  }
  return conv(x);
}

torch::Tensor conv_transpose_same_stride2(torch::nn::ConvTranspose2d& conv, const torch::Tensor& x) {
  // TF conv2d_transpose 'same', k 3, s 2: output 2n, pad_total = (n-1)*2 + 3 - 2n = 1,
  // pad_before = 0, so output row r gathers input i through tap k with 2i + k = r.
  // Even rows 2p take (i=p, k=0) and (i=p-1, k=2); odd rows 2p+1 take (i=p, k=1).
  // That is a 2x2 conv over the input padded by one zero row/column before,
  // producing the 4 output parities as channels, then a pixel shuffle. LibTorch's
  // CPU transposed conv (im2col + col2im) is several times slower in backward
  // than this dense conv; the result is the same sum of the same products.
  const auto& w = conv->weight;  // (in, out, 3, 3)
  const int64_t cin = w.size(0), cout = w.size(1);
  auto zr = torch::zeros_like(w.narrow(2, 0, 1));
  std::vector<torch::Tensor> rows = {torch::cat({w.narrow(2, 2, 1), w.narrow(2, 0, 1)}, 2),
                                     torch::cat({zr, w.narrow(2, 1, 1)}, 2)};
  std::vector<torch::Tensor> parts;
  for (const auto& r : rows) {
    auto zc = torch::zeros_like(r.narrow(3, 0, 1));
    parts.push_back(torch::cat({r.narrow(3, 2, 1), r.narrow(3, 0, 1)}, 3));
    parts.push_back(torch::cat({zc, r.narrow(3, 1, 1)}, 3));
  }
  // (in, out, 4, 2, 2) -> (out * 4, in, 2, 2), channel = c * 4 + parity (pixel_shuffle order)
  auto k = torch::stack(parts, 2).permute({1, 2, 0, 3, 4}).reshape({cout * 4, cin, 2, 2});
  auto y = torch::conv2d(torch::constant_pad_nd(x, {1, 0, 1, 0}, 0), k, conv->bias.repeat_interleave(4));
  return torch::pixel_shuffle(y, 2);
}

torch::Tensor conv_transpose_same_stride1(torch::nn::ConvTranspose2d& conv, const torch::Tensor& x) {
  // A stride-1 'same' (padding 1) transposed conv is the conv with the kernel
  // flipped and in/out swapped; the dense conv is much faster on CPU.
  return torch::conv2d(x, conv->weight.flip({2, 3}).transpose(0, 1), conv->bias, 1, 1);
}

std::pair<torch::Tensor, torch::Tensor> CVAEImpl::encode(const torch::Tensor& x) {
  auto h = torch::relu(conv_same_or_valid(enc1_, x));
  h = torch::relu(conv_same_or_valid(enc2_, h));
  h = torch::relu(conv_same_or_valid(enc3_, h));
  // Flatten in NHWC order as Keras does, so the dense layer sees the same layout.
  h = h.permute({0, 2, 3, 1}).reshape({h.size(0), -1});
  auto out = enc_fc_(h);
  auto parts = out.chunk(2, 1);
  return {parts[0], parts[1]};
}

torch::Tensor CVAEImpl::decode(const torch::Tensor& z) {
  const int64_t r = config_.crop_size / 8;
  auto h = torch::relu(dec_fc_(z));
  // Keras Reshape((r, r, C)) is NHWC; convert to NCHW.
  h = h.view({z.size(0), r, r, decoder_channels_}).permute({0, 3, 1, 2}).contiguous();
  h = torch::relu(conv_transpose_same_stride2(dec1_, h));
  h = torch::relu(conv_transpose_same_stride2(dec2_, h));
  h = torch::relu(conv_transpose_same_stride2(dec3_, h));
  return conv_transpose_same_stride1(dec_out_, h);
}

torch::Tensor CVAEImpl::forward(const torch::Tensor& x) { return torch::sigmoid(decode(encode(x).first)); }

torch::Tensor CVAEImpl::loss(const torch::Tensor& x, const torch::Tensor& eps) {
  auto [mean, logvar] = encode(x);
  auto z = eps * torch::exp(logvar * 0.5) + mean;
  auto logits = decode(z);
  auto cross_ent = torch::binary_cross_entropy_with_logits(logits, x, {}, {}, at::Reduction::None);
  auto logpx_z = -cross_ent.sum({1, 2, 3});
  const double log2pi = std::log(2.0 * M_PI);
  auto logpz = (-0.5 * (z.pow(2) + log2pi)).sum(1);
  auto logqz_x = (-0.5 * ((z - mean).pow(2) * torch::exp(-logvar) + logvar + log2pi)).sum(1);
  return -(logpx_z + logpz - logqz_x).mean();
}

// ---- training / inference ---------------------------------------------------------
std::vector<double> train_cvae(CVAE& model, const torch::Tensor& data, const CVAETrainOptions& o,
                               const ProgressFn& progress) {
  STEMROI_CHECK(o.epochs >= 1, "epochs must be >= 1, got ", o.epochs);
  STEMROI_CHECK(o.batch_size >= 1, "batch_size must be >= 1, got ", o.batch_size);
  STEMROI_CHECK(o.learning_rate > 0 && std::isfinite(o.learning_rate), "learning_rate must be > 0, got ",
                o.learning_rate);
  check_augment_options(o.augment);
  auto x = as_nchw(data, model->config().crop_size);
  STEMROI_CHECK(torch::isfinite(x).all().item<bool>(), "data: contains NaN or infinity");
  TorchThreadsGuard threads(o.n_threads);
  const auto device = module_device(*model);
  const DeterministicCudnnGuard deterministic(device);
  model->train();
  // augmentation draws: a generator of their own, so the shuffle and the ELBO noise
  // are those of the same seed without augmentation
  at::Generator aug_gen = at::detail::createCPUGenerator(o.seed ^ 0xA5A5F00DCAFEULL);
  torch::optim::Adam opt(model->parameters(),
                         torch::optim::AdamOptions(o.learning_rate).betas({0.9, 0.999}).eps(1e-7));
  at::Generator gen = at::detail::createCPUGenerator(o.seed ^ 0x9E3779B97F4A7C15ULL);
  std::mt19937_64 shuffle_rng(o.seed);
  const int64_t n = x.size(0), L = model->config().latent_dim;
  std::vector<int64_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::vector<double> history;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), shuffle_rng);
    auto idx_all = torch::from_blob(order.data(), {n}, torch::kInt64).clone();
    double total = 0.0;
    int64_t seen = 0;
    for (int64_t start = 0; start < n; start += o.batch_size) {
      InterruptCallback::check();
      const int64_t b = std::min(o.batch_size, n - start);
      // drawn on the CPU: the same noise on every device
      auto batch = x.index_select(0, idx_all.narrow(0, start, b));
      if (o.augment.any()) batch = augment_batch(batch, o.augment, aug_gen);
      batch = batch.to(device);
      auto eps = torch::randn({b, L}, gen, torch::TensorOptions().dtype(torch::kFloat32)).to(device);
      opt.zero_grad();
      auto loss = model->loss(batch, eps);
      loss.backward();
      opt.step();
      const double v = loss.item<double>();
      if (!std::isfinite(v))
        throw ValueError(concat("training diverged at epoch ", epoch + 1, " (loss ", v,
                                "); lower learning_rate (got ", o.learning_rate, ")"));
      total += v * b;
      seen += b;
    }
    history.push_back(total / static_cast<double>(seen));
    if (progress) progress(epoch + 1, o.epochs);
  }
  model->eval();
  return history;
}

torch::Tensor cvae_reconstruct(CVAE& model, const torch::Tensor& data, int64_t batch_size, int n_threads) {
  STEMROI_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size);
  auto x = as_nchw(data, model->config().crop_size);
  TorchThreadsGuard threads(n_threads);
  torch::NoGradGuard no_grad;
  model->eval();
  const auto device = module_device(*model);
  std::vector<torch::Tensor> parts;
  for (int64_t start = 0; start < x.size(0); start += batch_size) {
    InterruptCallback::check();
    const int64_t b = std::min(batch_size, x.size(0) - start);
    parts.push_back(model->forward(x.narrow(0, start, b).to(device)).to(torch::kCPU));
  }
  return torch::cat(parts, 0).squeeze(1);
}

std::pair<torch::Tensor, torch::Tensor> cvae_encode(CVAE& model, const torch::Tensor& data, int64_t batch_size,
                                                    int n_threads) {
  STEMROI_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size);
  auto x = as_nchw(data, model->config().crop_size);
  TorchThreadsGuard threads(n_threads);
  torch::NoGradGuard no_grad;
  model->eval();
  const auto device = module_device(*model);
  std::vector<torch::Tensor> means, logvars;
  for (int64_t start = 0; start < x.size(0); start += batch_size) {
    InterruptCallback::check();
    const int64_t b = std::min(batch_size, x.size(0) - start);
    auto [m, lv] = model->encode(x.narrow(0, start, b).to(device));
    means.push_back(m.to(torch::kCPU));
    logvars.push_back(lv.to(torch::kCPU));
  }
  return {torch::cat(means, 0), torch::cat(logvars, 0)};
}

double cvae_eval_loss(CVAE& model, const torch::Tensor& data, uint64_t seed, int64_t batch_size, int n_threads) {
  STEMROI_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size);
  auto x = as_nchw(data, model->config().crop_size);
  TorchThreadsGuard threads(n_threads);
  torch::NoGradGuard no_grad;
  model->eval();
  at::Generator gen = at::detail::createCPUGenerator(seed);
  const auto device = module_device(*model);
  const int64_t L = model->config().latent_dim;
  double total = 0.0;
  for (int64_t start = 0; start < x.size(0); start += batch_size) {
    InterruptCallback::check();
    const int64_t b = std::min(batch_size, x.size(0) - start);
    auto eps = torch::randn({b, L}, gen, torch::TensorOptions().dtype(torch::kFloat32)).to(device);
    total += model->loss(x.narrow(0, start, b).to(device), eps).item<double>() * b;
  }
  return total / static_cast<double>(x.size(0));
}

// ---- persistence --------------------------------------------------------------------
void save_cvae(const std::string& path, CVAE& model, std::map<std::string, std::string> metadata) {
  metadata["architecture"] = kArchitecture;
  metadata["config"] = model->config().to_json();
  write_model_file(path, model_file_from_state(module_state(*model), std::move(metadata)));
}

std::pair<CVAE, std::map<std::string, std::string>> load_cvae(const std::string& path,
                                                              const std::string& expected_sha256) {
  ModelFile f = read_model_file(path, expected_sha256);
  auto arch = f.metadata.find("architecture");
  if (arch == f.metadata.end() || arch->second != kArchitecture)
    throw ValueError(concat("model file ", path, " holds architecture '",
                            arch == f.metadata.end() ? std::string("<none>") : arch->second,
                            "', expected 'cvae'"));
  auto cfg = f.metadata.find("config");
  if (cfg == f.metadata.end()) throw IOError(concat("model file ", path, " has no 'config' metadata"));
  CVAE model(CVAEConfig::from_json(cfg->second), 0);
  load_module_state(*model, state_from_model_file(f), /*strict=*/true, path);
  model->eval();
  return {model, f.metadata};
}

}  // namespace stemroi
