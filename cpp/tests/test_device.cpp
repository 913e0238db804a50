// parse_network_device, module_device and the networks' device plumbing:
// inputs go to the module's device, results come back on the CPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>

#include "stemroi/classifier.hpp"
#include "stemroi/compute_device.hpp"
#include "stemroi/cvae.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/small_cnn.hpp"
#include "stemroi/unet.hpp"

using namespace stemroi;

namespace {

bool torch_cuda() { return torch::cuda::is_available(); }

std::string error_of(const std::string& spec) {
  try {
    parse_network_device(spec);
  } catch (const ValueError& e) {
    return e.what();
  }
  return "";
}

PatchNet small_net() {
  PatchNetOptions o;
  o.n_classes = 3;
  o.input_size = 16;
  torch::manual_seed(0);
  return PatchNet(make_backbone("small_cnn", 0), o);
}

CVAEConfig cvae_config() {
  CVAEConfig c;
  c.latent_dim = 2;
  c.crop_size = 16;
  return c;
}

UNetConfig unet_config() {
  UNetConfig u;
  u.base_channels = 4;
  return u;
}

}  // namespace

TEST(NetworkDevice, ParsesNamesAndNamesTheDeviceLibTorchCannotUse) {
  EXPECT_FALSE(parse_network_device("cpu").is_cuda());
  EXPECT_EQ(parse_network_device("auto").is_cuda(), torch_cuda());
  EXPECT_EQ(torch_device(parse_network_device("cpu")).str(), "cpu");
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda0", "CPU", ""})
    EXPECT_NE(error_of(bad).find(std::string("'cpu', 'cuda', 'cuda:N' or 'auto', got '") + bad + "'"),
              std::string::npos)
        << bad;
  if (!torch_cuda()) {
    for (const char* spec : {"cuda", "cuda:0", "cuda:3"}) {
      const std::string msg = error_of(spec);
      EXPECT_NE(msg.find(std::string("device='") + spec + "' requested but this LibTorch has no usable CUDA device"),
                std::string::npos)
          << msg;
      EXPECT_NE(msg.find("available: 'cpu'"), std::string::npos) << msg;
    }
  } else {
    const auto count = static_cast<int>(torch::cuda::device_count());
    EXPECT_EQ(torch_device(parse_network_device("cuda:0")).str(), "cuda:0");
    EXPECT_NE(error_of("cuda:" + std::to_string(count)).find("available: 'cpu', 'cuda:0'"), std::string::npos);
  }
}

TEST(NetworkDevice, ModuleDeviceFollowsTheParameters) {
  torch::nn::Linear lin(2, 3);
  EXPECT_EQ(module_device(*lin).str(), "cpu");
  torch::nn::Module empty;
  EXPECT_EQ(module_device(empty).str(), "cpu");
  DeterministicCudnnGuard on_cpu(module_device(*lin));  // no effect on the CPU
  if (torch_cuda()) {
    lin->to(torch::Device(torch::kCUDA, 0));
    EXPECT_EQ(module_device(*lin).str(), "cuda:0");
  }
}

TEST(NetworkDevice, ResultsComeBackOnTheCpu) {
  auto net = small_net();
  auto X = torch::rand({5, 32, 32});
  auto logits = predict_logits(*net, X, 2, 1);
  EXPECT_TRUE(logits.device().is_cpu());
  EXPECT_EQ(logits.sizes(), (std::vector<int64_t>{5, 3}));
  EXPECT_TRUE(embed_patches(*net, X, 2, 1).device().is_cpu());
  CVAE cvae(cvae_config(), 0);
  EXPECT_TRUE(cvae_reconstruct(cvae, torch::rand({3, 16, 16}), 2, 1).device().is_cpu());
  auto unet = make_unet(unet_config(), 0);
  EXPECT_TRUE(predict_tiled(unet, torch::rand({24, 24}), 16, 8, 4, 1).device().is_cpu());
}

TEST(NetworkDeviceCuda, CudaResultsEqualTheCpusWithin1e4) {
  if (!torch_cuda()) GTEST_SKIP() << "needs a CUDA device (torch::cuda::is_available() is false)";
  const torch::Device gpu(torch::kCUDA, 0);
  auto X = torch::rand({5, 32, 32});
  auto cpu_net = small_net(), gpu_net = small_net();
  gpu_net->to(gpu);
  auto on_gpu = predict_logits(*gpu_net, X, 2, 1);
  EXPECT_TRUE(on_gpu.device().is_cpu());
  EXPECT_TRUE(torch::allclose(on_gpu, predict_logits(*cpu_net, X, 2, 1), 0.0, 1e-4));

  auto crops = torch::rand({3, 16, 16});
  CVAE cvae_cpu(cvae_config(), 0), cvae_gpu(cvae_config(), 0);
  cvae_gpu->to(gpu);
  EXPECT_TRUE(torch::allclose(cvae_reconstruct(cvae_gpu, crops, 2, 1), cvae_reconstruct(cvae_cpu, crops, 2, 1), 0.0,
                              1e-4));

  auto image = torch::rand({24, 24});
  auto unet_cpu = make_unet(unet_config(), 0), unet_gpu = make_unet(unet_config(), 0);
  unet_gpu->to(gpu);
  EXPECT_TRUE(torch::allclose(predict_tiled(unet_gpu, image, 16, 8, 4, 1), predict_tiled(unet_cpu, image, 16, 8, 4, 1),
                              0.0, 1e-4));
}
