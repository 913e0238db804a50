// Host side of the CUDA numeric engine: GPU memory and streams through
// LibTorch (its caching allocator and the current stream of the device), the
// kernels of distance_kernels.cu, and the Gram matrix through cuBLAS.
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/torch.h>

#include <algorithm>

#include "kernels.cuh"
#include "stemroi/callbacks.hpp"
#include "stemroi/cuda.hpp"
#include "stemroi/errors.hpp"

namespace stemroi::cuda {
namespace {

template <typename T>
torch::TensorOptions host_options() {
  return torch::TensorOptions().dtype(torch::CppTypeToScalarType<T>());
}

// Synchronous copies (the host buffer may be freed on return).
template <typename T>
torch::Tensor to_device(const T* p, std::vector<int64_t> shape, int device) {
  return torch::from_blob(const_cast<T*>(p), shape, host_options<T>()).to(torch::Device(torch::kCUDA, device));
}

template <typename T>
void to_host(const torch::Tensor& t, T* p) {
  torch::from_blob(p, t.sizes(), host_options<T>()).copy_(t);
}

// Silhouette: pair-features (column samples x rows x features) per kernel
// launch; between launches the host polls for Ctrl-C.
constexpr int64_t kPairBudget = int64_t(1) << 34;
// Gram matrix: elements of one centred chunk in double (512 MiB).
constexpr int64_t kGramBudget = int64_t(1) << 26;

}  // namespace

int current_device() { return c10::cuda::current_device(); }

template <typename T>
struct NearestCentres<T>::Impl {
  int device = 0;
  int64_t n = 0, d = 0;
  torch::Tensor Xt;  // (d, n): a warp reads consecutive samples of one feature

  // Centres padded with copies of the last one to whole kernel groups.
  torch::Tensor centres(const T* c, int64_t k) const {
    const int64_t g = kernels::kCentreGroup, kp = (k + g - 1) / g * g;
    std::vector<T> padded(kp * d);
    std::copy(c, c + k * d, padded.begin());
    for (int64_t r = k; r < kp; ++r) std::copy(c + (k - 1) * d, c + k * d, padded.begin() + r * d);
    return to_device(padded.data(), {kp, d}, device);
  }
};

template <typename T>
NearestCentres<T>::NearestCentres(const T* X, int64_t n, int64_t d, int device) : impl_(std::make_shared<Impl>()) {
  STEMROI_CHECK(n >= 1 && d >= 1, "NearestCentres: empty data, shape ", shape_str({n, d}));
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  impl_->device = device;
  impl_->n = n;
  impl_->d = d;
  impl_->Xt = to_device(X, {n, d}, device).t().contiguous();
}

template <typename T>
void NearestCentres<T>::assign(const T* centres, int64_t k, int32_t* labels) {
  STEMROI_CHECK(k >= 1, "NearestCentres: need at least one centre");
  const Impl& m = *impl_;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(m.device));
  torch::Tensor C = m.centres(centres, k);
  torch::Tensor L = torch::empty({m.n}, torch::TensorOptions().dtype(torch::kInt32).device(torch::kCUDA, m.device));
  kernels::nearest_centres<T>(m.Xt.template data_ptr<T>(), m.n, m.d, C.data_ptr<T>(), k, L.data_ptr<int32_t>(),
                              c10::cuda::getCurrentCUDAStream(m.device).stream());
  to_host(L, labels);
}

template <typename T>
void NearestCentres<T>::distances(const T* centres, int64_t k, T* out) {
  STEMROI_CHECK(k >= 1, "NearestCentres: need at least one centre");
  const Impl& m = *impl_;
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(m.device));
  torch::Tensor C = m.centres(centres, k);
  torch::Tensor D = torch::empty({m.n, k}, m.Xt.options());
  kernels::centre_distances<T>(m.Xt.template data_ptr<T>(), m.n, m.d, C.data_ptr<T>(), k, D.data_ptr<T>(),
                               c10::cuda::getCurrentCUDAStream(m.device).stream());
  to_host(D, out);
}

