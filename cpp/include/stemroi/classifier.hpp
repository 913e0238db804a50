// The patch classifier of the VGG16 study, generic over stemroi::Backbone:
//   patches (n, h, w) on [0, 1] -> resize -> grey to 3 channels -> preset
//   -> backbone.features -> global average pool -> Dropout 0.4 -> Dense 256
//   ReLU (L2 1e-4 on its kernel) -> Dropout 0.4 -> Dense n_classes (logits)
// or, without a backbone ("head" mode), the same head on precomputed (n, d)
// features. Training is the study's staged recipe: each stage unfreezes the
// last k backbone stages, trains with Adam at its learning rate and label
// smoothing, class-balanced weights, random rot90/flips, early stopping on
// validation loss (patience, best weights restored) and the learning rate
// halved on a plateau of validation loss.
#pragma once
#include <torch/torch.h>

#include "stemroi/augment.hpp"

#include <memory>
#include <string>
#include <vector>

#include "stemroi/backbone.hpp"
#include "stemroi/callbacks.hpp"

namespace stemroi {

struct PatchNetOptions {
  int64_t n_classes = 2;
  int64_t in_features = 0;   // head mode (no backbone): feature length
  int64_t hidden = 256;      // Dense units; 0: a linear head (features -> dropout -> logits)
  double dropout = 0.4;
  int64_t input_size = 0;    // backbone input side; patches are resized to it (<= 0: kept)
  std::string preprocessing; // normalisation preset; empty: the backbone's own
  // Pooling of the backbone map: "avg" (global average, the study's) or
  // "avgmax" (average and max concatenated: keeps a small local defect's
  // response from being diluted by the surrounding lattice).
  std::string pooling = "avg";
  // Per-patch contrast before the preset: "none", or "standardize" (each patch
  // z-scored, then mapped to [0, 1] as 0.5 + 0.15 z, clamped: +-3.3 sigma at the
  // ends, so presets built for [0, 1] images still apply). On the real CdTe
  // patches, regions differ in brightness and contrast; without it a network
  // learns the region, not the defect (CdTe spatial-split accuracy 0.76 -> 1.00).
  std::string patch_contrast = "none";
};

// The "standardize" mapping above on (n, c, h, w); statistics over (h, w) per patch.
torch::Tensor standardize_contrast(const torch::Tensor& x);

class PatchNetImpl : public torch::nn::Module {
 public:
  // backbone may be null: head on features (n, in_features).
  PatchNetImpl(std::shared_ptr<Backbone> backbone, PatchNetOptions options);

  // Raw input (patches (n, h, w) / (n, 1, h, w) on [0, 1], or features (n, d))
  // -> logits (n, n_classes).
  torch::Tensor forward(const torch::Tensor& x);
  // Patches -> normalised backbone input (n, 3, S, S); identity in head mode.
  torch::Tensor prepare(const torch::Tensor& x) const;
  // Prepared input -> pooled features (n, C) (head mode: x itself).
  torch::Tensor embed(const torch::Tensor& prepared);
  torch::Tensor head(const torch::Tensor& features);

  bool has_backbone() const { return static_cast<bool>(backbone_); }
  std::shared_ptr<Backbone> backbone() const { return backbone_; }
  const PatchNetOptions& options() const { return options_; }
  std::string preprocessing() const;
  torch::nn::Linear dense() const { return dense_; }  // null for a linear head
  // The kernel the L2 penalty applies to: the Dense layer's, or the logits' for a linear head.
  torch::Tensor head_kernel() const { return dense_ ? dense_->weight : logits_->weight; }
  // Length of the pooled features (head mode: in_features).
  int64_t feature_dim() const { return feature_dim_; }

