#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "stemroi/errors.hpp"
#include "stemroi/normalization.hpp"
#include "stemroi/preprocess.hpp"

using namespace stemroi;

namespace {
// Direct transcription of TF's half-pixel bilinear (double), independent of
// the kernel's torch-style formulation.
double tf_half_pixel(const std::vector<double>& img, int64_t h, int64_t w, int64_t oh, int64_t ow, int64_t y,
                     int64_t x) {
  auto axis = [](int64_t in, int64_t out, int64_t i, int64_t& lo, int64_t& hi, double& t) {
    const double src = (i + 0.5) * static_cast<double>(in) / out - 0.5;
    const double fl = std::floor(src);
    lo = std::max<int64_t>(static_cast<int64_t>(fl), 0);
    hi = std::min<int64_t>(static_cast<int64_t>(std::ceil(src)), in - 1);
    t = src - fl;
  };
  int64_t y0, y1, x0, x1;
  double ty, tx;
  axis(h, oh, y, y0, y1, ty);
  axis(w, ow, x, x0, x1, tx);
  const double top = img[y0 * w + x0] + (img[y0 * w + x1] - img[y0 * w + x0]) * tx;
  const double bottom = img[y1 * w + x0] + (img[y1 * w + x1] - img[y1 * w + x0]) * tx;
  return top + (bottom - top) * ty;
}
}  // namespace

TEST(Resize, BilinearEqualsTFHalfPixelUpAndDown) {
  const std::vector<std::array<int64_t, 4>> cases{{8, 8, 28, 28}, {28, 28, 8, 8}, {7, 13, 20, 5}, {1, 5, 3, 9}};
  for (const auto& c : cases) {
    const int64_t h = c[0], w = c[1], oh = c[2], ow = c[3];
    std::vector<double> img(h * w), out(oh * ow);
    for (int64_t i = 0; i < h * w; ++i) img[i] = std::fmod(i * 0.37, 1.0);
    resize_batch<double>(img.data(), out.data(), 1, h, w, oh, ow, ResizeMethod::Bilinear, 1);
    for (int64_t y = 0; y < oh; ++y)
      for (int64_t x = 0; x < ow; ++x) EXPECT_NEAR(out[y * ow + x], tf_half_pixel(img, h, w, oh, ow, y, x), 1e-12);
  }
}

TEST(Resize, ConstantStaysConstantAndIdentityCopies) {
  std::vector<float> img(9 * 9, 0.25f), out(31 * 17);
  for (auto m : {ResizeMethod::Bilinear, ResizeMethod::BilinearTF1, ResizeMethod::Nearest}) {
    resize_batch<float>(img.data(), out.data(), 1, 9, 9, 31, 17, m);
    for (float v : out) EXPECT_NEAR(v, 0.25f, 1e-7);
  }
  std::vector<float> ramp(6 * 6), same(36);
  for (int i = 0; i < 36; ++i) ramp[i] = static_cast<float>(i);
  resize_batch<float>(ramp.data(), same.data(), 1, 6, 6, 6, 6, ResizeMethod::Bilinear);
  EXPECT_EQ(ramp, same);
}

TEST(Resize, NearestIsPILNearest) {
  // 4 -> 3: scale 4/3, centres 0.667, 2.0, 3.33 -> 0, 2, 3
  std::vector<uint8_t> img{0, 1, 2, 3}, out(3);
  resize_batch<uint8_t>(img.data(), out.data(), 1, 1, 4, 1, 3, ResizeMethod::Nearest);
  EXPECT_EQ(out, (std::vector<uint8_t>{0, 2, 3}));
  EXPECT_THROW(resize_batch<uint8_t>(img.data(), out.data(), 1, 1, 4, 1, 3, ResizeMethod::Bilinear), TypeError);
}

