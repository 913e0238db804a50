// Weak pixel labels for patch-labelled STEM data (Sathish et al.): a defect
// shows as a local intensity deviation from the smoothed lattice, so
//   deviation = |G_sigma(img) - uniform_size(G_sigma(img))|
// and the pseudo-label is the set of pixels whose deviation is above the
// given percentile of that patch (bulk patches: empty). Also composes the
// study's synthetic multi-defect samples (pixel-wise maximum of 1..k patches
// of different classes, one target channel per class plus background).
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace stemroi {

struct PseudoLabelOptions {
  double sigma = 1.0;        // Gaussian smoothing (pixels), scipy gaussian_filter
  int64_t size = 7;          // uniform_filter window on the smoothed image
  double percentile = 98.0;  // pixels strictly above this percentile of the patch's deviation
  // "deviation": the study's |G - uniform(G)|. "lattice" (this project): the
  // residual |G(x) - median_k G(x + t_k)| over the 8 lattice translations t_k
  // (+-a1, +-a2, +-(a1+a2), +-(a1-a2)) estimated from the patch's
  // autocorrelation; the periodic lattice cancels and a missing or extra
  // column stands out (falls back to "deviation" when no lattice is found).
  std::string method = "deviation";
};

struct LatticeVectors {
  bool found = false;
  int64_t a1y = 0, a1x = 0, a2y = 0, a2x = 0;  // integer translations (rows, cols)
};

// Two shortest non-collinear strong autocorrelation peaks of one image.
LatticeVectors estimate_lattice_vectors(const float* image, int64_t h, int64_t w, double min_period = 3.0);

// Score maps of the chosen method, (n, h, w) -> (n, h, w).
void pseudo_label_scores(const float* images, float* out, int64_t n, int64_t h, int64_t w,
                         const PseudoLabelOptions& opts, int n_threads = 0);

// (n, h, w) float32 -> (n, h, w) float32 deviation maps.
void local_deviation(const float* images, float* out, int64_t n, int64_t h, int64_t w,
                     const PseudoLabelOptions& opts, int n_threads = 0);

// numpy.percentile(values, q) with linear interpolation (values is copied).
double percentile_linear(std::vector<float> values, double q);

// (n, h, w) float32 -> (n, h, w) uint8 masks (0/1). is_bulk (n,) may be null;
// where is_bulk[i] != 0 the mask is empty.
void pseudo_label_masks(const float* images, uint8_t* masks, int64_t n, int64_t h, int64_t w,
                        const uint8_t* is_bulk, const PseudoLabelOptions& opts, int n_threads = 0);

struct MultiDefectSamples {
  torch::Tensor images;   // (m, 1, h, w) float32
  torch::Tensor targets;  // (m, n_classes + 1, h, w) float32; last channel = background
};

// patches (N, h, w) float32, masks (N, h, w) uint8/float, labels (N,) int64 in
// [-1, n_classes): -1 = bulk (no defect channel). Each sample is the
// pixel-wise maximum of 1..max_parts patches with distinct labels (drawn with
// `gen`); target channel c = max of the masks of its parts of class c,
// background = 1 - max over defect channels.
MultiDefectSamples compose_multi_defect(const torch::Tensor& patches, const torch::Tensor& masks,
                                        const torch::Tensor& labels, int64_t n_classes, int64_t n_samples,
                                        int64_t max_parts, uint64_t seed);

}  // namespace stemroi
