#include "stemroi/mobilenet.hpp"

#include <mutex>

#include "stemroi/errors.hpp"

namespace stemroi {

namespace {
namespace F = torch::nn::functional;

std::mutex& seed_mutex() {
  static std::mutex m;
  return m;
}

// stage name -> [first, last] index into features
const std::vector<std::pair<std::string, std::pair<int, int>>>& stage_table() {
  static const std::vector<std::pair<std::string, std::pair<int, int>>> t = {
      {"stage1", {0, 1}}, {"stage2", {2, 3}}, {"stage3", {4, 6}},
      {"stage4", {7, 13}}, {"stage5", {14, 17}}, {"head", {18, 18}}};
  return t;
}
}  // namespace

ConvBNReLU6Impl::ConvBNReLU6Impl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups) {
  push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel)
                                  .stride(stride)
                                  .padding((kernel - 1) / 2)
                                  .groups(groups)
                                  .bias(false)));
  push_back(torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(out)));
  push_back(torch::nn::ReLU6());
}

InvertedResidualImpl::InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t t)
    : use_residual_(stride == 1 && in == out) {
  const int64_t hidden = in * t;
  conv = torch::nn::Sequential();
  if (t != 1) conv->push_back(ConvBNReLU6(in, hidden, 1, 1, 1));
  conv->push_back(ConvBNReLU6(hidden, hidden, 3, stride, hidden));
  conv->push_back(torch::nn::Conv2d(torch::nn::Conv2dOptions(hidden, out, 1).bias(false)));
  conv->push_back(torch::nn::BatchNorm2d(torch::nn::BatchNorm2dOptions(out)));
  register_module("conv", conv);
}

torch::Tensor InvertedResidualImpl::forward(const torch::Tensor& x) {
  return use_residual_ ? x + conv->forward(x) : conv->forward(x);
}

MobileNetV2Impl::MobileNetV2Impl(const MobileNetV2Config& c) : config_(c) {
  STEMROI_CHECK(c.num_classes >= 1, "num_classes must be >= 1, got ", c.num_classes);
  STEMROI_CHECK(c.dropout >= 0 && c.dropout < 1, "dropout must be in [0, 1), got ", c.dropout);
  features_seq = torch::nn::Sequential();
  features_seq->push_back(ConvBNReLU6(3, 32, 3, 2, 1));
  const int64_t settings[7][4] = {{1, 16, 1, 1},  {6, 24, 2, 2},  {6, 32, 3, 2}, {6, 64, 4, 2},
                                  {6, 96, 3, 1},  {6, 160, 3, 2}, {6, 320, 1, 1}};
  int64_t in = 32;
  for (const auto& s : settings) {
    for (int64_t i = 0; i < s[2]; ++i) {
      features_seq->push_back(InvertedResidual(in, s[1], i == 0 ? s[3] : 1, s[0]));
      in = s[1];
    }
  }
  features_seq->push_back(ConvBNReLU6(in, 1280, 1, 1, 1));
  register_module("features", features_seq);
  linear_ = torch::nn::Linear(1280, c.num_classes);
  classifier = torch::nn::Sequential(torch::nn::Dropout(c.dropout), linear_);
  register_module("classifier", classifier);
  // torchvision's initialisation
  for (auto& m : modules(false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      torch::nn::init::kaiming_normal_(conv->weight, 0.0, torch::kFanOut);
      if (conv->bias.defined()) torch::nn::init::zeros_(conv->bias);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      torch::nn::init::ones_(bn->weight);
      torch::nn::init::zeros_(bn->bias);
    } else if (auto* lin = m->as<torch::nn::Linear>()) {
      torch::nn::init::normal_(lin->weight, 0.0, 0.01);
      torch::nn::init::zeros_(lin->bias);
    }
  }
}

torch::Tensor MobileNetV2Impl::features(const torch::Tensor& x) {
  STEMROI_CHECK(x.dim() == 4 && x.size(1) == 3, "MobileNetV2 input must be (n, 3, H, W), got ",
                shape_str(x.sizes().vec()));
  STEMROI_CHECK(x.size(2) >= 32 && x.size(3) >= 32, "MobileNetV2 input must be at least 32 x 32, got ",
                shape_str(x.sizes().vec()));
  return features_seq->forward(x);
}

torch::Tensor MobileNetV2Impl::forward(const torch::Tensor& x) {
  auto f = F::adaptive_avg_pool2d(features(x), F::AdaptiveAvgPool2dFuncOptions(1)).flatten(1);
  return classifier->forward(f);
}

std::vector<std::string> MobileNetV2Impl::stages() const {
  std::vector<std::string> out;
  for (const auto& s : stage_table()) out.push_back(s.first);
  return out;
}

std::vector<torch::Tensor> MobileNetV2Impl::stage_parameters(const std::string& stage) {
  for (const auto& s : stage_table()) {
    if (s.first != stage) continue;
    std::vector<torch::Tensor> out;
    for (int i = s.second.first; i <= s.second.second; ++i)
      for (auto& p : features_seq->ptr(i)->parameters()) out.push_back(p);
    return out;
  }
  std::string names;
  for (const auto& s : stage_table()) names += (names.empty() ? "" : ", ") + s.first;
  throw ValueError(concat("unknown MobileNetV2 stage '", stage, "' (expected one of ", names, ")"));
}

void MobileNetV2Impl::load_torchvision_state(const StateDict& state, bool include_classifier,
                                             const std::string& origin) {
  if (include_classifier) {
    load_module_state(*this, state, /*strict=*/true, origin);
    return;
  }
  // features from the file, the classifier kept as it is (new head)
  StateDict merged;
  for (const auto& [k, v] : state)
    if (k.rfind("classifier.", 0) != 0) merged[k] = v;
  for (const auto& [k, v] : module_state(*this))
    if (k.rfind("classifier.", 0) == 0) merged[k] = v.detach().clone();
  load_module_state(*this, merged, /*strict=*/true, concat(origin, " (classifier.* ignored)"));
}

MobileNetV2 make_mobilenet_v2(const MobileNetV2Config& config, uint64_t seed) {
  std::lock_guard<std::mutex> lock(seed_mutex());
  torch::manual_seed(seed);
  return MobileNetV2(config);
}

}  // namespace stemroi
