// Batched image preprocessing for the studies' network inputs (OpenMP over
// images): resize, grey -> 3 channels, normalisation presets, per-patch blur,
// divide-by-maximum and min-max, and the network input (network_input).
//
// Resize methods (output pixel i, input length L, output length S, scale = L / S):
//   Bilinear     half-pixel centres, no antialias: src = max(scale * (i + 0.5) - 0.5, 0),
//                i0 = floor(src), i1 = min(i0 + 1, L - 1), t = src - i0. This is
//                torch.nn.functional.interpolate(mode='bilinear', align_corners=False)
//                (antialias=False) and also TF2 tf.image.resize(method='bilinear',
//                antialias=False) / TF1 resize_bilinear(half_pixel_centers=True):
//                TF clamps i0 at 0 and i1 at L - 1 instead of clamping src, which
//                gives the same value at both borders, up- and down-sampling.
//                The arithmetic (float for float32, weight order) follows torch's
//                CPU kernel: out = wy0 * (wx0 a + wx1 b) + wy1 * (wx0 c + wx1 d).
//   BilinearTF1  legacy TF1 tf.image.resize_bilinear(align_corners=False,
//                half_pixel_centers=False) / Keras 1-2.2 ResizeImages:
//                src = scale * i (top-left aligned), i1 = min(i0 + 1, L - 1).
//                Differs from Bilinear (shifts content by half an input pixel).
//   Nearest      PIL Image.resize(NEAREST), which is what Keras'
//                load_img(target_size=..., interpolation='nearest') calls:
//                src = floor(scale * (i + 0.5)) computed in double, clipped to
//                L - 1 (= torch 'nearest-exact', not torch 'nearest').
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "stemroi/normalization.hpp"

namespace stemroi {

enum class ResizeMethod { Bilinear, BilinearTF1, Nearest };

// "bilinear" and "bilinear_tf" (TF2 half-pixel, identical) -> Bilinear;
// "bilinear_tf1" -> BilinearTF1; "nearest" -> Nearest.
ResizeMethod parse_resize_method(const std::string& name);

// Resize n images of h x w to oh x ow (C order, in and out must not alias).
// T: float, double (bilinear and nearest); uint8_t, uint16_t (nearest only).
template <typename T>
void resize_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, int64_t oh, int64_t ow, ResizeMethod method,
                  int n_threads = 0);

// Grey (n, h, w) -> (n, 3, h, w) by replicating the channel.
template <typename T>
void grey_to_rgb_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, int n_threads = 0);

// (n, 3, h, w) RGB on [0, 1] -> normalised (n, 3, h, w) under the preset
// (channel order reversed for caffe). in and out may alias only when
// !preset.bgr.
template <typename T>
void normalize_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, const Normalization& preset,
                     int n_threads = 0);

// Per-image x / max(x). Rule for zero/negative maxima: an image whose maximum
// is not > 0 (all zero, or all negative) is copied unchanged, so no NaN/inf.
// in and out may alias.
template <typename T>
void divide_by_max_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, int n_threads = 0);

// Per-image (x - min) / (max - min). Rule: a constant image (max == min,
// zero variance) becomes all zeros. in and out may alias.
template <typename T>
void minmax_scale_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, int n_threads = 0);

// The input of every network (VGG16, MobileNetV2, the PatchNet backbones),
// defined here once, in one order: n patches of c x h x w (c = 1 grey or 3
// RGB) on [0, 1] -> resize each input channel to oh x ow -> replicate grey to
// 3 channels (or reverse RGB for a BGR preset) -> (x * input_scale - mean) / std,
// written to out (n, 3, oh, ow) in one pass per patch. Equal to
// normalize_batch(grey_to_rgb_batch(resize_batch(x))) bit for bit. Sizes equal
// to the input's copy the patch (no resampling).
void network_input_batch(const float* in, float* out, int64_t n, int64_t c, int64_t h, int64_t w, int64_t oh,
                         int64_t ow, const Normalization& preset, ResizeMethod method, int n_threads = 0);

// network_input_batch on a tensor: patches (n, h, w) or (n, c, h, w), any
// float dtype and device; oh, ow <= 0 keep the input size. Returns
// (n, 3, oh, ow) float32 on the CPU (callers move it to their device).
torch::Tensor network_input(const torch::Tensor& patches, int64_t oh, int64_t ow, const Normalization& preset,
                            ResizeMethod method = ResizeMethod::Bilinear, int n_threads = 0);

// network_input computed on `device` (n, 3, oh, ow) float32 there. On a GPU
// with ResizeMethod::Bilinear the patches travel as they are (a grey patch is
// a third of the bytes, and 64 px is a twelfth of 224 px) and are resized and
// normalised on the device with LibTorch's bilinear kernel (the same formula;
// equal to network_input within float rounding, < 5e-6 of the largest value); otherwise
// it is network_input followed by a copy to the device.
torch::Tensor network_input_on(const torch::Tensor& patches, int64_t oh, int64_t ow, const Normalization& preset,
                               ResizeMethod method, int n_threads, const torch::Device& device);

// The device formula of network_input_on on any device (tests compare it
// with network_input on the CPU).
torch::Tensor network_input_torch(const torch::Tensor& patches, int64_t oh, int64_t ow, const Normalization& preset,
                                  const torch::Device& device);

}  // namespace stemroi
