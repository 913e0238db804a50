#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "stemroi/anomaly.hpp"
#include "stemroi/cvae.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/torch_io.hpp"

using namespace stemroi;

namespace {
CVAEConfig config(const std::string& variant, int64_t latent = 4, int64_t crop = 64) {
  CVAEConfig c;
  c.variant = variant;
  c.latent_dim = latent;
  c.crop_size = crop;
  return c;
}
}  // namespace

TEST(CVAE, ShapesOfBothVariants) {
  CVAE study(config("study"), 1);
  EXPECT_EQ(study->encoded_size(), 7);  // 64 -> 31 -> 15 -> 7 ('valid')
  CVAE repo(config("dataset_repo"), 1);
  EXPECT_EQ(repo->encoded_size(), 8);   // 64 -> 32 -> 16 -> 8 ('same')
  auto x = torch::rand({3, 1, 64, 64});
  for (CVAE* m : {&study, &repo}) {
    auto [mean, logvar] = (*m)->encode(x);
    EXPECT_EQ(mean.sizes().vec(), (std::vector<int64_t>{3, 4}));
    EXPECT_EQ(logvar.sizes().vec(), (std::vector<int64_t>{3, 4}));
    auto y = (*m)->forward(x);
    EXPECT_EQ(y.sizes().vec(), (std::vector<int64_t>{3, 1, 64, 64}));
  }
  auto dense = module_state(*study).at("dec_fc.weight");
  EXPECT_EQ(dense.size(0), 8 * 8 * 32);
  EXPECT_EQ(module_state(*repo).at("dec_fc.weight").size(0), 8 * 8 * 64);
  EXPECT_EQ(module_state(*study).at("enc_fc.weight").size(1), 7 * 7 * 128);
}

TEST(CVAE, TransposedConvSameMatchesTensorFlowIndexing) {
  // TF 'same' stride-2 transposed conv: output row r = sum over input i and tap k
  // with 2i + k = r (k in 0..2), output size exactly 2n.
  torch::nn::ConvTranspose2d conv(torch::nn::ConvTranspose2dOptions(1, 1, 3).stride(2));
  torch::NoGradGuard g;
  auto w = torch::arange(9, torch::kFloat32).reshape({1, 1, 3, 3}) + 1;
  conv->weight.copy_(w);
  conv->bias.zero_();
  const int64_t n = 4;
  auto x = torch::rand({1, 1, n, n});
  auto y = conv_transpose_same_stride2(conv, x);
  ASSERT_EQ(y.sizes().vec(), (std::vector<int64_t>{1, 1, 2 * n, 2 * n}));
  auto ref = torch::zeros({2 * n, 2 * n});
  auto xa = x.accessor<float, 4>();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < n; ++j)
      for (int64_t a = 0; a < 3; ++a)
        for (int64_t b = 0; b < 3; ++b) {
          const int64_t r = 2 * i + a, c = 2 * j + b;
          if (r < 2 * n && c < 2 * n) ref[r][c] += xa[0][0][i][j] * w[0][0][a][b].item<float>();
        }
  EXPECT_TRUE(torch::allclose(y[0][0], ref, 1e-5, 1e-6));
  // and equals LibTorch's own transposed conv with the last row/column dropped
  auto direct = conv->forward(x).narrow(2, 0, 2 * n).narrow(3, 0, 2 * n);
  EXPECT_TRUE(torch::allclose(y, direct, 1e-5, 1e-6));
}

TEST(CVAE, TransposedConvStride1SameMatchesLibTorch) {
  torch::nn::ConvTranspose2d conv(torch::nn::ConvTranspose2dOptions(5, 2, 3).stride(1).padding(1));
  torch::NoGradGuard g;
  auto x = torch::rand({2, 5, 9, 9});
  EXPECT_TRUE(torch::allclose(conv_transpose_same_stride1(conv, x), conv->forward(x), 1e-5, 1e-6));
}

