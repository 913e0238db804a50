// Where the numeric engine (K-means, silhouette, PCA) runs: "cpu", "cuda",
// "cuda:N" or "auto" (CUDA when this build has it and a GPU is visible, else
// the CPU). The CPU path is the reference; the CUDA path (STEMROI_WITH_CUDA=ON)
// gives the same labels and values within stated tolerances.
// Networks (LibTorch modules) take the same names through
// parse_network_device: they run on LibTorch's own CUDA kernels, so they need
// a CUDA LibTorch and a GPU, not STEMROI_WITH_CUDA.
#pragma once
#include <c10/core/Device.h>

#include <string>

namespace torch::nn {
class Module;
}

namespace stemroi {

struct ComputeDevice {
  bool cuda = false;
  int index = 0;
  bool is_cuda() const { return cuda; }
  std::string str() const { return cuda ? "cuda:" + std::to_string(index) : "cpu"; }
};

// Throws ValueError for a malformed name, for "cuda[:N]" in a build without
// CUDA ("stemroi was built without CUDA (STEMROI_WITH_CUDA=OFF); got
// device='cuda'"), and when the requested GPU is not visible.
ComputeDevice parse_compute_device(const std::string& spec);

// Compiled with STEMROI_WITH_CUDA=ON.
constexpr bool cuda_built() {
#ifdef STEMROI_WITH_CUDA
  return true;
#else
  return false;
#endif
}

// Visible CUDA devices (0 in a build without CUDA or without a usable GPU).
int cuda_device_count();

// The device a network runs on. "cpu"; "cuda" (LibTorch's current CUDA
// device) or "cuda:N" when LibTorch has a usable CUDA device, else ValueError
// ("device='cuda:0' requested but this LibTorch has no usable CUDA device
// (torch.cuda.is_available() is False); available: 'cpu'"); "auto": "cuda"
// when LibTorch has a usable CUDA device, else "cpu". Malformed names throw
// the ValueError of parse_compute_device.
ComputeDevice parse_network_device(const std::string& spec);
c10::Device torch_device(const ComputeDevice& device);

// The device of a module's parameters (the CPU for a module without any).
c10::Device module_device(const torch::nn::Module& module);

// While alive and `device` is a CUDA device: cuDNN picks deterministic
// algorithms and no autotuning, so training repeats bit for bit on the same
// GPU; the previous settings come back at the end. No effect on the CPU.
class DeterministicCudnnGuard {
 public:
  explicit DeterministicCudnnGuard(const c10::Device& device);
  ~DeterministicCudnnGuard();
  DeterministicCudnnGuard(const DeterministicCudnnGuard&) = delete;
  DeterministicCudnnGuard& operator=(const DeterministicCudnnGuard&) = delete;

 private:
  bool active_ = false, deterministic_ = false, benchmark_ = false;
};

}  // namespace stemroi
