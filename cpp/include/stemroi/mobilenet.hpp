// MobileNetV2 (Sandler et al. 2018) with torchvision's module layout and
// parameter names (features.0.0.weight ... classifier.1.weight), so a
// torchvision state dict (e.g. mobilenet_v2-b0353104.pth, converted in Python)
// loads with name and shape checks. Implements stemroi::Backbone: features()
// gives (n, 1280, H/32, W/32); the expected input normalisation is "tf"
// ([-1, 1]; the study fed [0, 1]). Training on labelled patches goes through
// the patch classifier (PatchNet + train_patch_net, classifier.hpp) with
// make_backbone("mobilenet_v2").
#pragma once
#include <torch/torch.h>

#include <string>
#include <vector>

#include "stemroi/backbone.hpp"
#include "stemroi/torch_io.hpp"

namespace stemroi {

// Conv2d + BatchNorm2d + ReLU6 as a Sequential (children "0", "1", "2" as in
// torchvision) with a concrete forward, so it can be nested in a Sequential.
class ConvBNReLU6Impl : public torch::nn::SequentialImpl {
 public:
  ConvBNReLU6Impl(int64_t in, int64_t out, int64_t kernel, int64_t stride, int64_t groups);
  torch::Tensor forward(torch::Tensor x) { return torch::nn::SequentialImpl::forward(x); }
};
TORCH_MODULE(ConvBNReLU6);

class InvertedResidualImpl : public torch::nn::Module {
 public:
  InvertedResidualImpl(int64_t in, int64_t out, int64_t stride, int64_t expand_ratio);
  torch::Tensor forward(const torch::Tensor& x);

 private:
  bool use_residual_;
  torch::nn::Sequential conv{nullptr};
};
TORCH_MODULE(InvertedResidual);

struct MobileNetV2Config {
  int64_t num_classes = 1000;
  double dropout = 0.2;
};

class MobileNetV2Impl : public Backbone {
 public:
  explicit MobileNetV2Impl(const MobileNetV2Config& config = {});
  // Normalised input (n, 3, H, W) -> logits (n, num_classes), as torchvision.
  torch::Tensor forward(const torch::Tensor& x);
  torch::Tensor features(const torch::Tensor& x) override;
  int64_t out_channels() const override { return 1280; }
  std::string preprocessing() const override { return "tf"; }
  // "stage1" (features.0-1, stride 2), "stage2" (2-3), "stage3" (4-6),
  // "stage4" (7-13), "stage5" (14-17), "head" (features.18).
  std::vector<std::string> stages() const override;
  std::vector<torch::Tensor> stage_parameters(const std::string& stage) override;
  std::string architecture() const override { return "mobilenet_v2"; }
  const MobileNetV2Config& config() const { return config_; }
  torch::nn::Linear classifier_linear() { return linear_; }

  // Loads a torchvision state dict. With include_classifier=false the
  // classifier.* entries are ignored (transfer to another number of classes).
  void load_torchvision_state(const StateDict& state, bool include_classifier, const std::string& origin);

  torch::nn::Sequential features_seq{nullptr};
  torch::nn::Sequential classifier{nullptr};

 private:
  MobileNetV2Config config_;
  torch::nn::Linear linear_{nullptr};
};
TORCH_MODULE(MobileNetV2);

MobileNetV2 make_mobilenet_v2(const MobileNetV2Config& config, uint64_t seed);

}  // namespace stemroi