 private:
  std::shared_ptr<Backbone> backbone_;  // registered as "backbone"
  PatchNetOptions options_;
  torch::nn::Dropout drop1_{nullptr}, drop2_{nullptr};
  torch::nn::Linear dense_{nullptr}, logits_{nullptr};  // "dense", "logits"
  int64_t feature_dim_ = 0;
};
TORCH_MODULE(PatchNet);

struct TrainStage {
  int64_t unfrozen_stages = 0;  // trailing backbone stages trained (-1: all, 0: frozen backbone)
  double learning_rate = 1e-3;
  double label_smoothing = 0.05;
  int64_t max_epochs = 50;
};

struct TrainOptions {
  std::vector<TrainStage> stages{TrainStage{}};
  int64_t batch_size = 32;
  double l2 = 1e-4;             // Keras-style L2 on the Dense kernel, added to the loss
  bool class_balanced = true;   // weights n / (k * n_c)
  bool augment = true;          // random rot90 (square patches) and flips; patches only
  AugmentOptions acquisition;   // per-sample intensity/noise/blur/scale/rotation changes (augment.hpp); patches only
  int64_t patience = 7;         // early stopping on validation loss (training loss without validation data)
  int64_t plateau_patience = 3; // learning rate * plateau_factor after this many epochs without improvement
  double plateau_factor = 0.5;
  double min_learning_rate = 1e-8;
  uint64_t seed = 0;
  int n_threads = 0;
  // Self-supervised term added to the supervised loss (SimCLR's NT-Xent,
  // Chen et al. 2020): every batch is seen in two views with their own random
  // dihedral transform and acquisition changes; both views train the head, and
  // a projection head (pooled features -> 256 -> 64, built for this fit and
  // discarded after) pulls the two views of a patch together and pushes other
  // patches away. 0 disables it. Needs a backbone and augmentation (else the
  // two views are identical).
  double contrastive_weight = 0.0;
  double contrastive_temperature = 0.2;
};

struct EpochRecord {
  int64_t stage = 0;
  int64_t epoch = 0;
  double train_loss = 0;
  double val_loss = 0;      // NaN without validation data
  double val_accuracy = 0;  // NaN without validation data
  double learning_rate = 0;
};

struct TrainHistory {
  std::vector<EpochRecord> epochs;
  std::vector<int64_t> best_epoch;  // per stage, index into that stage's epochs
  std::vector<double> best_loss;    // per stage (monitored loss)
};

// Trains `net` in place. X: patches (n, h, w) float32 on [0, 1] (or features
// (n, d) in head mode); y: (n,) int64 in [0, n_classes). X_val/y_val may be
// undefined or empty. Polls InterruptCallback::check() every batch;
// progress(epochs done, max epochs in all stages) after every epoch.
// Seeds LibTorch's default generator (dropout) from options.seed and draws
// shuffling/augmentation from a local generator: with the same seed and
// thread count the result is bit-identical.
TrainHistory train_patch_net(PatchNetImpl& net, const torch::Tensor& X, const torch::Tensor& y,
                             const torch::Tensor& X_val, const torch::Tensor& y_val, const TrainOptions& options,
                             const ProgressFn& progress = {});

// Logits (n, n_classes) in eval mode, batched, under TorchThreadsGuard.
torch::Tensor predict_logits(PatchNetImpl& net, const torch::Tensor& X, int64_t batch_size, int n_threads,
                             const ProgressFn& progress = {});

// Pooled backbone features (n, C) in eval mode (head mode: X unchanged).
torch::Tensor embed_patches(PatchNetImpl& net, const torch::Tensor& X, int64_t batch_size, int n_threads);

// The 8 dihedral transforms of square patches (k in 0..7: rot90 by k % 4,
// then a left-right flip when k >= 4), applied per sample. Non-square
// patches get only the transforms that keep their shape (k in {0, 2, 4, 6}).
torch::Tensor dihedral_transform(const torch::Tensor& x, const torch::Tensor& k);

// Label-smoothed, class-weighted cross-entropy: sum_i w_i * CE(q_i, p_i) /
// sum_i w_i with q = (1 - eps) onehot + eps / K (Keras' smoothing).
torch::Tensor smoothed_cross_entropy(const torch::Tensor& logits, const torch::Tensor& y, double smoothing,
                                     const torch::Tensor& class_weights = {});

// NT-Xent of two views (n, d) each: row i of z1 and row i of z2 are the
// positive pair, the other 2n - 2 rows the negatives; rows are L2-normalised,
// similarities divided by temperature; mean over the 2n anchors.
torch::Tensor nt_xent_loss(const torch::Tensor& z1, const torch::Tensor& z2, double temperature);

}  // namespace stemroi
