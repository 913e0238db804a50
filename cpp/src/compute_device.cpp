#include "stemroi/compute_device.hpp"

#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/torch.h>

#include <cctype>

#include "stemroi/cuda.hpp"
#include "stemroi/errors.hpp"

namespace stemroi {
namespace {

[[noreturn]] void throw_not_built(const std::string& spec) {
  throw ValueError(concat("stemroi was built without CUDA (STEMROI_WITH_CUDA=OFF); got device='", spec,
                          "'. Rebuild with -DSTEMROI_WITH_CUDA=ON against a CUDA LibTorch, or use device='cpu'"));
}

bool all_digits(const std::string& s) {
  if (s.empty() || s.size() > 4) return false;
  for (char c : s)
    if (!std::isdigit(static_cast<unsigned char>(c))) return false;
  return true;
}

// A device name before any availability check; index -1: the current CUDA device.
struct DeviceName {
  enum Kind { Cpu, Auto, Cuda } kind;
  int index;
};

DeviceName parse_device_name(const std::string& spec) {
  if (spec == "cpu") return {DeviceName::Cpu, 0};
  if (spec == "auto") return {DeviceName::Auto, 0};
  if (spec == "cuda") return {DeviceName::Cuda, -1};
  if (spec.rfind("cuda:", 0) == 0 && all_digits(spec.substr(5))) return {DeviceName::Cuda, std::stoi(spec.substr(5))};
  throw ValueError(concat("device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got '", spec, "'"));
}

int torch_cuda_device_count() {
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

int torch_current_cuda_device() { return static_cast<int>(at::detail::getCUDAHooks().current_device()); }

}  // namespace

int cuda_device_count() {
  if (!cuda_built()) return 0;
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

ComputeDevice parse_compute_device(const std::string& spec) {
  const DeviceName name = parse_device_name(spec);
  if (name.kind == DeviceName::Cpu) return {};
  if (name.kind == DeviceName::Auto) {
    if (cuda_device_count() == 0) return {};
    return {true, cuda::current_device()};
  }
  if (!cuda_built()) throw_not_built(spec);
  const int count = cuda_device_count();
  if (count == 0)
    throw ValueError(concat("device='", spec, "' requested but no CUDA device is visible ",
                            "(torch.cuda.is_available() is False)"));
  const int index = name.index < 0 ? cuda::current_device() : name.index;
  if (index >= count)
    throw ValueError(concat("device='", spec, "' requested but only ", count, " CUDA device",
                            count == 1 ? " is" : "s are", " visible"));
  return {true, index};
}

ComputeDevice parse_network_device(const std::string& spec) {
  const DeviceName name = parse_device_name(spec);
  if (name.kind == DeviceName::Cpu) return {};
  const int count = torch_cuda_device_count();
  if (name.kind == DeviceName::Auto) {
    if (count == 0) return {};
    return {true, torch_current_cuda_device()};
  }
  if (count == 0)
    throw ValueError(concat("device='", spec, "' requested but this LibTorch has no usable CUDA device ",
                            "(torch.cuda.is_available() is False); available: 'cpu'"));
  const int index = name.index < 0 ? torch_current_cuda_device() : name.index;
  if (index >= count)
    throw ValueError(concat("device='", spec, "' requested but LibTorch sees ", count, " CUDA device",
                            count == 1 ? "" : "s", "; available: 'cpu', ",
                            count == 1 ? std::string("'cuda:0'") : concat("'cuda:0' to 'cuda:", count - 1, "'")));
  return {true, index};
}

c10::Device torch_device(const ComputeDevice& device) {
  if (!device.is_cuda()) return c10::Device(c10::DeviceType::CPU);
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device.index));
}

c10::Device module_device(const torch::nn::Module& module) {
  for (const auto& p : module.parameters(/*recurse=*/true)) return p.device();
  for (const auto& b : module.buffers(/*recurse=*/true)) return b.device();
  return c10::Device(c10::DeviceType::CPU);
}

DeterministicCudnnGuard::DeterministicCudnnGuard(const c10::Device& device) {
  if (!device.is_cuda()) return;
  auto& ctx = at::globalContext();
  active_ = true;
  deterministic_ = ctx.deterministicCuDNN();
  benchmark_ = ctx.benchmarkCuDNN();
  ctx.setDeterministicCuDNN(true);
  ctx.setBenchmarkCuDNN(false);
}

DeterministicCudnnGuard::~DeterministicCudnnGuard() {
  if (!active_) return;
  auto& ctx = at::globalContext();
  ctx.setDeterministicCuDNN(deterministic_);
  ctx.setBenchmarkCuDNN(benchmark_);
}

#ifndef STEMROI_WITH_CUDA
// The CUDA entry points of a build without CUDA: callers reach them only with
// a hand-made ComputeDevice (parse_compute_device refuses "cuda" here).
namespace cuda {
int current_device() { throw_not_built("cuda"); }

template <typename T>
struct NearestCentres<T>::Impl {};
template <typename T>
NearestCentres<T>::NearestCentres(const T*, int64_t, int64_t, int device) {
  throw_not_built(concat("cuda:", device));
}
template <typename T>
void NearestCentres<T>::assign(const T*, int64_t, int32_t*) {}
template <typename T>
void NearestCentres<T>::distances(const T*, int64_t, T*) {}
template <typename T>
void cluster_distance_sums(const T*, int64_t, int64_t, const std::vector<const int32_t*>&,
                           const std::vector<int64_t>&, int device, double*) {
  throw_not_built(concat("cuda:", device));
}
template <typename T>
void gram_matrix(const T*, int64_t, int64_t, const double*, int device, double*) {
  throw_not_built(concat("cuda:", device));
}

#define STEMROI_CUDA_STUB_INSTANTIATE(T)                                                                      \
  template class NearestCentres<T>;                                                                           \
  template void cluster_distance_sums<T>(const T*, int64_t, int64_t, const std::vector<const int32_t*>&,    \
                                         const std::vector<int64_t>&, int, double*);                          \
  template void gram_matrix<T>(const T*, int64_t, int64_t, const double*, int, double*);
STEMROI_CUDA_STUB_INSTANTIATE(float)
STEMROI_CUDA_STUB_INSTANTIATE(double)
}  // namespace cuda
#endif

}  // namespace stemroi
