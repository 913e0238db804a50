#pragma once
// Acquisition-like training augmentations: what changes
// between two microscope sessions of the same material. Applied per training
// batch by train_patch_net, train_unet and train_cvae, each sample with its own draws
// from the caller's local generator (same seed -> the same batches).
#include <torch/torch.h>

namespace stemroi {

struct AugmentOptions {
  double gain = 0.0;    // intensity * exp(u), u ~ U(-gain, gain)
  double offset = 0.0;  // intensity + u, u ~ U(-offset, offset)
  double gamma = 0.0;   // intensity ^ exp(u), u ~ U(-gamma, gamma)
  double noise = 0.0;   // + N(0, s^2), s ~ U(0, noise) per sample
  double blur = 0.0;    // Gaussian blur, sigma ~ U(0, blur) pixels
  double scale = 0.0;   // zoom by exp(u), u ~ U(-log(1 + scale), log(1 + scale))
  double rotate = 0.0;  // rotation by U(-rotate, rotate) degrees
  // scan drift: horizontal shear, each row shifted by u * (row - centre) pixels,
  // u ~ U(-shear, shear) (a slow drift during a raster scan)
  double shear = 0.0;
  bool any() const {
    return gain > 0 || offset > 0 || gamma > 0 || noise > 0 || blur > 0 || scale > 0 || rotate > 0 || shear > 0;
  }
};

// std::invalid_argument naming the value when a strength is negative or not finite,
// or out of range (gain, gamma <= 2, offset <= 1, noise <= 1, blur <= 8, scale < 1, rotate <= 180, shear <= 1).
void check_augment_options(const AugmentOptions& o);

// x: (n, h, w) or (n, c, h, w) float32 on [0, 1]. Geometry (shear, then rotation and scale;
// bilinear, reflection at the borders) first, then blur, gamma, gain, offset,
// noise; the result is clamped to [0, 1]. `targets` (n, k, h, w), when given,
// are warped with the same geometry (nearest neighbour) in place. Random
// numbers are drawn on the CPU from `gen`, so the result does not depend on
// the device. Returns x unchanged (no draws) when !o.any().
torch::Tensor augment_batch(const torch::Tensor& x, const AugmentOptions& o, at::Generator& gen,
                            torch::Tensor* targets = nullptr);

}  // namespace stemroi
