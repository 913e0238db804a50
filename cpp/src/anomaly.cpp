#include "stemroi/anomaly.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"

namespace stemroi {

namespace {
void check_dims(int64_t n, int64_t h, int64_t w) {
  STEMROI_CHECK(n >= 0 && h >= 1 && w >= 1, "difference images must have shape (n, h, w) with h, w >= 1, got (",
                n, ", ", h, ", ", w, ")");
}

// Box mean of d^2 over the clipped window centred on every pixel, via a
// summed-area table in double (exact enough and order-fixed).
void energy_map_one(const float* d, int64_t h, int64_t w, int64_t window, std::vector<double>& sat, float* out) {
  sat.assign((h + 1) * (w + 1), 0.0);
  for (int64_t r = 0; r < h; ++r) {
    double row = 0.0;
    for (int64_t c = 0; c < w; ++c) {
      const double v = d[r * w + c];
      row += v * v;
      sat[(r + 1) * (w + 1) + c + 1] = sat[r * (w + 1) + c + 1] + row;
    }
  }
  const int64_t lo = (window - 1) / 2, hi = window / 2;
  for (int64_t r = 0; r < h; ++r) {
    const int64_t r0 = std::max<int64_t>(0, r - lo), r1 = std::min<int64_t>(h, r + hi + 1);
    for (int64_t c = 0; c < w; ++c) {
      const int64_t c0 = std::max<int64_t>(0, c - lo), c1 = std::min<int64_t>(w, c + hi + 1);
      const double s = sat[r1 * (w + 1) + c1] - sat[r0 * (w + 1) + c1] - sat[r1 * (w + 1) + c0] + sat[r0 * (w + 1) + c0];
      out[r * w + c] = static_cast<float>(std::max(0.0, s) / static_cast<double>((r1 - r0) * (c1 - c0)));
    }
  }
}
}  // namespace

void anm_scores(const float* diff, int64_t n, int64_t h, int64_t w, float threshold, int64_t half_window,
                float* signed_mean, float* abs_mean, int64_t* peaks, int n_threads) {
  check_dims(n, h, w);
  STEMROI_CHECK(half_window >= 0, "half_window must be >= 0, got ", half_window);
  STEMROI_CHECK(threshold >= 0 && std::isfinite(threshold), "threshold must be finite and >= 0, got ", threshold);
  OmpExceptionCapture capture;
#pragma omp parallel for schedule(static) num_threads(resolve_n_threads(n_threads))
  for (int64_t i = 0; i < n; ++i) {
    capture.run([&] {
      const float* d = diff + i * h * w;
      auto kept = [&](int64_t k) { return std::fabs(d[k]) < threshold ? 0.0f : d[k]; };
      int64_t best = 0;
      float best_abs = -1.0f;
      for (int64_t k = 0; k < h * w; ++k) {
        const float a = std::fabs(kept(k));
        if (std::isnan(a)) throw ValueError(concat("difference image ", i, " contains NaN"));
        if (a > best_abs) {
          best_abs = a;
          best = k;
        }
      }
      const int64_t pr = best / w, pc = best % w;
      const int64_t r0 = std::max<int64_t>(0, pr - half_window), r1 = std::min<int64_t>(h - 1, pr + half_window);
      const int64_t c0 = std::max<int64_t>(0, pc - half_window), c1 = std::min<int64_t>(w - 1, pc + half_window);
      double s = 0.0, sa = 0.0;
      for (int64_t r = r0; r <= r1; ++r)
        for (int64_t c = c0; c <= c1; ++c) {
          const float v = kept(r * w + c);
          s += v;
          sa += std::fabs(v);
        }
      const double count = static_cast<double>((r1 - r0 + 1) * (c1 - c0 + 1));
      signed_mean[i] = static_cast<float>(s / count);
      abs_mean[i] = static_cast<float>(sa / count);
      peaks[2 * i] = pr;
      peaks[2 * i + 1] = pc;
    });
  }
  capture.rethrow();
}

void local_energy_maps(const float* diff, int64_t n, int64_t h, int64_t w, int64_t window, float* out,
                       int n_threads) {
  check_dims(n, h, w);
  STEMROI_CHECK(window >= 1, "window must be >= 1, got ", window);
  OmpExceptionCapture capture;
#pragma omp parallel num_threads(resolve_n_threads(n_threads))
  {
    std::vector<double> sat;
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      capture.run([&] { energy_map_one(diff + i * h * w, h, w, window, sat, out + i * h * w); });
  }
  capture.rethrow();
}

void local_energy_scores(const float* diff, int64_t n, int64_t h, int64_t w, int64_t window, float* scores,
                         int64_t* peaks, int n_threads) {
  check_dims(n, h, w);
  STEMROI_CHECK(window >= 1, "window must be >= 1, got ", window);
  OmpExceptionCapture capture;
#pragma omp parallel num_threads(resolve_n_threads(n_threads))
  {
    std::vector<double> sat;
    std::vector<float> map(h * w);
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i)
      capture.run([&] {
        energy_map_one(diff + i * h * w, h, w, window, sat, map.data());
        int64_t best = 0;
        for (int64_t k = 1; k < h * w; ++k)
          if (map[k] > map[best]) best = k;
        if (std::isnan(map[best])) throw ValueError(concat("difference image ", i, " contains NaN"));
        scores[i] = std::sqrt(map[best]);
        peaks[2 * i] = best / w;
        peaks[2 * i + 1] = best % w;
      });
  }
  capture.rethrow();
}

}  // namespace stemroi
