#include "stemroi/pseudo_labels.hpp"

#include <algorithm>
#include <cmath>
#include <random>
#include <map>
#include <set>

#include "stemroi/errors.hpp"
#include "stemroi/filters.hpp"
#include "stemroi/parallel.hpp"

namespace stemroi {

namespace {
void check_options(const PseudoLabelOptions& o) {
  STEMROI_CHECK(std::isfinite(o.sigma) && o.sigma >= 0, "sigma must be >= 0, got ", o.sigma);
  STEMROI_CHECK(o.size >= 1, "size must be >= 1, got ", o.size);
  STEMROI_CHECK(std::isfinite(o.percentile) && o.percentile >= 0 && o.percentile <= 100,
                "percentile must be in [0, 100], got ", o.percentile);
  STEMROI_CHECK(o.method == "deviation" || o.method == "lattice",
                "method must be 'deviation' or 'lattice', got '", o.method, "'");
}
}  // namespace

void local_deviation(const float* images, float* out, int64_t n, int64_t h, int64_t w,
                     const PseudoLabelOptions& opts, int n_threads) {
  check_options(opts);
  STEMROI_CHECK(n >= 0 && h >= 1 && w >= 1, "images must be (n, h, w) with h, w >= 1, got ",
                shape_str({n, h, w}));
  const int64_t total = n * h * w;
  std::vector<float> smooth(total), local(total);
  gaussian_filter_batch<float>(images, smooth.data(), n, h, w, opts.sigma, 4.0, n_threads);
  uniform_filter_batch<float>(smooth.data(), local.data(), n, h, w, opts.size, n_threads);
  for (int64_t i = 0; i < total; ++i) out[i] = std::fabs(smooth[i] - local[i]);
}

double percentile_linear(std::vector<float> values, double q) {
  STEMROI_CHECK(!values.empty(), "percentile of an empty array");
  std::sort(values.begin(), values.end());
  const double pos = q / 100.0 * static_cast<double>(values.size() - 1);
  const auto lo = static_cast<size_t>(std::floor(pos));
  const size_t hi = std::min(lo + 1, values.size() - 1);
  const double frac = pos - static_cast<double>(lo);
  return static_cast<double>(values[lo]) + frac * (static_cast<double>(values[hi]) - values[lo]);
}

LatticeVectors estimate_lattice_vectors(const float* image, int64_t h, int64_t w, double min_period) {
  LatticeVectors out;
  if (h < 8 || w < 8) return out;
  auto x = torch::from_blob(const_cast<float*>(image), {h, w}, torch::kFloat32).to(torch::kFloat64);
  x = x - x.mean();
  auto spec = torch::fft::rfft2(x);
  const std::vector<int64_t> hw_sizes{h, w};
  auto ac = torch::fft::irfft2(spec * spec.conj(), c10::IntArrayRef(hw_sizes));
  const double ac0 = ac[0][0].item<double>();
  if (!(ac0 > 0)) return out;
  ac = torch::fft::fftshift(ac) / ac0;  // zero lag at (h/2, w/2)
  auto acc = ac.contiguous();
  const double* a = acc.data_ptr<double>();
  const int64_t cy = h / 2, cx = w / 2, ry = h / 3, rx = w / 3;
  struct Peak {
    int64_t dy, dx;
    double v, r;
  };
  std::vector<Peak> peaks;
  for (int64_t y = std::max<int64_t>(1, cy - ry); y <= std::min(h - 2, cy + ry); ++y)
    for (int64_t xx = std::max<int64_t>(1, cx - rx); xx <= std::min(w - 2, cx + rx); ++xx) {
      const double v = a[y * w + xx];
      bool is_max = true;
      for (int dy = -1; dy <= 1 && is_max; ++dy)
        for (int dx = -1; dx <= 1; ++dx)
          if ((dy || dx) && a[(y + dy) * w + xx + dx] > v) {
            is_max = false;
            break;
          }
      const double r = std::hypot(double(y - cy), double(xx - cx));
      if (is_max && r >= min_period && v > 0) peaks.push_back({y - cy, xx - cx, v, r});
    }
  if (peaks.empty()) return out;
  double vmax = 0;
  for (const auto& p : peaks) vmax = std::max(vmax, p.v);
  std::vector<Peak> strong;
  for (const auto& p : peaks)
    if (p.v >= 0.5 * vmax) strong.push_back(p);
  std::sort(strong.begin(), strong.end(), [](const Peak& p, const Peak& q) {
    return p.r != q.r ? p.r < q.r : (p.dy != q.dy ? p.dy < q.dy : p.dx < q.dx);
  });
  const Peak a1 = strong.front();
  for (const auto& p : strong) {
    const double cross = std::fabs(double(a1.dy * p.dx - a1.dx * p.dy));
    if (cross > 0.3 * a1.r * p.r) {
      out.found = true;
      out.a1y = a1.dy;
      out.a1x = a1.dx;
      out.a2y = p.dy;
      out.a2x = p.dx;
      return out;
    }
  }
  return out;
}

void pseudo_label_scores(const float* images, float* out, int64_t n, int64_t h, int64_t w,
                         const PseudoLabelOptions& opts, int n_threads) {
  check_options(opts);
  if (opts.method == "deviation") {
    local_deviation(images, out, n, h, w, opts, n_threads);
    return;
  }
  const int64_t hw = h * w;
  std::vector<float> smooth(n * hw), dev(n * hw);
  gaussian_filter_batch<float>(images, smooth.data(), n, h, w, opts.sigma, 4.0, n_threads);
  local_deviation(images, dev.data(), n, h, w, opts, n_threads);
  for (int64_t i = 0; i < n; ++i) {
    const float* g = smooth.data() + i * hw;
    float* o = out + i * hw;
    const LatticeVectors lv = estimate_lattice_vectors(g, h, w);
    if (!lv.found) {
      std::copy(dev.data() + i * hw, dev.data() + (i + 1) * hw, o);
      continue;
    }
    const int64_t t[8][2] = {{lv.a1y, lv.a1x},
                             {-lv.a1y, -lv.a1x},
                             {lv.a2y, lv.a2x},
                             {-lv.a2y, -lv.a2x},
                             {lv.a1y + lv.a2y, lv.a1x + lv.a2x},
                             {-lv.a1y - lv.a2y, -lv.a1x - lv.a2x},
                             {lv.a1y - lv.a2y, lv.a1x - lv.a2x},
                             {lv.a2y - lv.a1y, lv.a2x - lv.a1x}};
    float vals[8];
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x) {
        int k = 0;
        for (const auto& s : t) {
          const int64_t yy = y + s[0], xx = x + s[1];
          if (yy >= 0 && yy < h && xx >= 0 && xx < w) vals[k++] = g[yy * w + xx];
        }
        float ref = g[y * w + x];
        if (k > 0) {
          // Insertion sort of at most 8 values: as fast as std::sort here, and GCC 12 cannot
          // prove k <= 8 through std::sort's introsort, so it warned (-Warray-bounds) about it.
          for (int a = 1; a < k; ++a) {
            const float v = vals[a];
            int b = a - 1;
            for (; b >= 0 && v < vals[b]; --b) vals[b + 1] = vals[b];
            vals[b + 1] = v;
          }
          ref = k % 2 ? vals[k / 2] : 0.5f * (vals[k / 2 - 1] + vals[k / 2]);
        }
        o[y * w + x] = std::fabs(g[y * w + x] - ref);
      }
  }
}

