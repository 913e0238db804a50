#include "stemroi/preprocess.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "stemroi/callbacks.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"

namespace stemroi {

ResizeMethod parse_resize_method(const std::string& name) {
  if (name == "bilinear" || name == "bilinear_tf") return ResizeMethod::Bilinear;
  if (name == "bilinear_tf1") return ResizeMethod::BilinearTF1;
  if (name == "nearest") return ResizeMethod::Nearest;
  throw ValueError(concat("method must be 'bilinear', 'bilinear_tf', 'bilinear_tf1' or 'nearest', got '", name, "'"));
}

namespace {

// Below this many output elements one thread is faster than waking a team
// (on a loaded machine a wake-up can cost milliseconds).
constexpr int64_t kMinParallelElements = int64_t(1) << 16;
// Images per parallel region in the long loops; the interrupt callback is
// polled between regions.
constexpr int64_t kInterruptChunk = 1024;

// Source indices and weights along one axis; W is the arithmetic type
// (float for float32 data as in torch's CPU kernel, double for float64).
template <typename W>
struct AxisTable {
  std::vector<int64_t> i0, i1;
  std::vector<W> w0, w1;
};

template <typename W>
AxisTable<W> linear_table(int64_t in, int64_t out, ResizeMethod method) {
  AxisTable<W> t;
  t.i0.resize(out);
  t.i1.resize(out);
  t.w0.resize(out);
  t.w1.resize(out);
  const W scale = static_cast<W>(in) / static_cast<W>(out);
  for (int64_t i = 0; i < out; ++i) {
    W src;
    if (method == ResizeMethod::Bilinear) {
      src = scale * (static_cast<W>(i) + W(0.5)) - W(0.5);
      if (src < 0) src = 0;
    } else {  // legacy TF1: top-left aligned
      src = scale * static_cast<W>(i);
    }
    int64_t i0 = static_cast<int64_t>(src);  // src >= 0: truncation == floor
    if (i0 > in - 1) i0 = in - 1;
    const W lambda = std::min(std::max(src - static_cast<W>(i0), W(0)), W(1));
    t.i0[i] = i0;
    t.i1[i] = i0 < in - 1 ? i0 + 1 : i0;
    t.w0[i] = W(1) - lambda;
    t.w1[i] = lambda;
  }
  return t;
}

// PIL's ImagingScaleAffine: xo = scale * 0.5, then xo += scale per pixel (double).
std::vector<int64_t> nearest_table(int64_t in, int64_t out) {
  std::vector<int64_t> idx(out);
  const double scale = static_cast<double>(in) / static_cast<double>(out);
  double xo = scale * 0.5;
  for (int64_t i = 0; i < out; ++i) {
    int64_t j = xo < 0.0 ? -1 : static_cast<int64_t>(xo);
    idx[i] = std::min<int64_t>(std::max<int64_t>(j, 0), in - 1);
    xo += scale;
  }
  return idx;
}

template <typename T>
using Arith = std::conditional_t<std::is_same_v<T, double>, double, float>;

// One image, bilinear (either centring) with a two-row cache of
// horizontally interpolated input rows.
template <typename T>
void resize_linear_one(const T* in, T* out, int64_t h, int64_t w, int64_t oh, int64_t ow, const AxisTable<Arith<T>>& ty,
                       const AxisTable<Arith<T>>& tx, std::vector<Arith<T>>& row_a, std::vector<Arith<T>>& row_b) {
  using W = Arith<T>;
  int64_t cached_a = -1, cached_b = -1;
  auto hinterp = [&](int64_t r, std::vector<W>& buf) {
    const T* src = in + r * w;
    for (int64_t x = 0; x < ow; ++x) {
      W v = static_cast<W>(src[tx.i0[x]]) * tx.w0[x];
      v += static_cast<W>(src[tx.i1[x]]) * tx.w1[x];
      buf[x] = v;
    }
  };
  for (int64_t y = 0; y < oh; ++y) {
    const int64_t r0 = ty.i0[y], r1 = ty.i1[y];
    if (cached_a != r0) {
      if (cached_b == r0) {
        std::swap(row_a, row_b);
        std::swap(cached_a, cached_b);
      } else {
        hinterp(r0, row_a);
        cached_a = r0;
      }
    }
    if (cached_b != r1) {
      hinterp(r1, row_b);
      cached_b = r1;
    }
    const W wy0 = ty.w0[y], wy1 = ty.w1[y];
    T* dst = out + y * ow;
    for (int64_t x = 0; x < ow; ++x) {
      W v = row_a[x] * wy0;
      v += row_b[x] * wy1;
      dst[x] = static_cast<T>(v);
    }
  }
}

template <typename T>
void resize_nearest_one(const T* in, T* out, int64_t w, int64_t oh, int64_t ow, const std::vector<int64_t>& iy,
                        const std::vector<int64_t>& ix) {
  for (int64_t y = 0; y < oh; ++y) {
    const T* src = in + iy[y] * w;
    T* dst = out + y * ow;
    for (int64_t x = 0; x < ow; ++x) dst[x] = src[ix[x]];
  }
}

void check_sizes(int64_t n, int64_t h, int64_t w, int64_t oh, int64_t ow) {
  STEMROI_CHECK(n >= 0 && h >= 1 && w >= 1, "resize needs images of at least 1 x 1, got ", n, " images of ", h, " x ",
                w);
  STEMROI_CHECK(oh >= 1 && ow >= 1, "output size must be >= 1, got ", shape_str({oh, ow}));
}

// Index/weight tables of one (h, w) -> (oh, ow) resize, shared by all threads;
// each thread brings its own row scratch.
template <typename T>
struct Resizer {
  int64_t h, w, oh, ow;
  ResizeMethod method;
  AxisTable<Arith<T>> ty, tx;
  std::vector<int64_t> ny, nx;
  Resizer(int64_t h_, int64_t w_, int64_t oh_, int64_t ow_, ResizeMethod m) : h(h_), w(w_), oh(oh_), ow(ow_), method(m) {
    if (m == ResizeMethod::Nearest) {
      ny = nearest_table(h, oh);
      nx = nearest_table(w, ow);
    } else {
      ty = linear_table<Arith<T>>(h, oh, m);
      tx = linear_table<Arith<T>>(w, ow, m);
    }
  }
  // thread-local scratch
  struct Scratch {
    std::vector<Arith<T>> a, b;
  };
  Scratch scratch() const { return Scratch{std::vector<Arith<T>>(ow), std::vector<Arith<T>>(ow)}; }
  void operator()(const T* in, T* out, Scratch& s) const {
    if (method == ResizeMethod::Nearest)
      resize_nearest_one(in, out, w, oh, ow, ny, nx);
    else
      resize_linear_one(in, out, h, w, oh, ow, ty, tx, s.a, s.b);
  }
};

}  // namespace

template <typename T>
void resize_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, int64_t oh, int64_t ow, ResizeMethod method,
                  int n_threads) {
  check_sizes(n, h, w, oh, ow);
  if constexpr (!std::is_floating_point_v<T>) {
    STEMROI_CHECK_TYPE(method == ResizeMethod::Nearest,
                       "bilinear resize needs float32 or float64 images; integer images support method='nearest'");
  }
  const Resizer<T> resizer(h, w, oh, ow, method);
  const int nt = resolve_n_threads(n_threads);
  // chunks of images so that Ctrl-C is honoured between them (master thread)
  for (int64_t first = 0; first < n; first += kInterruptChunk) {
    const int64_t last = std::min(n, first + kInterruptChunk);
    OmpExceptionCapture capture;
#pragma omp parallel num_threads(nt) if ((last - first) * oh * ow >= kMinParallelElements)
    {
      auto scratch = resizer.scratch();
#pragma omp for schedule(static)
      for (int64_t i = first; i < last; ++i) {
        capture.run([&] { resizer(in + i * h * w, out + i * oh * ow, scratch); });
      }
    }
    capture.rethrow();
    InterruptCallback::check();
  }
}