TEST(Resize, LegacyTF1IsTopLeftAligned) {
  std::vector<double> img{0, 1, 2, 3}, out(8);
  resize_batch<double>(img.data(), out.data(), 1, 1, 4, 1, 8, ResizeMethod::BilinearTF1);
  const std::vector<double> expect{0, 0.5, 1, 1.5, 2, 2.5, 3, 3};
  for (int i = 0; i < 8; ++i) EXPECT_DOUBLE_EQ(out[i], expect[i]);
  EXPECT_EQ(parse_resize_method("bilinear_tf"), ResizeMethod::Bilinear);
  EXPECT_THROW(parse_resize_method("bicubic"), ValueError);
  EXPECT_THROW(resize_batch<double>(img.data(), out.data(), 1, 1, 4, 0, 8, ResizeMethod::Bilinear), ValueError);
}

TEST(NetworkInput, BatchEqualsStagedPipeline) {
  const int64_t n = 3, h = 10, w = 10, s = 23;
  std::vector<float> img(n * h * w);
  for (size_t i = 0; i < img.size(); ++i) img[i] = std::fmod(i * 0.013f, 1.0f);
  std::vector<float> resized(n * s * s), rgb(n * 3 * s * s), staged(n * 3 * s * s), fused(n * 3 * s * s);
  resize_batch<float>(img.data(), resized.data(), n, h, w, s, s, ResizeMethod::Bilinear);
  grey_to_rgb_batch<float>(resized.data(), rgb.data(), n, s, s);
  normalize_batch<float>(rgb.data(), staged.data(), n, s, s, kCaffe);
  network_input_batch(img.data(), fused.data(), n, 1, h, w, s, s, kCaffe, ResizeMethod::Bilinear, 2);
  EXPECT_EQ(staged, fused);
  // caffe: channel 0 is blue = x * 255 - 103.939
  EXPECT_FLOAT_EQ(fused[0], resized[0] * 255.0f - 103.939f);
}

TEST(NetworkInput, PresetsChannelOrderAndTorchBilinear) {
  auto grey = torch::full({1, 4, 4}, 0.5f);
  auto tv = network_input(grey, 0, 0, kTorchvision);
  ASSERT_EQ(tv.sizes(), torch::IntArrayRef({1, 3, 4, 4}));
  for (int c = 0; c < 3; ++c)
    EXPECT_NEAR(tv[0][c][1][2].item<float>(), (0.5f - kTorchvision.mean[c]) / kTorchvision.std[c], 1e-5);
  auto caffe = network_input(grey, 0, 0, kCaffe);
  for (int c = 0; c < 3; ++c) EXPECT_NEAR(caffe[0][c][0][0].item<float>(), 127.5f - kCaffe.mean[c], 1e-4);
  // RGB input: caffe reverses the channel order.
  auto rgb = torch::stack({torch::full({2, 2}, 0.1f), torch::full({2, 2}, 0.2f), torch::full({2, 2}, 0.3f)}).unsqueeze(0);
  auto bgr = network_input(rgb, 0, 0, kCaffe);
  EXPECT_NEAR(bgr[0][0][0][0].item<float>(), 0.3f * 255 - kCaffe.mean[0], 1e-3);
  EXPECT_NEAR(bgr[0][2][0][0].item<float>(), 0.1f * 255 - kCaffe.mean[2], 1e-3);
  // Resizing: bilinear align_corners=False, as torch.nn.functional.interpolate.
  auto p = torch::rand({2, 8, 8});
  auto r = network_input(p, 16, 16, kUnit);
  auto ref = torch::nn::functional::interpolate(
      p.unsqueeze(1), torch::nn::functional::InterpolateFuncOptions()
                          .size(std::vector<int64_t>{16, 16})
                          .mode(torch::kBilinear)
                          .align_corners(false));
  // same formula as torch's kernel; torch picks a different loop (and rounding) by output size
  for (int c = 0; c < 3; ++c) EXPECT_LT((r.select(1, c) - ref.select(1, 0)).abs().max().item<double>(), 1e-6);
  EXPECT_THROW(network_input(torch::zeros({2, 2, 8, 8}), 0, 0, kUnit), ValueError);
}

