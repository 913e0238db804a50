#include "stemroi/small_cnn.hpp"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>

#include "stemroi/errors.hpp"

#if __has_include("stemroi/vgg16.hpp")
#include "stemroi/vgg16.hpp"
#define STEMROI_HAVE_VGG16 1
#endif
#if __has_include("stemroi/mobilenet.hpp")
#include "stemroi/mobilenet.hpp"
#define STEMROI_HAVE_MOBILENET 1
#endif

namespace stemroi {

SmallCNNImpl::SmallCNNImpl(SmallCNNOptions options) : options_(options) {
  STEMROI_CHECK(options_.width >= 1, "small_cnn width must be >= 1, got ", options_.width);
  STEMROI_CHECK(options_.n_blocks >= 1 && options_.n_blocks <= 6, "small_cnn n_blocks must be in [1, 6], got ",
                options_.n_blocks);
  int64_t in = 3;
  for (int64_t b = 0; b < options_.n_blocks; ++b) {
    int64_t out = options_.width << b;
    namespace nn = torch::nn;
    nn::Sequential block(nn::Conv2d(nn::Conv2dOptions(in, out, 3).padding(1).bias(false)), nn::BatchNorm2d(out),
                         nn::ReLU(), nn::Conv2d(nn::Conv2dOptions(out, out, 3).padding(1).bias(false)),
                         nn::BatchNorm2d(out), nn::ReLU(), nn::MaxPool2d(2));
    blocks_.push_back(register_module("block" + std::to_string(b + 1), block));
    in = out;
  }
  reset_parameters(0);
}

torch::Tensor SmallCNNImpl::features(const torch::Tensor& x) {
  STEMROI_CHECK(x.dim() == 4 && x.size(1) == 3, "small_cnn input must be (n, 3, H, W), got ", shape_str(x.sizes().vec()));
  int64_t min_side = int64_t(1) << options_.n_blocks;
  STEMROI_CHECK(x.size(2) >= min_side && x.size(3) >= min_side, "small_cnn input must be at least ", min_side,
                " pixels on a side, got ", shape_str(x.sizes().vec()));
  torch::Tensor h = x;
  for (auto& b : blocks_) h = b->forward(h);
  return h;
}

int64_t SmallCNNImpl::out_channels() const { return options_.width << (options_.n_blocks - 1); }

std::vector<std::string> SmallCNNImpl::stages() const {
  std::vector<std::string> s;
  for (int64_t b = 0; b < options_.n_blocks; ++b) s.push_back("block" + std::to_string(b + 1));
  return s;
}

std::vector<torch::Tensor> SmallCNNImpl::stage_parameters(const std::string& stage) {
  for (int64_t b = 0; b < options_.n_blocks; ++b)
    if (stage == "block" + std::to_string(b + 1)) return blocks_[b]->parameters();
  throw ValueError(concat("unknown small_cnn stage '", stage, "' (expected block1..block", options_.n_blocks, ")"));
}

void SmallCNNImpl::reset_parameters(uint64_t seed) {
  torch::NoGradGuard no_grad;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* conv = m->as<torch::nn::Conv2d>()) {
      auto& w = conv->weight;
      double fan_out = double(w.size(0) * w.size(2) * w.size(3));
      // drawn on the CPU (the generator's device), then copied to the weight's device
      auto init = at::normal(0.0, std::sqrt(2.0 / fan_out), w.sizes(), gen, w.options().device(torch::kCPU));
      w.copy_(init);
    } else if (auto* bn = m->as<torch::nn::BatchNorm2d>()) {
      bn->weight.fill_(1.0);
      bn->bias.zero_();
      bn->running_mean.zero_();
      bn->running_var.fill_(1.0);
    }
  }
}

std::vector<std::string> available_backbones() {
  std::vector<std::string> names{"small_cnn"};
#ifdef STEMROI_HAVE_VGG16
  names.push_back("vgg16");
#endif
#ifdef STEMROI_HAVE_MOBILENET
  names.push_back("mobilenet_v2");
#endif
  return names;
}

std::shared_ptr<Backbone> make_backbone(const std::string& name, uint64_t seed) {
  if (name == "small_cnn") {
    auto m = std::make_shared<SmallCNNImpl>();
    m->reset_parameters(seed);
    return m;
  }
#ifdef STEMROI_HAVE_VGG16
  if (name == "vgg16") {
    auto m = std::make_shared<VGG16Impl>(VGG16Options{});
    m->reset_parameters(seed);
    return m;
  }
#endif
#ifdef STEMROI_HAVE_MOBILENET
  if (name == "mobilenet_v2") return make_mobilenet_v2(MobileNetV2Config{}, seed).ptr();
#endif
  std::string avail;
  for (const auto& n : available_backbones()) avail += (avail.empty() ? "'" : ", '") + n + "'";
  throw ValueError(concat("unknown backbone '", name, "' (available in this build: ", avail, ")"));
}

}  // namespace stemroi
