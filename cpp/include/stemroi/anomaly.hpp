// Anomaly scores of CVAE difference images (input - reconstruction).
//
// ANM ("average near maximum", Prifti et al. 2023): pixels with
// |difference| < threshold are zeroed; the score is the mean of the
// difference over the (2*half_window+1)^2 window centred on the pixel of
// largest |difference| (first in row-major order on ties). The window is
// clipped at the crop borders and averages only in-crop pixels (the published
// code wraps negative indices around to the opposite border).
//
// Local residual energy (this project's detector): the largest mean of
// difference^2 over any window x window box (clipped at the borders, every
// centre considered), without thresholding, reported as its square root (a
// local RMS residual).
#pragma once
#include <cstdint>

namespace stemroi {

// diff: n crops of h x w (C order). Writes signed_mean[n], abs_mean[n] (mean of
// |thresholded difference|) and peaks[2n] (row, col of the maximum).
void anm_scores(const float* diff, int64_t n, int64_t h, int64_t w, float threshold, int64_t half_window,
                float* signed_mean, float* abs_mean, int64_t* peaks, int n_threads = 0);

// diff: n crops of h x w. Writes scores[n] (local RMS) and peaks[2n] (centre of the best box).
void local_energy_scores(const float* diff, int64_t n, int64_t h, int64_t w, int64_t window, float* scores,
                         int64_t* peaks, int n_threads = 0);

// Per-pixel map of the box-mean of difference^2 (clipped window) for each crop:
// out[n*h*w]. Used for the dense anomaly map.
void local_energy_maps(const float* diff, int64_t n, int64_t h, int64_t w, int64_t window, float* out,
                       int n_threads = 0);

}  // namespace stemroi
