// The interface every image backbone implements (VGG16, MobileNetV2), so the
// patch classifier trains and fine-tunes any of them with one loop.
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

namespace stemroi {

class Backbone : public torch::nn::Module {
 public:
  ~Backbone() override = default;
  // Normalised input (n, 3, H, W) -> feature map (n, C, h, w).
  virtual torch::Tensor features(const torch::Tensor& x) = 0;
  virtual int64_t out_channels() const = 0;
  // Name of the normalisation preset the weights expect (normalization.hpp).
  virtual std::string preprocessing() const = 0;
  // Trainable stages from input to output (e.g. "block1".."block5"), for
  // staged unfreezing, and the parameters of one stage.
  virtual std::vector<std::string> stages() const = 0;
  virtual std::vector<torch::Tensor> stage_parameters(const std::string& stage) = 0;
  virtual std::string architecture() const = 0;  // "vgg16", "mobilenet_v2"
};

}  // namespace stemroi