TEST(NetworkInput, TensorFormEqualsStagedPipelineAtAnySize) {
  const int64_t n = 2, h = 9, w = 13, oh = 20, ow = 11;
  auto x = torch::rand({n, h, w});
  auto got = network_input(x, oh, ow, kTorchvision, ResizeMethod::Bilinear, 2);
  ASSERT_EQ(got.sizes(), torch::IntArrayRef({n, 3, oh, ow}));
  std::vector<float> resized(n * oh * ow), rgb(n * 3 * oh * ow), staged(n * 3 * oh * ow);
  resize_batch<float>(x.data_ptr<float>(), resized.data(), n, h, w, oh, ow, ResizeMethod::Bilinear);
  grey_to_rgb_batch<float>(resized.data(), rgb.data(), n, oh, ow);
  normalize_batch<float>(rgb.data(), staged.data(), n, oh, ow, kTorchvision);
  EXPECT_EQ(std::vector<float>(got.data_ptr<float>(), got.data_ptr<float>() + got.numel()), staged);
  // MobileNetV2's tf preset maps [0, 1] onto [-1, 1]
  auto tf = network_input(torch::stack({torch::zeros({16, 16}), torch::ones({16, 16})}), 32, 32, kTF);
  EXPECT_FLOAT_EQ(tf[0].min().item<float>(), -1.f);
  EXPECT_FLOAT_EQ(tf[1].max().item<float>(), 1.f);
}

// The device form (network_input_on's GPU path) computes network_input's
// function: up, down and no resampling, grey and RGB, every preset.
TEST(NetworkInput, DeviceFormEqualsTheCpuPipeline) {
  std::vector<torch::Device> devices{torch::kCPU};
  if (torch::cuda::is_available()) devices.emplace_back(torch::kCUDA, 0);
  const std::vector<std::pair<int64_t, int64_t>> sizes{{37, 29}, {224, 224}, {16, 16}, {9, 13}};
  for (const auto& dev : devices)
    for (int64_t c : {1, 3})
      for (const Normalization* preset : {&kTorchvision, &kCaffe, &kTF, &kUnit})
        for (auto [oh, ow] : sizes) {
          auto x = torch::rand({3, c, 16, 16});
          auto want = network_input(x, oh, ow, *preset, ResizeMethod::Bilinear, 2);
          auto got = network_input_torch(x, oh, ow, *preset, dev);
          ASSERT_EQ(got.device(), dev);
          ASSERT_EQ(got.sizes(), want.sizes());
          const double err = (got.cpu() - want).abs().max().item<double>() / want.abs().max().item<double>();
          // LibTorch's kernels weigh in another order: a few float32 ulps, amplified by 1 / std
          EXPECT_LT(err, 5e-6) << dev << " c=" << c << " " << preset->name << " " << oh << "x" << ow;
          auto on = network_input_on(x, oh, ow, *preset, ResizeMethod::Bilinear, 2, dev);
          EXPECT_EQ(on.device(), dev);
          EXPECT_LT((on.cpu() - want).abs().max().item<double>() / want.abs().max().item<double>(), 5e-6);
        }
  EXPECT_THROW(network_input_torch(torch::zeros({2, 2, 8, 8}), 0, 0, kUnit, torch::kCPU), ValueError);
  EXPECT_THROW(network_input_torch(torch::zeros({0, 8, 8}), 0, 0, kUnit, torch::kCPU), ValueError);
  // other resize methods take the CPU path, then move: bit for bit network_input
  auto p = torch::rand({2, 8, 8});
  EXPECT_TRUE(network_input_on(p, 16, 16, kUnit, ResizeMethod::Nearest, 1, torch::kCPU)
                  .equal(network_input(p, 16, 16, kUnit, ResizeMethod::Nearest, 1)));
}

TEST(Preprocess, ZeroPatchesStayFinite) {
  std::vector<float> zeros(2 * 16, 0.0f), out(2 * 16);
  divide_by_max_batch<float>(zeros.data(), out.data(), 2, 4, 4);
  for (float v : out) EXPECT_EQ(v, 0.0f);
  std::vector<float> flat(16, 0.7f);
  minmax_scale_batch<float>(flat.data(), out.data(), 1, 4, 4);
  for (int i = 0; i < 16; ++i) EXPECT_EQ(out[i], 0.0f);
}
