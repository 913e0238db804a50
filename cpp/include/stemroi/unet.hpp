// Small U-Net for weakly supervised multi-label defect segmentation
// (Sathish, Sosa Espada, Karagiannis): two encoder levels (base, 2*base
// channels), a 4*base bottleneck, bilinear upsampling + skip concatenation,
// one logit per defect class + background (sigmoid, BCE). Convolutions use
// reflect padding so a constant image maps to a constant output (no border
// artefacts, seamless tiles).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "stemroi/augment.hpp"
#include "stemroi/callbacks.hpp"

namespace stemroi {

struct UNetConfig {
  int64_t in_channels = 1;
  int64_t n_outputs = 2;  // defect classes + background
  int64_t base_channels = 32;
  // z-score each input tile (standardize_contrast, classifier.hpp) before the
  // encoder: the maps then follow the lattice, not the image's slowly varying
  // brightness, which differs between the labelled patches' regions and a new frame
  bool standardize_input = false;
};

class UNetImpl : public torch::nn::Module {
 public:
  explicit UNetImpl(const UNetConfig& config);
  // (n, in_channels, H, W) with H, W multiples of 4 -> logits (n, n_outputs, H, W)
  torch::Tensor forward(const torch::Tensor& x);
  // sigmoid of forward(x): one independent probability per channel (multi-label)
  torch::Tensor probabilities(const torch::Tensor& x) { return torch::sigmoid(forward(x)); }
  // (n, in_channels, H, W) -> (n, 8 * base_channels): spatial mean then max of the
  // bottleneck features, an embedding for unfamiliar-input scores. It sees the input
  // as it is, even with standardize_input: the spatial mean of a standardised tile's
  // bottleneck is nearly the same for every lattice tile, and brightness or contrast
  // unlike the training data is what an unfamiliar-input flag should notice
  torch::Tensor embed(const torch::Tensor& x);
  const UNetConfig& config() const { return config_; }

 private:
  struct Encoded {
    torch::Tensor e1, e2, bottleneck;
  };
  // the checked input (z-scored when `standardize`) through the encoder: what forward
  // and embed share
  Encoded encode(const torch::Tensor& x, bool standardize);

  UNetConfig config_;
  torch::nn::Sequential enc1{nullptr}, enc2{nullptr}, bottleneck{nullptr}, dec2{nullptr}, dec1{nullptr};
  torch::nn::Conv2d head{nullptr};
};
TORCH_MODULE(UNet);

struct SegmenterTrainOptions {
  int64_t epochs = 10;
  int64_t batch_size = 32;
  double learning_rate = 1e-3;
  int64_t samples_per_epoch = 0;  // 0: as many as there are patches
  int64_t max_parts = 3;          // patches combined per synthetic sample
  double positive_weight = 1.0;   // BCE pos_weight of the defect channels (background: 1)
  AugmentOptions augment;         // per-sample acquisition changes of the composed samples (augment.hpp)
  uint64_t seed = 0;
  int n_threads = 0;
};

// Builds the network deterministically from `seed` (LibTorch's default
// generator is seeded under a lock: initialisation uses it).
UNet make_unet(const UNetConfig& config, uint64_t seed);

// Trains on synthetic multi-defect samples composed afresh each epoch from
// (patches (N,h,w) float32, masks (N,h,w), labels (N,) in [-1, n_classes)).
// Returns the mean BCE loss of each epoch. Polls InterruptCallback per batch.
std::vector<double> train_unet(UNet& net, const torch::Tensor& patches, const torch::Tensor& masks,
                               const torch::Tensor& labels, const SegmenterTrainOptions& opts,
                               const ProgressFn& progress = {});

// Sigmoid maps (n_outputs, H, W) of one image (H, W) float32, predicted on
// tile x tile windows every `stride` pixels (PatchGrid edge mode Shift: the
// last row/column of tiles ends at the border; the image is reflect-padded
// when smaller than a tile) and blended with a separable sin^2 window floored at 1e-3.
torch::Tensor predict_tiled(UNet& net, const torch::Tensor& image, int64_t tile, int64_t stride,
                            int64_t batch_size, int n_threads, const ProgressFn& progress = {});

}  // namespace stemroi
