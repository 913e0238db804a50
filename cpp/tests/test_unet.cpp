#include <gtest/gtest.h>

#include <cmath>

#include "stemroi/errors.hpp"
#include "stemroi/pseudo_labels.hpp"
#include "stemroi/unet.hpp"

using namespace stemroi;

TEST(PseudoLabels, PercentileMatchesNumpyLinear) {
  // numpy.percentile([1, 2, 3, 4], 98) = 3.94
  EXPECT_NEAR(percentile_linear({4.f, 1.f, 3.f, 2.f}, 98.0), 3.94, 1e-9);
  EXPECT_NEAR(percentile_linear({5.f}, 50.0), 5.0, 1e-12);
}

TEST(PseudoLabels, BrightSpotIsLabelledAndBulkIsEmpty) {
  const int64_t h = 32, w = 32;
  std::vector<float> img(2 * h * w, 0.1f);
  img[16 * w + 16] = 1.0f;                 // patch 0: one bright pixel
  img[h * w + 10 * w + 10] = 1.0f;         // patch 1: same, flagged bulk
  std::vector<uint8_t> masks(2 * h * w), bulk = {0, 1};
  pseudo_label_masks(img.data(), masks.data(), 2, h, w, bulk.data(), PseudoLabelOptions{}, 1);
  int n0 = 0, n1 = 0;
  for (int64_t i = 0; i < h * w; ++i) {
    n0 += masks[i];
    n1 += masks[h * w + i];
  }
  EXPECT_EQ(masks[16 * w + 16], 1);
  EXPECT_GT(n0, 0);
  EXPECT_LE(n0, static_cast<int>(0.03 * h * w));
  EXPECT_EQ(n1, 0);
}

TEST(PseudoLabels, RejectsBadOptions) {
  std::vector<float> img(64, 0.f);
  std::vector<uint8_t> m(64);
  PseudoLabelOptions o;
  o.percentile = 120;
  EXPECT_THROW(pseudo_label_masks(img.data(), m.data(), 1, 8, 8, nullptr, o), ValueError);
}

TEST(MultiDefect, BackgroundIsOneMinusMaxAndImageIsMax) {
  auto patches = torch::rand({6, 8, 8});
  auto masks = (torch::rand({6, 8, 8}) > 0.7).to(torch::kUInt8);
  auto labels = torch::tensor({-1, 0, 1, 2, 0, 1}, torch::kInt64);
  auto s = compose_multi_defect(patches, masks, labels, 3, 50, 3, 7);
  ASSERT_EQ(s.images.sizes(), (std::vector<int64_t>{50, 1, 8, 8}));
  ASSERT_EQ(s.targets.sizes(), (std::vector<int64_t>{50, 4, 8, 8}));
  auto defect_max = std::get<0>(s.targets.slice(1, 0, 3).max(1));
  EXPECT_TRUE(torch::allclose(s.targets.select(1, 3), 1 - defect_max));
  // every image pixel is one of its parts' pixels: within the range of the patches
  EXPECT_LE(s.images.max().item<float>(), patches.max().item<float>());
  // deterministic for a seed
  auto s2 = compose_multi_defect(patches, masks, labels, 3, 50, 3, 7);
  EXPECT_TRUE(torch::equal(s.images, s2.images));
  EXPECT_THROW(compose_multi_defect(patches, masks, torch::tensor({0, 0, 0, 0, 0, 5}), 3, 5, 3, 0), ValueError);
}

TEST(UNet, ShapesAndConstantInputGivesConstantOutput) {
  auto net = make_unet({1, 3, 8}, 1);
  torch::NoGradGuard ng;
  auto y = net->forward(torch::full({2, 1, 32, 48}, 0.3f));
  ASSERT_EQ(y.sizes(), (std::vector<int64_t>{2, 3, 32, 48}));
  for (int c = 0; c < 3; ++c) {
    auto ch = y.select(1, c);
    EXPECT_LT((ch.max() - ch.min()).item<float>(), 1e-5f) << "channel " << c;
  }
  EXPECT_THROW(net->forward(torch::zeros({1, 1, 30, 32})), ValueError);
}

TEST(UNet, SameSeedSameWeights) {
  auto a = make_unet({1, 2, 4}, 5), b = make_unet({1, 2, 4}, 5), c = make_unet({1, 2, 4}, 6);
  auto pa = a->parameters(), pb = b->parameters(), pc = c->parameters();
  EXPECT_TRUE(torch::equal(pa[0], pb[0]));
  EXPECT_FALSE(torch::equal(pa[0], pc[0]));
}

TEST(UNet, TiledPredictionOfConstantImageIsConstant) {
  auto net = make_unet({1, 2, 4}, 3);
  auto maps = predict_tiled(net, torch::full({70, 90}, 0.6f), 32, 16, 8, 1);
  ASSERT_EQ(maps.sizes(), (std::vector<int64_t>{2, 70, 90}));
  for (int c = 0; c < 2; ++c) EXPECT_LT((maps[c].max() - maps[c].min()).item<float>(), 1e-5f);
  // smaller than a tile: reflect-padded, cropped back
  auto small = predict_tiled(net, torch::rand({10, 12}), 32, 16, 8, 1);
  EXPECT_EQ(small.sizes(), (std::vector<int64_t>{2, 10, 12}));
}

TEST(UNet, TrainingLowersTheLoss) {
  // class 0: bright dot, mask at the dot; bulk: flat
  const int64_t n = 16, s = 16;
  auto patches = torch::full({n, s, s}, 0.2f);
  auto masks = torch::zeros({n, s, s}, torch::kUInt8);
  auto labels = torch::full({n}, -1, torch::kInt64);
  for (int64_t i = 0; i < n / 2; ++i) {
    const int64_t r = 3 + (i * 5) % 10, c = 2 + (i * 3) % 11;
    patches.index_put_({i, r, c}, 1.0f);
    masks.index_put_({i, r, c}, 1);
    labels[i] = 0;
  }
  auto net = make_unet({1, 2, 4}, 0);
  SegmenterTrainOptions o;
  o.epochs = 15;
  o.batch_size = 8;
  o.learning_rate = 3e-3;
  o.max_parts = 2;
  o.n_threads = 1;
  auto hist = train_unet(net, patches, masks, labels, o);
  ASSERT_EQ(hist.size(), 15u);
  EXPECT_LT(hist.back(), 0.6 * hist.front());
}