template <typename T>
void grey_to_rgb_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, int n_threads) {
  const int64_t plane = h * w;
  const int nt = resolve_n_threads(n_threads);
#pragma omp parallel for schedule(static) num_threads(nt) if (n * plane >= kMinParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c)
      std::memcpy(out + (i * 3 + c) * plane, in + i * plane, static_cast<size_t>(plane) * sizeof(T));
  }
}

namespace {
template <typename T>
inline T normalize_value(T x, const Normalization& p, int c) {
  return (x * static_cast<T>(p.input_scale) - static_cast<T>(p.mean[c])) / static_cast<T>(p.std[c]);
}
}  // namespace

template <typename T>
void normalize_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, const Normalization& preset,
                     int n_threads) {
  STEMROI_CHECK(!(preset.bgr && in == out), "normalize_batch: in and out must differ for a BGR preset");
  const int64_t plane = h * w;
  const int nt = resolve_n_threads(n_threads);
#pragma omp parallel for schedule(static) num_threads(nt) if (n * plane >= kMinParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    for (int c = 0; c < 3; ++c) {
      const int src_c = preset.bgr ? 2 - c : c;
      const T* s = in + (i * 3 + src_c) * plane;
      T* d = out + (i * 3 + c) * plane;
      for (int64_t k = 0; k < plane; ++k) d[k] = normalize_value(s[k], preset, c);
    }
  }
}

