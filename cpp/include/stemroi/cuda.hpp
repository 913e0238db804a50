// CUDA entry points of the numeric engine. Inputs and outputs are host
// arrays; data go to the GPU once per call (NearestCentres keeps them there
// across Lloyd iterations). Every result is reproducible run to run: each sum
// is formed in a fixed order by one thread, never with atomics. In a build
// without CUDA these throw the "built without CUDA" ValueError.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

namespace stemroi::cuda {

// The current CUDA device of this thread (LibTorch's), for a bare "cuda".
int current_device();

// Nearest centre / distances to centres of the rows of X (n, d), kept on GPU
// `device`. Squared distances are accumulated in double exactly as the CPU's
// (same four partial sums, no fused multiply-add): bit-identical to a CPU
// build without FMA contraction (the portable one; -march=native lets GCC fuse,
// which moves the last bits), and so are the labels that follow from them.
template <typename T>
class NearestCentres {
 public:
  NearestCentres(const T* X, int64_t n, int64_t d, int device);
  // labels[i]: the first centre of least squared distance (k, d centres).
  void assign(const T* centres, int64_t k, int32_t* labels);
  // out (n, k): Euclidean distances in T.
  void distances(const T* centres, int64_t k, T* out);

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
};

// Silhouette's per-cluster distance sums of several labelings at once:
// out (width, n), row offsets[s] + c holds, for every sample, the sum of its
// Euclidean distances (in double) to the samples of cluster c of labeling s.
// labels[s]: (n,) codes in [0, offsets[s + 1] - offsets[s]); offsets has one
// entry per labeling plus the total width.
template <typename T>
void cluster_distance_sums(const T* X, int64_t n, int64_t d, const std::vector<const int32_t*>& labels,
                           const std::vector<int64_t>& offsets, int device, double* out);

// Gram matrix of the centred data in double, through cuBLAS: (X - mean)^T
// (X - mean) (d, d) when n >= d, else (X - mean) (X - mean)^T (n, n);
// out row-major. mean: (d,).
template <typename T>
void gram_matrix(const T* X, int64_t n, int64_t d, const double* mean, int device, double* out);

}  // namespace stemroi::cuda
