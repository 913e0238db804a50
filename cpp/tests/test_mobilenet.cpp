#include <gtest/gtest.h>

#include "stemroi/errors.hpp"
#include "stemroi/mobilenet.hpp"

using namespace stemroi;

TEST(MobileNetV2, TorchvisionNamesAndShapes) {
  auto net = make_mobilenet_v2({10, 0.2}, 0);
  auto state = module_state(*net);
  ASSERT_TRUE(state.count("features.0.0.weight"));
  EXPECT_EQ(state.at("features.0.0.weight").sizes(), (std::vector<int64_t>{32, 3, 3, 3}));
  EXPECT_TRUE(state.count("features.1.conv.0.0.weight"));   // t = 1 block: dw first
  EXPECT_TRUE(state.count("features.2.conv.3.running_var"));  // t = 6 block
  EXPECT_TRUE(state.count("features.18.1.num_batches_tracked"));
  EXPECT_EQ(state.at("classifier.1.weight").sizes(), (std::vector<int64_t>{10, 1280}));
  // torchvision mobilenet_v2 has 314 state entries (params + buffers)
  EXPECT_EQ(state.size(), 314u);
  torch::NoGradGuard ng;
  net->eval();
  auto f = net->features(torch::zeros({2, 3, 64, 64}));
  EXPECT_EQ(f.sizes(), (std::vector<int64_t>{2, 1280, 2, 2}));
  EXPECT_EQ(net->forward(torch::zeros({2, 3, 64, 64})).sizes(), (std::vector<int64_t>{2, 10}));
  EXPECT_EQ(net->stages().size(), 6u);
  EXPECT_EQ(net->architecture(), "mobilenet_v2");
  EXPECT_THROW(net->stage_parameters("block9"), ValueError);
  EXPECT_THROW(net->features(torch::zeros({1, 1, 64, 64})), ValueError);
}

TEST(MobileNetV2, LoadsOwnStateAndRejectsMismatch) {
  auto a = make_mobilenet_v2({5, 0.2}, 1), b = make_mobilenet_v2({5, 0.2}, 2);
  b->load_torchvision_state(module_state(*a), true, "net a");
  EXPECT_TRUE(torch::equal(module_state(*a).at("features.3.conv.1.0.weight"),
                           module_state(*b).at("features.3.conv.1.0.weight")));
  auto c = make_mobilenet_v2({7, 0.2}, 3);
  EXPECT_THROW(c->load_torchvision_state(module_state(*a), true, "net a"), ValueError);
  c->load_torchvision_state(module_state(*a), false, "net a");  // features only
  auto bad = module_state(*a);
  bad["features.0.0.weight"] = torch::zeros({32, 1, 3, 3});
  try {
    c->load_torchvision_state(bad, false, "bad");
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("0.0.weight"), std::string::npos) << e.what();
  }
}

TEST(MobileNetV2, PrepareInputIsTfRange) {
  auto x = prepare_backbone_input(torch::stack({torch::zeros({16, 16}), torch::ones({16, 16})}), 32, "tf");
  EXPECT_EQ(x.sizes(), (std::vector<int64_t>{2, 3, 32, 32}));
  EXPECT_FLOAT_EQ(x[0].min().item<float>(), -1.f);
  EXPECT_FLOAT_EQ(x[1].max().item<float>(), 1.f);
}

TEST(MobileNetV2, FineTuningHeadLowersLoss) {
  auto net = make_mobilenet_v2({2, 0.0}, 0);
  auto x = prepare_backbone_input(torch::cat({torch::zeros({8, 32, 32}), torch::ones({8, 32, 32})}), 32, "tf");
  auto y = torch::cat({torch::zeros({8}, torch::kInt64), torch::ones({8}, torch::kInt64)});
  BackboneTrainOptions o;
  o.epochs = 8;
  o.batch_size = 8;
  o.learning_rate = 1e-2;
  o.trainable_stages = net->stages();  // from scratch: BatchNorm in training mode
  o.dropout = 0.0;
  o.n_threads = 1;
  auto head = net->classifier_linear();
  auto hist = train_backbone_classifier(*net, head, x, y, o);
  EXPECT_LT(hist.back(), 0.5 * hist.front());
  auto logits = backbone_classifier_logits(*net, head, x, 4, 1);
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{16, 2}));
}
