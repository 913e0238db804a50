#include "stemroi/filters.hpp"

#include <omp.h>

#include <cmath>
#include <vector>

#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"

namespace stemroi {

int64_t reflect_index(int64_t i, int64_t n) {
  if (n == 1) return 0;
  const int64_t period = 2 * n;
  i %= period;
  if (i < 0) i += period;
  return i < n ? i : period - 1 - i;
}

namespace {

// 1-D correlation of every line along `axis` (0: columns, 1: rows) of one
// h x w image with `weights` centred at `origin_left` (weights[k] applies to
// x[i - origin_left + k]).
template <typename T>
void correlate_axis(const T* src, T* dst, int64_t h, int64_t w, int axis, const std::vector<double>& weights,
                    int64_t left) {
  const int64_t len = axis == 0 ? h : w;
  const int64_t lines = axis == 0 ? w : h;
  const int64_t k = static_cast<int64_t>(weights.size());
  std::vector<double> line(len + k), res(len);
  for (int64_t l = 0; l < lines; ++l) {
    // gather the extended line
    for (int64_t i = 0; i < len + k - 1; ++i) {
      int64_t j = reflect_index(i - left, len);
      line[i] = axis == 0 ? static_cast<double>(src[j * w + l]) : static_cast<double>(src[l * w + j]);
    }
    for (int64_t i = 0; i < len; ++i) {
      double acc = 0.0;
      for (int64_t q = 0; q < k; ++q) acc += weights[q] * line[i + q];
      res[i] = acc;
    }
    for (int64_t i = 0; i < len; ++i) {
      if (axis == 0)
        dst[i * w + l] = static_cast<T>(res[i]);
      else
        dst[l * w + i] = static_cast<T>(res[i]);
    }
  }
}

template <typename T>
void separable_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, const std::vector<double>& weights,
                     int64_t left, int n_threads) {
  STEMROI_CHECK(n >= 0 && h > 0 && w > 0, "filter needs images of positive size, got ", n, " images of ", h, " x ", w);
  const int nt = resolve_n_threads(n_threads);
  OmpExceptionCapture capture;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t b = 0; b < n; ++b) {
    capture.run([&] {
      std::vector<T> tmp(static_cast<size_t>(h * w));
      correlate_axis(in + b * h * w, tmp.data(), h, w, 0, weights, left);
      correlate_axis(tmp.data(), out + b * h * w, h, w, 1, weights, left);
    });
  }
  capture.rethrow();
}

}  // namespace

template <typename T>
void gaussian_filter_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, double sigma, double truncate,
                           int n_threads) {
  STEMROI_CHECK(std::isfinite(sigma) && sigma >= 0, "sigma must be a finite number >= 0, got ", sigma);
  STEMROI_CHECK(std::isfinite(truncate) && truncate > 0, "truncate must be > 0, got ", truncate);
  const int64_t radius = static_cast<int64_t>(truncate * sigma + 0.5);
  std::vector<double> weights(2 * radius + 1);
  if (radius == 0) {
    weights[0] = 1.0;
  } else {
    // scipy.ndimage._gaussian_kernel1d (order 0)
    double sum = 0.0;
    for (int64_t x = -radius; x <= radius; ++x) {
      weights[x + radius] = std::exp(-0.5 / (sigma * sigma) * static_cast<double>(x * x));
      sum += weights[x + radius];
    }
    for (auto& v : weights) v /= sum;
  }
  separable_batch(in, out, n, h, w, weights, radius, n_threads);
}

template <typename T>
void uniform_filter_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, int64_t size, int n_threads) {
  STEMROI_CHECK(size >= 1, "uniform filter size must be >= 1, got ", size);
  std::vector<double> weights(size, 1.0 / static_cast<double>(size));
  separable_batch(in, out, n, h, w, weights, size / 2, n_threads);
}

template void gaussian_filter_batch<float>(const float*, float*, int64_t, int64_t, int64_t, double, double, int);
template void gaussian_filter_batch<double>(const double*, double*, int64_t, int64_t, int64_t, double, double, int);
template void uniform_filter_batch<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, int);
template void uniform_filter_batch<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t, int);

}  // namespace stemroi
