// Launchers of the numeric engine's CUDA kernels, on device pointers and a
// stream. Plain C++ (no LibTorch) so that nvcc compiles only the kernels.
#pragma once
#include <cuda_runtime_api.h>

#include <cstdint>

namespace stemroi::cuda::kernels {

// Centres are processed kCentreGroup at a time (one pass over a sample's
// features serves the whole group): the centre array holds
// round_up(k, kCentreGroup) rows, the extra rows any finite values.
constexpr int64_t kCentreGroup = 4;

// Xt: (d, n) transposed samples. labels[i]: first centre of least squared distance.
template <typename T>
void nearest_centres(const T* Xt, int64_t n, int64_t d, const T* centres, int64_t k, int32_t* labels,
                     cudaStream_t stream);

// out (n, k): Euclidean distances in T.
template <typename T>
void centre_distances(const T* Xt, int64_t n, int64_t d, const T* centres, int64_t k, T* out, cudaStream_t stream);

// X: (n, d) row-major. labels: (n_sets, n) codes; offsets: (n_sets,) first
// accumulator row of each labeling. Adds, for every sample i and every column
// j in [j_begin, j_end), dist(i, j) to acc[(offsets[s] + labels[s][j]) * n + i]
// (acc (width, n)), in increasing j. Successive launches on one stream over
// increasing column ranges therefore sum in a fixed order.
template <typename T>
void cluster_distance_sums(const T* X, int64_t n, int64_t d, const int32_t* labels, const int64_t* offsets,
                           int n_sets, int64_t j_begin, int64_t j_end, double* acc, cudaStream_t stream);

}  // namespace stemroi::cuda::kernels
