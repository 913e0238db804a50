// VGG16 core: torchvision names, taps, input pipeline, backends agreeing with
// the module path, weight reloads invalidating packed weights, dense strips
// equal to one pass, interrupt and progress. Small inputs keep it fast
// (VGG16 costs 30.7 GFLOP per 224x224 patch, 0.6 at 32x32).
#include <gtest/gtest.h>

#include "stemroi/errors.hpp"
#include "stemroi/torch_io.hpp"
#include "stemroi/vgg16.hpp"

using namespace stemroi;

namespace {
torch::Tensor random_patches(int64_t n, int64_t h, int64_t w, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return torch::rand({n, h, w}, gen, torch::kFloat32);
}
double max_rel(const torch::Tensor& a, const torch::Tensor& b) {
  return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item<double>();
}
double min_cosine(const torch::Tensor& a, const torch::Tensor& b) {
  return torch::nn::functional::cosine_similarity(a, b, torch::nn::functional::CosineSimilarityFuncOptions().dim(1))
      .min()
      .item<double>();
}
struct FlagInterrupt : InterruptCallback {
  bool want_interrupt() override { return true; }
};
}  // namespace

TEST(VGG16, TorchvisionParameterNames) {
  VGG16 net(VGG16Options{/*include_top=*/true, 10, "torchvision"});
  auto state = module_state(*net);
  EXPECT_EQ(state.size(), 13u * 2 + 3u * 2);
  for (const auto& [idx, keras] : vgg16_conv_layers()) {
    ASSERT_TRUE(state.count(concat("features.", idx, ".weight"))) << keras;
    ASSERT_TRUE(state.count(concat("features.", idx, ".bias"))) << keras;
  }
  EXPECT_EQ(state.at("features.0.weight").sizes(), torch::IntArrayRef({64, 3, 3, 3}));
  EXPECT_EQ(state.at("features.28.weight").sizes(), torch::IntArrayRef({512, 512, 3, 3}));
  EXPECT_EQ(state.at("classifier.0.weight").sizes(), torch::IntArrayRef({4096, 25088}));
  EXPECT_EQ(state.at("classifier.6.weight").sizes(), torch::IntArrayRef({10, 4096}));
  EXPECT_EQ(vgg16_conv_layers().front().second, "block1_conv1");
  EXPECT_EQ(vgg16_conv_layers().back(), (std::pair<int64_t, std::string>{28, "block5_conv3"}));
  EXPECT_EQ(net->stages().size(), 6u);
  EXPECT_EQ(net->stage_parameters("block3").size(), 6u);
  EXPECT_THROW(net->stage_parameters("block6"), ValueError);
  VGG16 notop;
  EXPECT_EQ(module_state(*notop).size(), 26u);
  EXPECT_THROW(notop->forward(torch::zeros({1, 3, 32, 32})), ValueError);
}

TEST(VGG16, TapsAndErrors) {
  auto t = vgg16_tap("block5_pool");
  EXPECT_EQ(t.index, 30);
  EXPECT_EQ(t.stride, 32);
  EXPECT_EQ(vgg16_tap("block5").index, 30);
  EXPECT_EQ(vgg16_tap("block1_conv2").index, 3);
  EXPECT_EQ(vgg16_tap("block3_conv3").index, 15);
  EXPECT_EQ(vgg16_tap("block3_conv3").stride, 4);
  EXPECT_EQ(vgg16_tap("block2_pool").index, 9);
  try {
    vgg16_tap("block2_conv3");
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("block2_conv3"), std::string::npos);
  }
  EXPECT_THROW(vgg16_tap("fc1"), ValueError);
  VGG16 net;
  VGG16FeatureOptions o;
  EXPECT_EQ(net->feature_dim(o, 64, 64), 512);
  o.layers = {"block3_pool", "block5_pool"};
  EXPECT_EQ(net->feature_dim(o, 64, 64), 768);
  o.pooling = "flatten";
  o.input_size = 64;
  EXPECT_EQ(net->feature_dim(o, 64, 64), 256 * 8 * 8 + 512 * 2 * 2);
  o.pooling = "median";
  EXPECT_THROW(net->feature_dim(o, 64, 64), ValueError);
}

TEST(VGG16, BackendsMatchModulePath) {
  VGG16 net;
  net->reset_parameters(7);
  auto patches = random_patches(3, 32, 32, 2);
  VGG16FeatureOptions o;
  o.input_size = 40;  // resized, not a multiple of 32: pools floor
  o.layers = {"block2_conv2", "block5_pool"};
  o.batch_size = 2;
  o.n_threads = 2;
  o.backend = "eager";
  auto eager = net->extract(patches, o);
  ASSERT_EQ(eager.sizes(), torch::IntArrayRef({3, 128 + 512}));
  // The autograd module path (Backbone::features) gives the same numbers.
  torch::Tensor ref;
  {
    torch::NoGradGuard ng;
    auto x = network_input(patches, 40, 40, kTorchvision);
    auto maps = net->feature_maps(x, {vgg16_tap("block2_conv2"), vgg16_tap("block5_pool")});
    ref = torch::cat({maps[0].mean({2, 3}), maps[1].mean({2, 3})}, 1);
    EXPECT_LT(max_rel(net->features(x).mean({2, 3}), maps[1].mean({2, 3})), 1e-6);
  }
  EXPECT_LT(max_rel(eager, ref), 1e-5);
  for (const char* backend : {"mkldnn", "channels_last"}) {
    o.backend = backend;
    auto y = net->extract(patches, o);
    EXPECT_LT(max_rel(y, ref), 1e-4) << backend;
  }
  // Determinism: same call, same bits.
  o.backend = "auto";
  EXPECT_TRUE(torch::equal(net->extract(patches, o), net->extract(patches, o)));
}

