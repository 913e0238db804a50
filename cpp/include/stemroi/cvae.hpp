// Convolutional variational autoencoder trained on bulk lattice crops
// (Prifti, Buban, Thind, Klie, Small 19 (2023) 2205977), following the
// TensorFlow CVAE tutorial the study builds on.
//
// Two architectures (CVAEConfig::variant):
//   "study":        encoder Conv 64/128/128, 3x3, stride 2, 'valid' padding
//                   (64 -> 31 -> 15 -> 7), Dense 2*latent; decoder Dense
//                   (s/8)^2*32 -> ConvTranspose 128/128/64, stride 2, 'same'
//                   -> ConvTranspose 1, stride 1, 'same' (logits).
//   "dataset_repo": the Ayyubi dataset repo's version: encoder convs with
//                   'same' padding (64 -> 32 -> 16 -> 8), decoder Dense (s/8)^2*64.
// TensorFlow 'same' padding is reproduced exactly: a stride-2 conv pads 0 on
// top/left and 1 on bottom/right; a stride-2 transposed conv is the full
// (2n+1) output with the last row and column dropped (output exactly 2n).
// Weights are initialised as in Keras (Glorot uniform kernels, zero biases)
// from a local generator seeded by the caller: no global RNG state is used.
#pragma once
#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "stemroi/augment.hpp"
#include "stemroi/callbacks.hpp"
#include "stemroi/model_file.hpp"

namespace stemroi {

struct CVAEConfig {
  int64_t latent_dim = 20;
  std::string variant = "study";  // "study" | "dataset_repo"
  int64_t crop_size = 64;         // multiple of 8, >= 16
  std::string to_json() const;
  static CVAEConfig from_json(const std::string& json);
  void validate() const;
};

class CVAEImpl : public torch::nn::Module {
 public:
  CVAEImpl(const CVAEConfig& config, uint64_t seed);

  // x: (n, 1, s, s) float32 in [0, 1] -> (mean, logvar), each (n, latent).
  std::pair<torch::Tensor, torch::Tensor> encode(const torch::Tensor& x);
  // z: (n, latent) -> logits (n, 1, s, s).
  torch::Tensor decode(const torch::Tensor& z);
  // Deterministic reconstruction: sigmoid(decode(mean)).
  torch::Tensor forward(const torch::Tensor& x);
  // Negative single-sample ELBO averaged over the batch:
  // -mean(log p(x|z) + log p(z) - log q(z|x)), z = mean + eps * exp(logvar / 2).
  torch::Tensor loss(const torch::Tensor& x, const torch::Tensor& eps);

  const CVAEConfig& config() const { return config_; }
  // Spatial size of the encoder's last feature map (7 for "study" at 64).
  int64_t encoded_size() const { return encoded_size_; }

 private:
  CVAEConfig config_;
  int64_t encoded_size_ = 0;
  int64_t decoder_channels_ = 32;
  torch::nn::Conv2d enc1_{nullptr}, enc2_{nullptr}, enc3_{nullptr};
  torch::nn::Linear enc_fc_{nullptr}, dec_fc_{nullptr};
  torch::nn::ConvTranspose2d dec1_{nullptr}, dec2_{nullptr}, dec3_{nullptr}, dec_out_{nullptr};
  torch::Tensor conv_same_or_valid(torch::nn::Conv2d& conv, const torch::Tensor& x);
};
TORCH_MODULE(CVAE);

// TF-'same' transposed convs (k 3) with the weights of `conv` (in, out, 3, 3):
// stride 2 maps n -> 2n exactly; stride 1 keeps the size (padding 1).
torch::Tensor conv_transpose_same_stride2(torch::nn::ConvTranspose2d& conv, const torch::Tensor& x);
torch::Tensor conv_transpose_same_stride1(torch::nn::ConvTranspose2d& conv, const torch::Tensor& x);

struct CVAETrainOptions {
  int64_t epochs = 10;
  int64_t batch_size = 16;
  double learning_rate = 1e-4;
  uint64_t seed = 0;
  int n_threads = 0;
  // per-batch augmentation of the bulk crops (augment.hpp), drawn from a
  // generator of its own (seed-derived): the VAE learns to reconstruct bulk
  // as another session acquires it (scan drift, pixel size, ...)
  AugmentOptions augment;
};

// Trains on data (n, s, s) or (n, 1, s, s) float32 in [0, 1] with Adam
// (Keras defaults: beta 0.9/0.999, eps 1e-7), shuffling each epoch with a
// seeded generator. Polls InterruptCallback::check() every batch, calls
// progress(epoch, epochs) after each epoch. Returns the mean training loss
// (negative ELBO per crop) of each epoch.
std::vector<double> train_cvae(CVAE& model, const torch::Tensor& data, const CVAETrainOptions& options,
                               const ProgressFn& progress = {});

// Reconstructions (n, s, s) of data (n, s, s), batched, deterministic (decoded mean).
torch::Tensor cvae_reconstruct(CVAE& model, const torch::Tensor& data, int64_t batch_size = 64, int n_threads = 0);
// Latent means and log-variances (n, latent) each.
std::pair<torch::Tensor, torch::Tensor> cvae_encode(CVAE& model, const torch::Tensor& data, int64_t batch_size = 64,
                                                    int n_threads = 0);
// Mean negative ELBO per crop on data, with eps drawn from `seed`.
double cvae_eval_loss(CVAE& model, const torch::Tensor& data, uint64_t seed, int64_t batch_size = 64,
                      int n_threads = 0);

// Save/load in the project's model file. `metadata` may carry preprocessing,
// model_card, etc. (JSON strings); architecture and config are set here.
void save_cvae(const std::string& path, CVAE& model, std::map<std::string, std::string> metadata);
// Returns the model and the file's metadata. Throws IOError/ValueError on a
// corrupt file, another architecture or mismatched weights.
std::pair<CVAE, std::map<std::string, std::string>> load_cvae(const std::string& path,
                                                              const std::string& expected_sha256 = "");

}  // namespace stemroi
