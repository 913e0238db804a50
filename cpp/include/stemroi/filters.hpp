// Separable image filters on batches of 2-D images, matching scipy.ndimage
// (mode='reflect', i.e. half-sample symmetric "d c b a | a b c d"), computed
// in double per line and stored in T between axes as SciPy does.
#pragma once
#include <cstdint>

namespace stemroi {

// gaussian_filter(img, sigma, truncate) for each of n images of h x w.
// in and out may alias. sigma == 0 copies.
template <typename T>
void gaussian_filter_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, double sigma,
                           double truncate = 4.0, int n_threads = 0);

// uniform_filter(img, size) (mean over a size x size window) for each image.
template <typename T>
void uniform_filter_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, int64_t size,
                          int n_threads = 0);

// Index of position i (may be outside [0, n)) under scipy's 'reflect' mode.
int64_t reflect_index(int64_t i, int64_t n);

}  // namespace stemroi