TEST(VGG16, ReloadedWeightsAreRepacked) {
  VGG16 a, b;
  a->reset_parameters(1);
  b->reset_parameters(2);
  auto patches = random_patches(2, 32, 32, 3);
  VGG16FeatureOptions o;
  o.input_size = 0;
  auto fa = a->extract(patches, o);  // packs a's weights
  load_module_state(*a, module_state(*b), true, "test");
  auto fb = b->extract(patches, o);
  EXPECT_LT(max_rel(a->extract(patches, o), fb), 1e-6);
  EXPECT_GT(max_rel(fa, fb), 1e-2);
}

TEST(VGG16, LoadStateChecksShapesAndNames) {
  VGG16 net;
  auto state = module_state(*net);
  state["features.0.weight"] = torch::zeros({64, 1, 3, 3});
  try {
    load_module_state(*net, state, true, "broken.pth");
    FAIL();
  } catch (const ValueError& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("features.0.weight"), std::string::npos) << msg;
    EXPECT_NE(msg.find("(64, 1, 3, 3)"), std::string::npos) << msg;
  }
  state = module_state(*net);
  state.erase("features.28.bias");
  EXPECT_THROW(load_module_state(*net, state, true, "missing"), ValueError);
}

TEST(VGG16, Bfloat16CloseToFloat32) {
  VGG16 net;
  net->reset_parameters(3);
  auto patches = random_patches(2, 32, 32, 4);
  VGG16FeatureOptions o;
  o.input_size = 0;
  auto f32 = net->extract(patches, o);
  o.dtype = "float16";
  EXPECT_THROW(net->extract(patches, o), ValueError);
  o.dtype = "bfloat16";
  torch::Tensor bf;
  try {
    bf = net->extract(patches, o);
  } catch (const std::runtime_error& e) {
    // CPUs without AVX512 BW/VL/DQ: the error says what is missing and what to use instead
    const std::string msg = e.what();
    EXPECT_NE(msg.find("AVX512"), std::string::npos) << msg;
    EXPECT_NE(msg.find("dtype='float32'"), std::string::npos) << msg;
    GTEST_SKIP() << "no bfloat16 oneDNN path on this CPU: " << msg;
  }
  EXPECT_EQ(bf.scalar_type(), torch::kFloat32);
  EXPECT_GT(min_cosine(bf, f32), 0.99);
}

TEST(VGG16, DenseStripsEqualOnePass) {
  VGG16 net;
  net->reset_parameters(5);
  auto image = random_patches(1, 200, 136, 6)[0];
  VGG16FeatureOptions o;
  o.input_size = 0;  // no resize: windows of 64 on the 200x136 image
  o.layers = {"block4_conv1", "block5_pool"};
  auto one = net->dense(image, 64, 16, o);
  EXPECT_EQ(one.origins.size(0), 9 * 5);
  EXPECT_EQ(one.features.sizes(), torch::IntArrayRef({45, 1024}));
  EXPECT_EQ(one.origins[6][0].item<int64_t>(), 16);
  EXPECT_EQ(one.origins[6][1].item<int64_t>(), 16);
  o.dense_strip_bytes = (32 + 2 * 96) * 136 * 64 * 4;  // strips of one cell row
  int64_t calls = 0;
  auto strips = net->dense(image, 64, 16, o, [&](int64_t, int64_t) { ++calls; });
  EXPECT_GT(calls, 3);
  EXPECT_LT(max_rel(strips.features, one.features), 1e-4);
  // A window on the 32-pixel grid of an image exactly its size sees what a
  // patch sees: same features as extract().
  auto patch = image.slice(0, 0, 64).slice(1, 0, 64).contiguous();
  auto dense = net->dense(patch, 64, 64, o);
  auto per_patch = net->extract(patch.unsqueeze(0), o);
  EXPECT_LT(max_rel(dense.features, per_patch), 1e-4);
  o.pooling = "max";
  EXPECT_THROW(net->dense(image, 64, 16, o), ValueError);
  o.pooling = "avg";
  EXPECT_THROW(net->dense(image, 256, 16, o), ValueError);
}

TEST(VGG16, InterruptAndProgress) {
  VGG16 net;
  auto patches = random_patches(3, 32, 32, 8);
  VGG16FeatureOptions o;
  o.input_size = 0;
  o.batch_size = 1;
  std::vector<int64_t> done;
  net->extract(patches, o, [&](int64_t d, int64_t total) {
    EXPECT_EQ(total, 3);
    done.push_back(d);
  });
  EXPECT_EQ(done, (std::vector<int64_t>{1, 2, 3}));
  InterruptCallback::install(std::make_unique<FlagInterrupt>());
  EXPECT_THROW(net->extract(patches, o), Interrupted);
  InterruptCallback::clear();
  EXPECT_THROW(net->extract(patches.slice(1, 0, 16).slice(2, 0, 16).contiguous(), o), ValueError);  // 16x16 too small
  o.device = "tpu";
  EXPECT_THROW(net->extract(patches, o), ValueError);
}