TEST(CVAE, RejectsBadConfigAndInput) {
  EXPECT_THROW(CVAE(config("bogus"), 0), ValueError);
  EXPECT_THROW(CVAE(config("study", 0), 0), ValueError);
  EXPECT_THROW(CVAE(config("study", 4, 60), 0), ValueError);
  CVAE m(config("study"), 0);
  EXPECT_THROW(cvae_reconstruct(m, torch::rand({2, 32, 32})), ValueError);
  EXPECT_THROW(cvae_reconstruct(m, torch::rand({2, 64, 64}, torch::kFloat64)), TypeError);
}

TEST(CVAE, SeededInitAndTrainingAreReproducibleAndLossFalls) {
  // Dark patches (0.05-0.15): an untrained decoder's 0.5 is far from them, so
  // learning shows (loss ~173 -> ~98). Patches around 0.5 started at the
  // floor, where the loss moved by 0.05 per epoch, up or down.
  auto data = torch::rand({32, 16, 16}) * 0.1 + 0.05;
  CVAETrainOptions o;
  o.epochs = 6;
  o.batch_size = 8;
  o.learning_rate = 1e-3;
  o.seed = 7;
  o.n_threads = 1;
  CVAE a(config("study", 4, 16), 3), b(config("study", 4, 16), 3);
  auto ha = train_cvae(a, data, o);
  auto hb = train_cvae(b, data, o);
  ASSERT_EQ(ha.size(), 6u);
  EXPECT_EQ(ha, hb);
  EXPECT_LT(ha.back(), 0.7 * ha.front());
  auto ra = cvae_reconstruct(a, data), rb = cvae_reconstruct(a, data);
  EXPECT_TRUE(torch::equal(ra, rb));  // decodes the mean: no sampling
}

TEST(CVAE, SaveLoadRoundTripIsExact) {
  CVAE m(config("dataset_repo", 5, 32), 11);
  auto x = torch::rand({4, 32, 32});
  auto before = cvae_reconstruct(m, x);
  std::string path = "/tmp/stemroi_test_cvae_" + std::to_string(getpid()) + ".stemroi";
  save_cvae(path, m, {{"model_card", "{}"}});
  auto [loaded, meta] = load_cvae(path);
  EXPECT_EQ(meta.at("architecture"), "cvae");
  EXPECT_EQ(loaded->config().variant, "dataset_repo");
  EXPECT_TRUE(torch::equal(before, cvae_reconstruct(loaded, x)));
  std::remove(path.c_str());
}

TEST(Anomaly, AnmWindowIsClippedNotWrapped) {
  const int64_t h = 8, w = 8;
  std::vector<float> d(h * w, 0.0f);
  d[0] = 1.0f;              // maximum at the top-left corner
  d[h * w - 1] = 0.5f;      // would be inside a wrapped window
  d[1] = 0.1f;              // below threshold: zeroed
  float s = 0, a = 0;
  int64_t peak[2];
  anm_scores(d.data(), 1, h, w, 0.2f, 2, &s, &a, peak, 1);
  EXPECT_EQ(peak[0], 0);
  EXPECT_EQ(peak[1], 0);
  EXPECT_FLOAT_EQ(s, 1.0f / 9.0f);  // 3x3 in-image pixels, the 0.1 zeroed, no 0.5
  EXPECT_FLOAT_EQ(a, 1.0f / 9.0f);
}

TEST(Anomaly, LocalEnergyFindsTheBlob) {
  const int64_t h = 16, w = 16;
  std::vector<float> d(h * w, 0.0f);
  for (int r = 10; r < 13; ++r)
    for (int c = 3; c < 6; ++c) d[r * w + c] = -0.5f;
  float score;
  int64_t peak[2];
  local_energy_scores(d.data(), 1, h, w, 3, &score, peak, 1);
  EXPECT_EQ(peak[0], 11);
  EXPECT_EQ(peak[1], 4);
  EXPECT_NEAR(score, 0.5f, 1e-6);
  EXPECT_THROW(local_energy_scores(d.data(), 1, h, w, 0, &score, peak, 1), ValueError);
}
