// VGG16 (Simonyan & Zisserman, configuration D) as a LibTorch module whose
// parameter names equal torchvision's state dict (`features.0.weight`, ...,
// `classifier.6.bias`), plus the patch-embedding inference path of the VGG16
// study: resize -> grey to 3 channels -> normalisation preset -> network ->
// pooled features, batched, threaded, on mkldnn (oneDNN) blocked tensors with
// pre-reordered weights, optionally in bfloat16, and a dense mode that runs
// the network once over a whole image and pools every window from the map.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "stemroi/backbone.hpp"
#include "stemroi/callbacks.hpp"
#include "stemroi/normalization.hpp"
#include "stemroi/preprocess.hpp"

namespace stemroi {

struct VGG16Options {
  // Build torchvision's classifier head (avgpool 7x7 -> 4096 -> 4096 -> num_classes).
  bool include_top = false;
  int64_t num_classes = 1000;
  // Normalisation preset the weights expect ("torchvision" for torchvision's
  // weights, "caffe" for Keras'); used when an extraction asks for none.
  std::string preprocessing = "torchvision";
};

// How features are taken from the network (see VGG16Impl::extract).
struct VGG16FeatureOptions {
  // Taps, concatenated in this order: "block{b}_pool" (alias "block{b}") or
  // "block{b}_conv{i}" (after its ReLU, as in Keras), b = 1..5.
  std::vector<std::string> layers{"block5_pool"};
  std::string pooling = "avg";   // "avg" (global average), "max", "flatten"
  int64_t input_size = 224;      // patches are resized to this; <= 0 keeps their size
  std::string preprocessing;     // preset name; empty: the model's own
  int64_t batch_size = 16;
  int n_threads = 0;             // <= 0: all available
  std::string dtype = "float32";  // or "bfloat16" (CPU: oneDNN with AVX512-BF16 when present)
  // "auto" (CPU: mkldnn; CUDA: channels_last), "mkldnn", "channels_last",
  // "eager" (plain NCHW module forward, the torchvision reference path).
  std::string backend = "auto";
  std::string device = "cpu";    // "cpu", "cuda", "cuda:N" or "auto" (parse_network_device)
  // Dense mode only: upper bound of the bytes of one first-block activation
  // of a strip of the image (the image is processed in strips with a halo,
  // which gives the same result as one pass over the whole image).
  int64_t dense_strip_bytes = int64_t(1) << 30;
};

struct DenseFeatures {
  torch::Tensor features;  // (n_windows, d) float32, windows row-major
  torch::Tensor origins;   // (n_windows, 2) int64 (row, col) of each window's top-left pixel
};

// One tap of the network: position in `features` after which it is read and
// its spatial stride relative to the input.
struct VGG16Tap {
  std::string name;     // canonical: "block5_pool", "block3_conv2"
  int64_t index;        // index in the features Sequential whose output is tapped
  int64_t channels;
  int64_t stride;       // input pixels per map cell
};
VGG16Tap vgg16_tap(const std::string& layer);

class VGG16Impl : public Backbone {
 public:
  explicit VGG16Impl(VGG16Options options = {});

  // Backbone: normalised (n, 3, H, W) -> block5_pool map (n, 512, H/32, W/32),
  // through the registered modules (autograd-capable, any device).
  torch::Tensor features(const torch::Tensor& x) override;
  int64_t out_channels() const override { return 512; }
  std::string preprocessing() const override { return options_.preprocessing; }
  std::vector<std::string> stages() const override;
  std::vector<torch::Tensor> stage_parameters(const std::string& stage) override;
  std::string architecture() const override { return "vgg16"; }

  // torchvision's forward: features -> adaptive avgpool 7x7 -> classifier
  // logits (n, num_classes); needs include_top.
  torch::Tensor forward(const torch::Tensor& x);

  // Maps at the given taps of a normalised batch (module path, autograd-capable).
  std::vector<torch::Tensor> feature_maps(const torch::Tensor& x, const std::vector<VGG16Tap>& taps);

  // Seeded torchvision initialisation (kaiming_normal fan_out/relu convs,
  // zero biases, N(0, 0.01) linears): untrained weights for tests/baselines.
  void reset_parameters(uint64_t seed);
  void set_preprocessing(const std::string& preset);
  const VGG16Options& options() const { return options_; }

  // Feature length for the options and a patch size (h, w).
  int64_t feature_dim(const VGG16FeatureOptions& opt, int64_t h, int64_t w) const;

  // Patches (n, h, w) / (n, 1|3, h, w) float on [0, 1] -> (n, d) float32 CPU
  // tensor. Batches of opt.batch_size under InferenceMode and
  // TorchThreadsGuard; polls InterruptCallback::check() and calls
  // progress(done, n) after every batch.
  torch::Tensor extract(const torch::Tensor& patches, const VGG16FeatureOptions& opt,
                        const ProgressFn& progress = {});

  // Dense mode for windows of `patch` pixels every `stride` pixels of a grey
  // image (H, W) on [0, 1]: the image is resized by input_size / patch, the
  // network runs once over it (in strips with a halo that makes the strips
  // exact), and each window's features are the area-weighted average of the
  // map cells its resized footprint covers. pooling must be "avg". Equals
  // extract() up to the context the network sees beyond each window's border
  // (per-patch inputs are zero-padded there) and the bilinear edge pixels:
  // a window that is the whole image equals extract(). The strips repeat only
  // their halo rows; the result equals one pass over the image to rounding.
  DenseFeatures dense(const torch::Tensor& image, int64_t patch, int64_t stride,
                      const VGG16FeatureOptions& opt, const ProgressFn& progress = {});

  torch::nn::Sequential features_{nullptr};    // registered as "features"
  torch::nn::Sequential classifier_{nullptr};  // registered as "classifier" (include_top)

 private:
  struct Packed {  // conv weights reordered for oneDNN, per dtype
    c10::ScalarType dtype = torch::kFloat32;
    std::vector<torch::Tensor> weight, bias;
    std::vector<std::pair<const void*, uint32_t>> signature;  // data_ptr/version of the source weights
  };
  // Shared so that a concurrent call repacking another dtype cannot free the
  // weights a running extraction uses (the bindings release the GIL).
  std::shared_ptr<const Packed> packed(c10::ScalarType dtype);
  std::vector<std::pair<const void*, uint32_t>> weight_signature() const;
  // Normalised batch -> maps at taps (sorted by index), using the backend.
  std::vector<torch::Tensor> run_taps(const torch::Tensor& x, const std::vector<VGG16Tap>& taps,
                                      const std::string& backend, c10::ScalarType dtype);

  VGG16Options options_;
  std::vector<torch::nn::Conv2d> convs_;
  std::vector<int64_t> conv_index_;  // position of each conv in features_
  std::vector<std::shared_ptr<const Packed>> packed_;
  std::mutex packed_mutex_;
};
TORCH_MODULE(VGG16);

// The 13 conv layers' torchvision indices and Keras names, in order
// ("features.0" <-> "block1_conv1", ...), for the weight converters.
const std::vector<std::pair<int64_t, std::string>>& vgg16_conv_layers();

}  // namespace stemroi