template <typename T>
void divide_by_max_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, int n_threads) {
  const int64_t plane = h * w;
  const int nt = resolve_n_threads(n_threads);
#pragma omp parallel for schedule(static) num_threads(nt) if (n * plane >= kMinParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const T* s = in + i * plane;
    T* d = out + i * plane;
    T mx = s[0];
    for (int64_t k = 1; k < plane; ++k) mx = std::max(mx, s[k]);
    if (mx > T(0)) {
      for (int64_t k = 0; k < plane; ++k) d[k] = s[k] / mx;
    } else if (d != s) {
      std::memcpy(d, s, static_cast<size_t>(plane) * sizeof(T));
    }
  }
}

template <typename T>
void minmax_scale_batch(const T* in, T* out, int64_t n, int64_t h, int64_t w, int n_threads) {
  const int64_t plane = h * w;
  const int nt = resolve_n_threads(n_threads);
#pragma omp parallel for schedule(static) num_threads(nt) if (n * plane >= kMinParallelElements)
  for (int64_t i = 0; i < n; ++i) {
    const T* s = in + i * plane;
    T* d = out + i * plane;
    T lo = s[0], hi = s[0];
    for (int64_t k = 1; k < plane; ++k) {
      lo = std::min(lo, s[k]);
      hi = std::max(hi, s[k]);
    }
    const T range = hi - lo;
    if (range > T(0)) {
      for (int64_t k = 0; k < plane; ++k) d[k] = (s[k] - lo) / range;
    } else {
      std::fill(d, d + plane, T(0));
    }
  }
}

void network_input_batch(const float* in, float* out, int64_t n, int64_t c, int64_t h, int64_t w, int64_t oh,
                         int64_t ow, const Normalization& preset, ResizeMethod method, int n_threads) {
  STEMROI_CHECK(c == 1 || c == 3, "network input needs 1 (grey) or 3 (RGB) input channels, got ", c);
  check_sizes(n, h, w, oh, ow);
  const bool resample = oh != h || ow != w;
  const Resizer<float> resizer(h, w, resample ? oh : 1, resample ? ow : 1, method);
  const int64_t in_plane = h * w, out_plane = oh * ow;
  const int nt = resolve_n_threads(n_threads);
  for (int64_t first = 0; first < n; first += kInterruptChunk) {
    const int64_t last = std::min(n, first + kInterruptChunk);
    OmpExceptionCapture capture;
#pragma omp parallel num_threads(nt) if ((last - first) * out_plane >= kMinParallelElements)
    {
      auto scratch = resizer.scratch();
      std::vector<float> resized(resample ? static_cast<size_t>(c * out_plane) : 0);
#pragma omp for schedule(static)
      for (int64_t i = first; i < last; ++i) {
        capture.run([&] {
          const float* sized = in + i * c * in_plane;
          if (resample) {
            for (int64_t k = 0; k < c; ++k)
              resizer(in + (i * c + k) * in_plane, resized.data() + k * out_plane, scratch);
            sized = resized.data();
          }
          for (int oc = 0; oc < 3; ++oc) {
            const int64_t src_c = c == 1 ? 0 : (preset.bgr ? 2 - oc : oc);
            const float* s = sized + src_c * out_plane;
            float* d = out + (i * 3 + oc) * out_plane;
            for (int64_t k = 0; k < out_plane; ++k) d[k] = normalize_value(s[k], preset, oc);
          }
        });
      }
    }
    capture.rethrow();
    InterruptCallback::check();
  }
}