template <typename T>
void cluster_distance_sums(const T* X, int64_t n, int64_t d, const std::vector<const int32_t*>& labels,
                           const std::vector<int64_t>& offsets, int device, double* out) {
  const int n_sets = static_cast<int>(labels.size());
  STEMROI_CHECK(n_sets >= 1 && offsets.size() == labels.size() + 1, "cluster_distance_sums: ", labels.size(),
                " labelings but ", offsets.size(), " offsets");
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  std::vector<int32_t> lab(static_cast<size_t>(n_sets) * n);
  for (int s = 0; s < n_sets; ++s) std::copy(labels[s], labels[s] + n, lab.begin() + static_cast<int64_t>(s) * n);
  torch::Tensor Xd = to_device(X, {n, d}, device);
  torch::Tensor Ld = to_device(lab.data(), {n_sets, n}, device);
  torch::Tensor Od = to_device(offsets.data(), {n_sets}, device);
  torch::Tensor acc =
      torch::zeros({offsets[n_sets], n}, torch::TensorOptions().dtype(torch::kFloat64).device(torch::kCUDA, device));
  auto stream = c10::cuda::getCurrentCUDAStream(device);
  const int64_t step = std::max<int64_t>(32, kPairBudget / std::max<int64_t>(1, n * d) / 32 * 32);
  for (int64_t j0 = 0; j0 < n; j0 += step) {
    kernels::cluster_distance_sums<T>(Xd.data_ptr<T>(), n, d, Ld.data_ptr<int32_t>(), Od.data_ptr<int64_t>(), n_sets,
                                      j0, std::min(n, j0 + step), acc.data_ptr<double>(), stream.stream());
    stream.synchronize();
    InterruptCallback::check();
  }
  to_host(acc, out);
}

template <typename T>
void gram_matrix(const T* X, int64_t n, int64_t d, const double* mean, int device, double* out) {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  const auto opt = torch::TensorOptions().dtype(torch::kFloat64).device(torch::kCUDA, device);
  torch::Tensor mu = to_device(mean, {1, d}, device);
  torch::Tensor G;
  // Chunks are added in a fixed order; cuBLAS GEMMs are reproducible run to
  // run on one GPU model.
  if (n >= d) {
    G = torch::zeros({d, d}, opt);
    const int64_t rows = std::max<int64_t>(1, kGramBudget / d);
    for (int64_t r0 = 0; r0 < n; r0 += rows) {
      const int64_t r1 = std::min(n, r0 + rows);
      torch::Tensor Xc = to_device(X + r0 * d, {r1 - r0, d}, device).to(torch::kFloat64) - mu;
      G.addmm_(Xc.t(), Xc);
      InterruptCallback::check();
    }
  } else {
    torch::Tensor Xd = to_device(X, {n, d}, device);
    G = torch::zeros({n, n}, opt);
    const int64_t cols = std::max<int64_t>(1, kGramBudget / n);
    for (int64_t c0 = 0; c0 < d; c0 += cols) {
      const int64_t c1 = std::min(d, c0 + cols);
      torch::Tensor Xc = Xd.slice(1, c0, c1).to(torch::kFloat64) - mu.slice(1, c0, c1);
      G.addmm_(Xc, Xc.t());
      InterruptCallback::check();
    }
  }
  to_host(G.contiguous(), out);
}

#define STEMROI_CUDA_INSTANTIATE(T)                                                                        \
  template class NearestCentres<T>;                                                                        \
  template void cluster_distance_sums<T>(const T*, int64_t, int64_t, const std::vector<const int32_t*>&, \
                                         const std::vector<int64_t>&, int, double*);                       \
  template void gram_matrix<T>(const T*, int64_t, int64_t, const double*, int, double*);
STEMROI_CUDA_INSTANTIATE(float)
STEMROI_CUDA_INSTANTIATE(double)

}  // namespace stemroi::cuda
