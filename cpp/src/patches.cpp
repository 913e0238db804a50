#include "stemroi/patches.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "stemroi/errors.hpp"
#include "stemroi/filters.hpp"
#include "stemroi/parallel.hpp"

namespace stemroi {

namespace {
// Below this many copied elements one thread is faster than waking a team
// (on a loaded machine a wake-up can cost milliseconds).
constexpr int64_t kMinParallelElements = int64_t(1) << 18;
}  // namespace

EdgeMode parse_edge_mode(const std::string& name) {
  if (name == "drop") return EdgeMode::Drop;
  if (name == "pad") return EdgeMode::Pad;
  if (name == "shift") return EdgeMode::Shift;
  throw ValueError(concat("edge must be 'drop', 'pad' or 'shift', got '", name, "'"));
}

const char* edge_mode_name(EdgeMode mode) {
  switch (mode) {
    case EdgeMode::Drop: return "drop";
    case EdgeMode::Pad: return "pad";
    case EdgeMode::Shift: return "shift";
  }
  return "?";
}

PatchGrid::PatchGrid(int64_t patch_size, int64_t stride, EdgeMode edge)
    : patch_(patch_size), stride_(stride <= 0 ? patch_size : stride), edge_(edge) {
  STEMROI_CHECK(patch_size >= 1, "patch_size must be >= 1, got ", patch_size);
}

void PatchGrid::check_image(int64_t h, int64_t w) const {
  STEMROI_CHECK(h >= 1 && w >= 1, "image must have at least one pixel, got shape ", shape_str({h, w}));
  if (edge_ != EdgeMode::Pad) {
    STEMROI_CHECK(h >= patch_ && w >= patch_, "patch_size must be <= image size ", shape_str({h, w}), ", got ",
                  patch_, " (use edge='pad' to pad small images)");
  }
}

std::vector<int64_t> PatchGrid::axis_origins(int64_t length, int64_t h, int64_t w) const {
  check_image(h, w);
  std::vector<int64_t> o;
  if (edge_ == EdgeMode::Pad) {
    // windows until one reaches the end: n = 1 + ceil(max(L - p, 0) / s),
    // keeping only origins inside the image (stride > patch can jump past it)
    const int64_t rest = std::max<int64_t>(length - patch_, 0);
    const int64_t n = 1 + (rest + stride_ - 1) / stride_;
    o.reserve(n);
    for (int64_t k = 0; k < n && k * stride_ < length; ++k) o.push_back(k * stride_);
    return o;
  }
  const int64_t n = 1 + (length - patch_) / stride_;
  o.reserve(n + 1);
  for (int64_t k = 0; k < n; ++k) o.push_back(k * stride_);
  if (edge_ == EdgeMode::Shift && o.back() + patch_ < length) o.push_back(length - patch_);
  return o;
}

int64_t PatchGrid::n_patches(int64_t h, int64_t w) const {
  return static_cast<int64_t>(axis_origins(h, h, w).size()) * static_cast<int64_t>(axis_origins(w, h, w).size());
}

std::vector<int64_t> PatchGrid::origins(int64_t h, int64_t w) const {
  const auto rows = axis_origins(h, h, w);
  const auto cols = axis_origins(w, h, w);
  std::vector<int64_t> out;
  out.reserve(2 * rows.size() * cols.size());
  for (int64_t r : rows)
    for (int64_t c : cols) {
      out.push_back(r);
      out.push_back(c);
    }
  return out;
}

std::pair<int64_t, int64_t> PatchGrid::row_span(int64_t h, int64_t w, int64_t start, int64_t stop) const {
  const auto rows = axis_origins(h, h, w);
  const int64_t nc = static_cast<int64_t>(axis_origins(w, h, w).size());
  const int64_t n = static_cast<int64_t>(rows.size()) * nc;
  STEMROI_CHECK(start >= 0 && start < stop && stop <= n, "patch range [start, stop) must satisfy 0 <= start < stop <= ",
                n, ", got [", start, ", ", stop, ")");
  const int64_t r_first = rows[start / nc];
  const int64_t r_last = rows[(stop - 1) / nc] + patch_;  // exclusive, may pass h for pad
  if (r_last <= h) return {r_first, r_last};
  // pad: rows past the border mirror back into the image
  int64_t lo = r_first, hi = h;
  for (int64_t r = h; r < r_last; ++r) lo = std::min(lo, reflect_index(r, h));
  return {lo, hi};
}

template <typename T>
void PatchGrid::extract(const T* band, int64_t band_row0, int64_t band_rows, int64_t h, int64_t w, int64_t start,
                        int64_t stop, T* out, bool check_finite, int n_threads) const {
  const auto rows = axis_origins(h, h, w);
  const auto cols = axis_origins(w, h, w);
  const int64_t nc = static_cast<int64_t>(cols.size());
  const auto span = row_span(h, w, start, stop);
  STEMROI_CHECK(band_row0 >= 0 && band_rows >= 0 && band_row0 <= span.first && band_row0 + band_rows >= span.second,
                "image band rows [", band_row0, ", ", band_row0 + band_rows, ") do not contain rows [", span.first,
                ", ", span.second, ") needed by patches [", start, ", ", stop, ")");
  const int64_t p = patch_;
  const int nt = resolve_n_threads(n_threads);
  // column index of every column a window may read, [0, w + p), mirrored past
  // the right border (only windows crossing it use the map: pad)
  std::vector<int64_t> mirror_col(static_cast<size_t>(w + p));
  for (int64_t c = 0; c < w + p; ++c) mirror_col[c] = reflect_index(c, w);
  const int64_t count = stop - start;
  int64_t first_bad = std::numeric_limits<int64_t>::max();
  OmpExceptionCapture capture;
  const bool parallel = count * p * p >= kMinParallelElements;
#pragma omp parallel for schedule(static) num_threads(nt) reduction(min : first_bad) if (parallel)
  for (int64_t k = 0; k < count; ++k) {
    capture.run([&] {
      const int64_t i = start + k;
      const int64_t r0 = rows[i / nc];
      const int64_t c0 = cols[i % nc];
      T* dst = out + k * p * p;
      const bool inside_cols = c0 + p <= w;
      bool bad = false;
      for (int64_t y = 0; y < p; ++y) {
        const int64_t r = r0 + y < h ? r0 + y : reflect_index(r0 + y, h);
        const T* src_row = band + (r - band_row0) * w;
        T* d = dst + y * p;
        if (inside_cols) {
          std::memcpy(d, src_row + c0, static_cast<size_t>(p) * sizeof(T));
        } else {
          for (int64_t x = 0; x < p; ++x) d[x] = src_row[mirror_col[c0 + x]];
        }
        if constexpr (std::is_floating_point_v<T>) {
          if (check_finite)
            for (int64_t x = 0; x < p; ++x) bad |= !std::isfinite(d[x]);
        }
      }
      if (bad) first_bad = std::min(first_bad, i);
    });
  }
  capture.rethrow();
  if (first_bad != std::numeric_limits<int64_t>::max()) {
    throw ValueError(concat("image contains NaN or infinity inside patch ", first_bad, " at origin (",
                            rows[first_bad / nc], ", ", cols[first_bad % nc],
                            "); clean the image first or pass allow_nan=True"));
  }
}

#define STEMROI_INSTANTIATE_EXTRACT(T)                                                                         \
  template void PatchGrid::extract<T>(const T*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, T*, bool, \
                                      int) const;
STEMROI_INSTANTIATE_EXTRACT(float)
STEMROI_INSTANTIATE_EXTRACT(double)
STEMROI_INSTANTIATE_EXTRACT(uint8_t)
STEMROI_INSTANTIATE_EXTRACT(uint16_t)
#undef STEMROI_INSTANTIATE_EXTRACT

}  // namespace stemroi
