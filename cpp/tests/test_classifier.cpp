#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <torch/torch.h>

#include "stemroi/classifier.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/small_cnn.hpp"

using namespace stemroi;

TEST(Classifier, SmallCNNShapesAndStages) {
  auto bb = make_backbone("small_cnn", 3);
  auto y = bb->features(torch::rand({2, 3, 64, 64}));
  EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{2, 128, 4, 4}));
  EXPECT_EQ(bb->stages().size(), 4u);
  EXPECT_FALSE(bb->stage_parameters("block4").empty());
  EXPECT_THROW(bb->stage_parameters("block9"), ValueError);
  EXPECT_THROW(make_backbone("resnet9000", 0), ValueError);
}

TEST(Classifier, DihedralTransformsAreTheEightSymmetries) {
  auto x = torch::arange(16, torch::kFloat32).view({1, 4, 4}).repeat({8, 1, 1});
  auto out = dihedral_transform(x, torch::arange(8));
  EXPECT_TRUE(out[0].equal(x[0]));
  EXPECT_TRUE(out[1].equal(torch::rot90(x[0], 1, {0, 1})));
  EXPECT_TRUE(out[4].equal(x[0].flip({1})));
  for (int i = 0; i < 8; ++i)
    for (int j = i + 1; j < 8; ++j) EXPECT_FALSE(out[i].equal(out[j])) << i << " " << j;
  // Non-square inputs keep their shape.
  auto r = dihedral_transform(torch::rand({3, 4, 6}), torch::tensor({1, 3, 5}));
  EXPECT_EQ(r.sizes().vec(), (std::vector<int64_t>{3, 4, 6}));
}

TEST(Classifier, SmoothedCrossEntropyMatchesLibTorch) {
  torch::manual_seed(0);
  auto logits = torch::randn({10, 4});
  auto y = torch::randint(0, 4, {10}, torch::kInt64);
  double ours = smoothed_cross_entropy(logits, y, 0.1).item<double>();
  double ref = torch::nn::functional::cross_entropy(
                   logits, y, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(0.1))
                   .item<double>();
  EXPECT_NEAR(ours, ref, 1e-6);
  // Uniform class weights change nothing.
  double w = smoothed_cross_entropy(logits, y, 0.1, torch::full({4}, 3.0f)).item<double>();
  EXPECT_NEAR(w, ours, 1e-6);
}

TEST(Classifier, HeadLearnsSeparableFeaturesDeterministically) {
  torch::manual_seed(1);
  int64_t n = 120, d = 8;
  auto y = torch::arange(n, torch::kInt64) % 3;
  auto centers = torch::randn({3, d}) * 3;
  auto X = centers.index_select(0, y) + torch::randn({n, d});
  auto Xv = X.slice(0, 0, 30) + 0.1 * torch::randn({30, d});
  auto yv = y.slice(0, 0, 30);
  auto run = [&]() {
    PatchNetOptions o;
    o.n_classes = 3;
    o.in_features = d;
    o.hidden = 32;
    torch::manual_seed(5);
    PatchNet net(nullptr, o);
    TrainOptions t;
    t.stages = {TrainStage{0, 1e-2, 0.05, 30}};
    t.seed = 7;
    t.n_threads = 1;
    auto h = train_patch_net(*net, X, y, Xv, yv, t);
    return std::make_pair(predict_logits(*net, Xv, 64, 1), h);
  };
  auto [l1, h1] = run();
  auto [l2, h2] = run();
  EXPECT_TRUE(l1.equal(l2));
  double acc = l1.argmax(1).eq(yv).to(torch::kFloat64).mean().item<double>();
  EXPECT_GE(acc, 0.95);
  ASSERT_EQ(h1.best_epoch.size(), 1u);
  EXPECT_LE(h1.best_loss[0], h1.epochs.front().val_loss);
}

TEST(Classifier, BadInputsAreRejected) {
  PatchNetOptions o;
  o.n_classes = 2;
  o.in_features = 4;
  PatchNet net(nullptr, o);
  TrainOptions t;
  EXPECT_THROW(train_patch_net(*net, torch::rand({5, 3}), torch::zeros({5}, torch::kInt64), {}, {}, t), ValueError);
  EXPECT_THROW(train_patch_net(*net, torch::rand({5, 4}), torch::full({5}, 2, torch::kInt64), {}, {}, t), ValueError);
  o.n_classes = 1;
  EXPECT_THROW(PatchNet(nullptr, o), ValueError);
}

// Staged fine-tuning with one stage unfrozen: the first stage keeps its weights,
// the last one trains; checked for each backbone with stages.
void expect_staged_freezing(const std::string& backbone, const std::string& first, const std::string& last) {
  SCOPED_TRACE(backbone);
  PatchNetOptions o;
  o.n_classes = 2;
  o.input_size = 32;
  auto bb = make_backbone(backbone, 0);
  PatchNet net(bb, o);
  auto X = torch::rand({16, 32, 32});
  auto y = torch::arange(16, torch::kInt64) % 2;
  auto first_before = bb->stage_parameters(first)[0].clone();
  auto last_before = bb->stage_parameters(last)[0].clone();
  TrainOptions t;
  t.stages = {TrainStage{1, 1e-3, 0.05, 2}};
  t.batch_size = 8;
  t.n_threads = 1;
  train_patch_net(*net, X, y, {}, {}, t);
  EXPECT_TRUE(bb->stage_parameters(first)[0].equal(first_before));  // frozen
  EXPECT_FALSE(bb->stage_parameters(last)[0].equal(last_before));   // trained
  EXPECT_EQ(predict_logits(*net, X, 5, 1).sizes().vec(), (std::vector<int64_t>{16, 2}));
}

TEST(Classifier, StagedFineTuningFreezesEarlyStages) {
  expect_staged_freezing("small_cnn", "block1", "block4");
  const auto names = available_backbones();
  if (std::find(names.begin(), names.end(), "mobilenet_v2") != names.end())
    expect_staged_freezing("mobilenet_v2", "stage1", "head");  // "head" = features.18
}