void pseudo_label_masks(const float* images, uint8_t* masks, int64_t n, int64_t h, int64_t w,
                        const uint8_t* is_bulk, const PseudoLabelOptions& opts, int n_threads) {
  const int64_t hw = h * w;
  std::vector<float> dev(n * hw);
  pseudo_label_scores(images, dev.data(), n, h, w, opts, n_threads);
  for (int64_t i = 0; i < n; ++i) {
    uint8_t* m = masks + i * hw;
    if (is_bulk && is_bulk[i]) {
      std::fill(m, m + hw, uint8_t{0});
      continue;
    }
    const float* d = dev.data() + i * hw;
    const double thr = percentile_linear(std::vector<float>(d, d + hw), opts.percentile);
    for (int64_t k = 0; k < hw; ++k) m[k] = static_cast<double>(d[k]) > thr ? 1 : 0;
  }
}

MultiDefectSamples compose_multi_defect(const torch::Tensor& patches, const torch::Tensor& masks,
                                        const torch::Tensor& labels, int64_t n_classes, int64_t n_samples,
                                        int64_t max_parts, uint64_t seed) {
  STEMROI_CHECK(patches.dim() == 3, "patches must be (N, h, w), got ", shape_str(patches.sizes().vec()));
  STEMROI_CHECK(masks.sizes() == patches.sizes(), "masks must have the shape of patches ",
                shape_str(patches.sizes().vec()), ", got ", shape_str(masks.sizes().vec()));
  STEMROI_CHECK(labels.dim() == 1 && labels.size(0) == patches.size(0), "labels must be (",
                patches.size(0), ",), got ", shape_str(labels.sizes().vec()));
  STEMROI_CHECK(n_classes >= 1, "n_classes must be >= 1, got ", n_classes);
  STEMROI_CHECK(n_samples >= 0, "n_samples must be >= 0, got ", n_samples);
  STEMROI_CHECK(max_parts >= 1, "max_parts must be >= 1, got ", max_parts);
  const int64_t N = patches.size(0), h = patches.size(1), w = patches.size(2);
  STEMROI_CHECK(N >= 1, "at least one patch is needed");
  auto lab = labels.to(torch::kInt64).contiguous();
  const int64_t* lp = lab.data_ptr<int64_t>();
  // indices by label (-1 = bulk is its own group)
  std::map<int64_t, std::vector<int64_t>> by_label;
  for (int64_t i = 0; i < N; ++i) {
    STEMROI_CHECK(lp[i] >= -1 && lp[i] < n_classes, "labels must be in [-1, ", n_classes, "), got ", lp[i],
                  " at index ", i);
    by_label[lp[i]].push_back(i);
  }
  std::vector<int64_t> groups;
  for (const auto& kv : by_label) groups.push_back(kv.first);
  const int64_t parts_cap = std::min<int64_t>(max_parts, static_cast<int64_t>(groups.size()));

  auto P = patches.to(torch::kFloat32).contiguous();
  auto M = masks.to(torch::kFloat32).contiguous();
  auto images = torch::zeros({n_samples, 1, h, w});
  auto targets = torch::zeros({n_samples, n_classes + 1, h, w});
  std::mt19937_64 rng(seed);
  const int64_t hw = h * w;
  const float* pp = P.data_ptr<float>();
  const float* mp = M.data_ptr<float>();
  float* ip = images.data_ptr<float>();
  float* tp = targets.data_ptr<float>();
  for (int64_t s = 0; s < n_samples; ++s) {
    const int64_t k = 1 + static_cast<int64_t>(rng() % static_cast<uint64_t>(parts_cap));
    std::vector<int64_t> g = groups;
    // partial Fisher-Yates: the first k groups are a uniform random subset
    for (int64_t j = 0; j < k; ++j) {
      const int64_t r = j + static_cast<int64_t>(rng() % static_cast<uint64_t>(g.size() - j));
      std::swap(g[j], g[r]);
    }
    float* img = ip + s * hw;
    float* tgt = tp + s * (n_classes + 1) * hw;
    for (int64_t j = 0; j < k; ++j) {
      const auto& members = by_label[g[j]];
      const int64_t idx = members[rng() % members.size()];
      const float* src = pp + idx * hw;
      for (int64_t q = 0; q < hw; ++q) img[q] = j == 0 ? src[q] : std::max(img[q], src[q]);
      if (g[j] >= 0) {
        float* t = tgt + g[j] * hw;
        const float* m = mp + idx * hw;
        for (int64_t q = 0; q < hw; ++q) t[q] = std::max(t[q], m[q]);
      }
    }
    float* bg = tgt + n_classes * hw;
    for (int64_t q = 0; q < hw; ++q) {
      float mx = 0.f;
      for (int64_t c = 0; c < n_classes; ++c) mx = std::max(mx, tgt[c * hw + q]);
      bg[q] = 1.f - mx;
    }
  }
  return {images, targets};
}

}  // namespace stemroi
