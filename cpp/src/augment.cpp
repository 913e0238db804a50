#include "stemroi/augment.hpp"

#include <cmath>

#include "stemroi/errors.hpp"

namespace stemroi {

namespace {
namespace F = torch::nn::functional;

void check_strength(double v, double hi, const char* name) {
  STEMROI_CHECK(std::isfinite(v) && v >= 0 && v <= hi, "augmentation ", name, " must be in [0, ", hi, "], got ", v);
}

// u ~ U(-a, a), n values, float64 on the CPU
torch::Tensor symmetric(int64_t n, double a, at::Generator& gen) {
  return (torch::rand({n}, gen, torch::TensorOptions().dtype(torch::kFloat64)) * 2.0 - 1.0) * a;
}

// separable Gaussian blur with one sigma per sample (x: (n, c, h, w))
torch::Tensor blur_per_sample(const torch::Tensor& x, const torch::Tensor& sigma, double max_sigma) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  int64_t r = std::max<int64_t>(1, static_cast<int64_t>(std::ceil(3.0 * max_sigma)));
  r = std::min<int64_t>(r, std::min(h, w) - 1);  // reflect padding needs r < size
  if (r < 1) return x;
  auto t = torch::arange(-r, r + 1, torch::TensorOptions().dtype(torch::kFloat64)).view({1, -1});
  auto s = sigma.view({-1, 1}).clamp_min(1e-3);
  auto k = torch::exp(-0.5 * (t * t) / (s * s));
  k = (k / k.sum(1, true)).to(torch::kFloat32).to(x.device());  // (n, 2r + 1)
  auto kc = k.repeat_interleave(c, 0);                            // (n * c, 2r + 1)
  auto y = x.reshape({1, n * c, h, w});
  y = F::pad(y, F::PadFuncOptions({r, r, 0, 0}).mode(torch::kReflect));
  y = F::conv2d(y, kc.view({n * c, 1, 1, 2 * r + 1}), F::Conv2dFuncOptions().groups(n * c));
  y = F::pad(y, F::PadFuncOptions({0, 0, r, r}).mode(torch::kReflect));
  y = F::conv2d(y, kc.view({n * c, 1, 2 * r + 1, 1}), F::Conv2dFuncOptions().groups(n * c));
  return y.view({n, c, h, w});
}
}  // namespace

void check_augment_options(const AugmentOptions& o) {
  check_strength(o.gain, 2.0, "gain");
  check_strength(o.offset, 1.0, "offset");
  check_strength(o.gamma, 2.0, "gamma");
  check_strength(o.noise, 1.0, "noise");
  check_strength(o.blur, 8.0, "blur");
  check_strength(o.rotate, 180.0, "rotate");
  check_strength(o.shear, 1.0, "shear");
  STEMROI_CHECK(std::isfinite(o.scale) && o.scale >= 0 && o.scale < 1, "augmentation scale must be in [0, 1), got ",
                o.scale);
}

torch::Tensor augment_batch(const torch::Tensor& x_in, const AugmentOptions& o, at::Generator& gen,
                            torch::Tensor* targets) {
  check_augment_options(o);
  if (!o.any()) return x_in;
  STEMROI_CHECK(x_in.dim() == 3 || x_in.dim() == 4, "augment_batch needs (n, h, w) or (n, c, h, w), got ",
                shape_str(x_in.sizes().vec()));
  const bool flat = x_in.dim() == 3;
  auto x = (flat ? x_in.unsqueeze(1) : x_in).to(torch::kFloat32);
  const int64_t n = x.size(0);
  if (targets) {
    STEMROI_CHECK(targets->dim() == 4 && targets->size(0) == n && targets->size(2) == x.size(2) &&
                      targets->size(3) == x.size(3),
                  "augment_batch: targets must be (n, k, h, w) matching ", shape_str(x.sizes().vec()), ", got ",
                  shape_str(targets->sizes().vec()));
  }
  const auto dev = x.device();
  // one fixed sequence of draws per batch (whatever is enabled), so switching one
  // augmentation on does not change the draws of the others
  auto angle = symmetric(n, o.rotate * M_PI / 180.0, gen);
  auto zoom = torch::exp(symmetric(n, std::log1p(o.scale), gen));
  auto blur_s = torch::rand({n}, gen, torch::TensorOptions().dtype(torch::kFloat64)) * o.blur;
  auto gam = torch::exp(symmetric(n, o.gamma, gen));
  auto gain = torch::exp(symmetric(n, o.gain, gen));
  auto off = symmetric(n, o.offset, gen);
  auto noise_s = torch::rand({n}, gen, torch::TensorOptions().dtype(torch::kFloat64)) * o.noise;
  torch::Tensor noise;
  if (o.noise > 0) noise = torch::randn(x.sizes(), gen, torch::TensorOptions().dtype(torch::kFloat32));
  // drawn last and only when enabled: models trained before shear existed see the same batches
  auto shear = o.shear > 0 ? symmetric(n, o.shear, gen) : torch::zeros({n}, torch::kFloat64);

  if (o.rotate > 0 || o.scale > 0 || o.shear > 0) {
    // output pixel -> input position: shear (input column = column + u * (row - centre),
    // in affine_grid's normalised units u * h / w), then rotate by -angle and shrink by zoom
    // (zoom > 1 enlarges the content)
    auto c = torch::cos(angle) / zoom, s = torch::sin(angle) / zoom;
    auto k = shear * (static_cast<double>(x.size(2)) / static_cast<double>(x.size(3)));
    auto zero = torch::zeros({n}, torch::kFloat64);
    auto theta = torch::stack({torch::stack({c, c * k - s, zero}, 1), torch::stack({s, s * k + c, zero}, 1)}, 1)
                     .to(torch::kFloat32)
                     .to(dev);  // (n, 2, 3)
    auto grid = F::affine_grid(theta, x.sizes().vec(), false);
    x = F::grid_sample(x, grid,
                       F::GridSampleFuncOptions().mode(torch::kBilinear).padding_mode(torch::kReflection).align_corners(false));
    if (targets) {
      auto tg = F::affine_grid(theta, targets->sizes().vec(), false);
      *targets = F::grid_sample(targets->to(torch::kFloat32), tg,
                                F::GridSampleFuncOptions().mode(torch::kNearest).padding_mode(torch::kReflection).align_corners(false));
    }
  }
  if (o.blur > 0) x = blur_per_sample(x, blur_s, o.blur);
  auto per = [&](const torch::Tensor& v) { return v.to(torch::kFloat32).to(dev).view({n, 1, 1, 1}); };
  if (o.gamma > 0) x = x.clamp(0.0, 1.0).pow(per(gam));
  if (o.gain > 0) x = x * per(gain);
  if (o.offset > 0) x = x + per(off);
  if (o.noise > 0) x = x + noise.to(dev) * per(noise_s);
  x = x.clamp(0.0, 1.0);
  return flat ? x.squeeze(1).contiguous() : x.contiguous();
}

}  // namespace stemroi
