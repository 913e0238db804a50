// A small convolutional backbone for 64x64 patches, trained from scratch: the
// offline default when no pretrained ImageNet weights are available (demo,
// fast tests). Four blocks of (conv3x3-BN-ReLU) x2 + maxpool 2, widths
// w, 2w, 4w, 8w; input normalisation "unit" ([0, 1] as given).
#pragma once
#include <torch/torch.h>

#include <memory>
#include <string>
#include <vector>

#include "stemroi/backbone.hpp"

namespace stemroi {

struct SmallCNNOptions {
  int64_t width = 16;    // channels of the first block
  int64_t n_blocks = 4;  // each halves the resolution
};

class SmallCNNImpl : public Backbone {
 public:
  explicit SmallCNNImpl(SmallCNNOptions options = {});
  torch::Tensor features(const torch::Tensor& x) override;
  int64_t out_channels() const override;
  std::string preprocessing() const override { return "unit"; }
  std::vector<std::string> stages() const override;
  std::vector<torch::Tensor> stage_parameters(const std::string& stage) override;
  std::string architecture() const override { return "small_cnn"; }
  // Seeded He initialisation of the convolutions (BatchNorm to identity).
  void reset_parameters(uint64_t seed);
  const SmallCNNOptions& options() const { return options_; }

 private:
  SmallCNNOptions options_;
  std::vector<torch::nn::Sequential> blocks_;  // registered as "block1".."blockN"
};
TORCH_MODULE(SmallCNN);

// Backbones the classifier can build by name, with seeded random weights:
// "small_cnn", and "vgg16" / "mobilenet_v2" when those areas are built in.
std::shared_ptr<Backbone> make_backbone(const std::string& name, uint64_t seed);
std::vector<std::string> available_backbones();

}  // namespace stemroi