namespace {
// The patches of network_input / network_input_torch, checked, as a contiguous
// float32 (n, c, h, w) tensor on `device` (c = 1 or 3).
torch::Tensor checked_nchw(const torch::Tensor& patches, const torch::Device& device) {
  STEMROI_CHECK(patches.dim() == 3 || patches.dim() == 4,
                "patches: expected (n, h, w) or (n, c, h, w), got shape ", shape_str(patches.sizes().vec()));
  STEMROI_CHECK(!patches.requires_grad(), "network input is not differentiable; pass a tensor without gradient");
  auto x = (patches.dim() == 3 ? patches.unsqueeze(1) : patches)
               .to(device, torch::kFloat32, /*non_blocking=*/false, /*copy=*/false)
               .contiguous();
  STEMROI_CHECK(x.size(1) == 1 || x.size(1) == 3, "patches: expected 1 or 3 channels, got shape ",
                shape_str(patches.sizes().vec()));
  STEMROI_CHECK(x.size(0) > 0 && x.size(2) > 0 && x.size(3) > 0, "patches: empty array of shape ",
                shape_str(patches.sizes().vec()));
  return x;
}
}  // namespace

torch::Tensor network_input(const torch::Tensor& patches, int64_t oh, int64_t ow, const Normalization& preset,
                            ResizeMethod method, int n_threads) {
  auto x = checked_nchw(patches, torch::kCPU);
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  if (oh <= 0) oh = h;
  if (ow <= 0) ow = w;
  auto out = torch::empty({n, 3, oh, ow}, torch::kFloat32);
  network_input_batch(x.data_ptr<float>(), out.data_ptr<float>(), n, c, h, w, oh, ow, preset, method, n_threads);
  return out;
}

torch::Tensor network_input_torch(const torch::Tensor& patches, int64_t oh, int64_t ow, const Normalization& preset,
                                  const torch::Device& device) {
  auto x = checked_nchw(patches, device);
  const int64_t n = x.size(0), h = x.size(2), w = x.size(3);
  if (oh <= 0) oh = h;
  if (ow <= 0) ow = w;
  check_sizes(n, h, w, oh, ow);
  // half-pixel centres, no antialias: ResizeMethod::Bilinear's formula
  if (oh != h || ow != w) x = at::upsample_bilinear2d(x, {oh, ow}, /*align_corners=*/false);
  if (x.size(1) == 1)
    x = x.expand({n, 3, oh, ow});
  else if (preset.bgr)
    x = x.flip(1);
  auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  auto mean = torch::tensor({preset.mean[0], preset.mean[1], preset.mean[2]}, opts).view({1, 3, 1, 1});
  auto stdv = torch::tensor({preset.std[0], preset.std[1], preset.std[2]}, opts).view({1, 3, 1, 1});
  return ((x * preset.input_scale - mean) / stdv).contiguous();
}

torch::Tensor network_input_on(const torch::Tensor& patches, int64_t oh, int64_t ow, const Normalization& preset,
                               ResizeMethod method, int n_threads, const torch::Device& device) {
  if (device.is_cuda() && method == ResizeMethod::Bilinear) return network_input_torch(patches, oh, ow, preset, device);
  return network_input(patches, oh, ow, preset, method, n_threads).to(device);
}

template void resize_batch<float>(const float*, float*, int64_t, int64_t, int64_t, int64_t, int64_t, ResizeMethod, int);
template void resize_batch<double>(const double*, double*, int64_t, int64_t, int64_t, int64_t, int64_t, ResizeMethod,
                                   int);
template void resize_batch<uint8_t>(const uint8_t*, uint8_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                    ResizeMethod, int);
template void resize_batch<uint16_t>(const uint16_t*, uint16_t*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                     ResizeMethod, int);
template void grey_to_rgb_batch<float>(const float*, float*, int64_t, int64_t, int64_t, int);
template void grey_to_rgb_batch<double>(const double*, double*, int64_t, int64_t, int64_t, int);
template void grey_to_rgb_batch<uint8_t>(const uint8_t*, uint8_t*, int64_t, int64_t, int64_t, int);
template void grey_to_rgb_batch<uint16_t>(const uint16_t*, uint16_t*, int64_t, int64_t, int64_t, int);
template void normalize_batch<float>(const float*, float*, int64_t, int64_t, int64_t, const Normalization&, int);
template void normalize_batch<double>(const double*, double*, int64_t, int64_t, int64_t, const Normalization&, int);
template void divide_by_max_batch<float>(const float*, float*, int64_t, int64_t, int64_t, int);
template void divide_by_max_batch<double>(const double*, double*, int64_t, int64_t, int64_t, int);
template void minmax_scale_batch<float>(const float*, float*, int64_t, int64_t, int64_t, int);
template void minmax_scale_batch<double>(const double*, double*, int64_t, int64_t, int64_t, int);

}  // namespace stemroi
