#include "stemroi/unet.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <mutex>

#include "stemroi/classifier.hpp"
#include "stemroi/compute_device.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"
#include "stemroi/patches.hpp"
#include "stemroi/pseudo_labels.hpp"

namespace stemroi {

namespace {
namespace F = torch::nn::functional;

torch::nn::Sequential double_conv(int64_t in, int64_t out) {
  auto conv = [](int64_t i, int64_t o) {
    return torch::nn::Conv2d(torch::nn::Conv2dOptions(i, o, 3).padding(1).padding_mode(torch::kReflect));
  };
  return torch::nn::Sequential(conv(in, out), torch::nn::ReLU(), conv(out, out), torch::nn::ReLU());
}

torch::Tensor up(const torch::Tensor& x) {
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .scale_factor(std::vector<double>{2.0, 2.0})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}

std::mutex& seed_mutex() {
  static std::mutex m;
  return m;
}
}  // namespace

UNetImpl::UNetImpl(const UNetConfig& c) : config_(c) {
  STEMROI_CHECK(c.in_channels >= 1, "in_channels must be >= 1, got ", c.in_channels);
  STEMROI_CHECK(c.n_outputs >= 1, "n_outputs must be >= 1, got ", c.n_outputs);
  STEMROI_CHECK(c.base_channels >= 1, "base_channels must be >= 1, got ", c.base_channels);
  const int64_t b = c.base_channels;
  enc1 = register_module("enc1", double_conv(c.in_channels, b));
  enc2 = register_module("enc2", double_conv(b, 2 * b));
  bottleneck = register_module("bottleneck", double_conv(2 * b, 4 * b));
  dec2 = register_module("dec2", double_conv(4 * b + 2 * b, 2 * b));
  dec1 = register_module("dec1", double_conv(2 * b + b, b));
  head = register_module("head", torch::nn::Conv2d(torch::nn::Conv2dOptions(b, c.n_outputs, 1)));
}

UNetImpl::Encoded UNetImpl::encode(const torch::Tensor& x, bool standardize) {
  STEMROI_CHECK(x.dim() == 4 && x.size(1) == config_.in_channels, "U-Net input must be (n, ",
                config_.in_channels, ", H, W), got ", shape_str(x.sizes().vec()));
  STEMROI_CHECK(x.size(2) % 4 == 0 && x.size(3) % 4 == 0 && x.size(2) >= 8 && x.size(3) >= 8,
                "U-Net input height and width must be multiples of 4 and >= 8, got ",
                shape_str(x.sizes().vec()));
  Encoded out;
  out.e1 = enc1->forward(standardize ? standardize_contrast(x) : x);
  out.e2 = enc2->forward(F::max_pool2d(out.e1, F::MaxPool2dFuncOptions(2)));
  out.bottleneck = bottleneck->forward(F::max_pool2d(out.e2, F::MaxPool2dFuncOptions(2)));
  return out;
}

torch::Tensor UNetImpl::forward(const torch::Tensor& x) {
  const Encoded e = encode(x, config_.standardize_input);
  auto d2 = dec2->forward(torch::cat({up(e.bottleneck), e.e2}, 1));
  auto d1 = dec1->forward(torch::cat({up(d2), e.e1}, 1));
  return head->forward(d1);
}

torch::Tensor UNetImpl::embed(const torch::Tensor& x) {
  const torch::Tensor bn = encode(x, /*standardize=*/false).bottleneck;
  return torch::cat({bn.mean({2, 3}), bn.amax({2, 3})}, 1);
}

UNet make_unet(const UNetConfig& config, uint64_t seed) {
  std::lock_guard<std::mutex> lock(seed_mutex());
  torch::manual_seed(seed);
  return UNet(config);
}

std::vector<double> train_unet(UNet& net, const torch::Tensor& patches, const torch::Tensor& masks,
                               const torch::Tensor& labels, const SegmenterTrainOptions& o,
                               const ProgressFn& progress) {
  STEMROI_CHECK(o.epochs >= 1, "epochs must be >= 1, got ", o.epochs);
  STEMROI_CHECK(o.batch_size >= 1, "batch_size must be >= 1, got ", o.batch_size);
  STEMROI_CHECK(std::isfinite(o.learning_rate) && o.learning_rate > 0, "learning_rate must be > 0, got ",
                o.learning_rate);
  STEMROI_CHECK(patches.dim() == 3, "patches must be (N, h, w), got ", shape_str(patches.sizes().vec()));
  STEMROI_CHECK(patches.size(1) % 4 == 0 && patches.size(2) % 4 == 0 && patches.size(1) >= 8,
                "patch height and width must be multiples of 4 and >= 8, got ",
                shape_str(patches.sizes().vec()));
  const int64_t n_classes = net->config().n_outputs - 1;
  STEMROI_CHECK(n_classes >= 1, "the network needs >= 2 outputs (classes + background), got ",
                net->config().n_outputs);
  STEMROI_CHECK(std::isfinite(o.positive_weight) && o.positive_weight > 0, "positive_weight must be > 0, got ",
                o.positive_weight);
  check_augment_options(o.augment);
  TorchThreadsGuard threads(o.n_threads);
  const auto device = module_device(*net);
  const DeterministicCudnnGuard deterministic(device);
  // augmentation draws: a local generator, fixed by the seed
  auto aug_gen = at::make_generator<at::CPUGeneratorImpl>(o.seed ^ 0xA5A5A5A55A5A5A5AULL);
  auto pos_weight = torch::full({n_classes + 1, 1, 1}, o.positive_weight, torch::kFloat32);
  pos_weight[n_classes] = 1.0f;
  pos_weight = pos_weight.to(device);
  const int64_t per_epoch = o.samples_per_epoch > 0 ? o.samples_per_epoch : patches.size(0);
  const int64_t n_batches = (per_epoch + o.batch_size - 1) / o.batch_size;
  torch::optim::Adam opt(net->parameters(), torch::optim::AdamOptions(o.learning_rate));
  net->train();
  std::vector<double> history;
  for (int64_t epoch = 0; epoch < o.epochs; ++epoch) {
    // fresh compositions each epoch; the seed sequence is fixed by o.seed
    auto samples = compose_multi_defect(patches, masks, labels, n_classes, per_epoch, o.max_parts,
                                        o.seed * 1000003ULL + static_cast<uint64_t>(epoch));
    double total = 0.0;
    for (int64_t b = 0; b < n_batches; ++b) {
      InterruptCallback::check();
      const int64_t lo = b * o.batch_size, hi = std::min(per_epoch, lo + o.batch_size);
      auto x = samples.images.slice(0, lo, hi).to(device);
      auto y = samples.targets.slice(0, lo, hi).to(device);
      if (o.augment.any()) x = augment_batch(x, o.augment, aug_gen, &y);
      opt.zero_grad();
      auto loss = F::binary_cross_entropy_with_logits(
          net->forward(x), y, F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(pos_weight));
      loss.backward();
      opt.step();
      total += loss.item<double>() * static_cast<double>(hi - lo);
    }
    history.push_back(total / static_cast<double>(per_epoch));
    if (progress) progress(epoch + 1, o.epochs);
  }
  net->eval();
  return history;
}

torch::Tensor predict_tiled(UNet& net, const torch::Tensor& image, int64_t tile, int64_t stride,
                            int64_t batch_size, int n_threads, const ProgressFn& progress) {
  STEMROI_CHECK(image.dim() == 2, "image must be 2-D (H, W), got ", shape_str(image.sizes().vec()));
  STEMROI_CHECK(tile >= 8 && tile % 4 == 0, "tile must be a multiple of 4 and >= 8, got ", tile);
  STEMROI_CHECK(stride >= 1 && stride <= tile, "stride must be in [1, tile=", tile, "], got ", stride);
  STEMROI_CHECK(batch_size >= 1, "batch_size must be >= 1, got ", batch_size);
  STEMROI_CHECK(image.size(0) >= 1 && image.size(1) >= 1, "image is empty: ", shape_str(image.sizes().vec()));
  TorchThreadsGuard threads(n_threads);
  torch::NoGradGuard no_grad;
  net->eval();
  const auto device = module_device(*net);
  const int64_t H = image.size(0), W = image.size(1);
  auto img = image.to(torch::kFloat32).contiguous();
  // reflect-pad images smaller than a tile (repeatedly: reflect needs pad < size)
  int64_t Hp = std::max(H, tile), Wp = std::max(W, tile);
  auto padded = img.view({1, 1, H, W});
  while (padded.size(2) < Hp || padded.size(3) < Wp) {
    const int64_t ph = std::min(Hp - padded.size(2), padded.size(2) - 1);
    const int64_t pw = std::min(Wp - padded.size(3), padded.size(3) - 1);
    if (ph <= 0 && pw <= 0) {  // 1-pixel dimension: replicate
      padded = F::pad(padded, F::PadFuncOptions({0, Wp - padded.size(3), 0, Hp - padded.size(2)}).mode(torch::kReplicate));
      break;
    }
    padded = F::pad(padded, F::PadFuncOptions({0, std::max<int64_t>(pw, 0), 0, std::max<int64_t>(ph, 0)})
                                .mode(torch::kReflect));
  }
  padded = padded.view({Hp, Wp});
  // the last row/column of tiles ends at the border (every pixel predicted)
  const PatchGrid grid(tile, stride, EdgeMode::Shift);
  const auto rows = grid.axis_origins(Hp, Hp, Wp), cols = grid.axis_origins(Wp, Hp, Wp);
  std::vector<std::pair<int64_t, int64_t>> origins;
  for (auto r : rows)
    for (auto c : cols) origins.emplace_back(r, c);
  // separable blending window, > 0 everywhere so every pixel is covered
  auto win1 = torch::empty({tile});
  for (int64_t i = 0; i < tile; ++i) {
    const double s = std::sin(M_PI * (static_cast<double>(i) + 0.5) / static_cast<double>(tile));
    win1[i] = static_cast<float>(std::max(s * s, 1e-3));
  }
  auto win = win1.view({tile, 1}) * win1.view({1, tile});
  const int64_t C = net->config().n_outputs;
  auto acc = torch::zeros({C, Hp, Wp});
  auto wsum = torch::zeros({Hp, Wp});
  const int64_t n = static_cast<int64_t>(origins.size());
  for (int64_t lo = 0; lo < n; lo += batch_size) {
    InterruptCallback::check();
    const int64_t hi = std::min(n, lo + batch_size);
    std::vector<torch::Tensor> tiles;
    for (int64_t i = lo; i < hi; ++i)
      tiles.push_back(padded.slice(0, origins[i].first, origins[i].first + tile)
                          .slice(1, origins[i].second, origins[i].second + tile));
    auto x = torch::stack(tiles).unsqueeze(1);
    auto p = net->probabilities(x.to(device)).to(torch::kCPU);
    for (int64_t i = lo; i < hi; ++i) {
      const auto [r, c] = origins[i];
      acc.slice(1, r, r + tile).slice(2, c, c + tile).add_(p[i - lo] * win);
      wsum.slice(0, r, r + tile).slice(1, c, c + tile).add_(win);
    }
    if (progress) progress(hi, n);
  }
  auto out = acc / wsum.unsqueeze(0);
  return out.slice(1, 0, H).slice(2, 0, W).contiguous();
}

}  // namespace stemroi
