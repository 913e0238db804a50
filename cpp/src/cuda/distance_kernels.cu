// CUDA kernels of the numeric engine: squared distances of samples to centres
// (K-means assignment and transform) and per-cluster sums of pairwise
// distances (silhouette). Each output value is computed by one thread in a
// fixed order; there are no atomics, so results are reproducible run to run.
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "kernels.cuh"

namespace stemroi::cuda::kernels {
namespace {

void check_launch(const char* what) {
  const cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) throw std::runtime_error(std::string("CUDA kernel ") + what + ": " + cudaGetErrorString(e));
}

constexpr int kDistThreads = 128;

// Squared distances of sample i (column i of Xt, (d, n)) to kCentreGroup
// consecutive centres, each summed as the CPU's sqdist: four partial sums by
// feature index mod 4 (the tail in the first), in double, then (s0 + s1) +
// (s2 + s3). The _rn intrinsics keep nvcc from fusing multiply-adds, so every
// value is bit-identical to the CPU's when that is compiled without fusing.
template <typename T>
__device__ void sqdist_group(const T* __restrict__ Xt, int64_t n, int64_t i, const T* __restrict__ C, int64_t d,
                             double out[kCentreGroup]) {
  double s[kCentreGroup][4];
#pragma unroll
  for (int g = 0; g < kCentreGroup; ++g) s[g][0] = s[g][1] = s[g][2] = s[g][3] = 0.0;
  int64_t j = 0;
  for (; j + 4 <= d; j += 4) {
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      const double x = static_cast<double>(Xt[(j + q) * n + i]);
#pragma unroll
      for (int g = 0; g < kCentreGroup; ++g) {
        const double t = __dsub_rn(x, static_cast<double>(__ldg(C + g * d + j + q)));
        s[g][q] = __dadd_rn(s[g][q], __dmul_rn(t, t));
      }
    }
  }
  for (; j < d; ++j) {
    const double x = static_cast<double>(Xt[j * n + i]);
#pragma unroll
    for (int g = 0; g < kCentreGroup; ++g) {
      const double t = __dsub_rn(x, static_cast<double>(__ldg(C + g * d + j)));
      s[g][0] = __dadd_rn(s[g][0], __dmul_rn(t, t));
    }
  }
#pragma unroll
  for (int g = 0; g < kCentreGroup; ++g) out[g] = __dadd_rn(__dadd_rn(s[g][0], s[g][1]), __dadd_rn(s[g][2], s[g][3]));
}

template <typename T>
__global__ void nearest_centres_kernel(const T* __restrict__ Xt, int64_t n, int64_t d, const T* __restrict__ C,
                                       int64_t k, int32_t* __restrict__ labels) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  int32_t best = 0;
  double best_v = 0;
  double v[kCentreGroup];
  for (int64_t c0 = 0; c0 < k; c0 += kCentreGroup) {
    sqdist_group(Xt, n, i, C + c0 * d, d, v);
#pragma unroll
    for (int g = 0; g < kCentreGroup; ++g) {
      const int64_t c = c0 + g;
      if (c < k && (c == 0 || v[g] < best_v)) best_v = v[g], best = static_cast<int32_t>(c);
    }
  }
  labels[i] = best;
}

template <typename T>
__global__ void centre_distances_kernel(const T* __restrict__ Xt, int64_t n, int64_t d, const T* __restrict__ C,
                                        int64_t k, T* __restrict__ out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  double v[kCentreGroup];
  for (int64_t c0 = 0; c0 < k; c0 += kCentreGroup) {
    sqdist_group(Xt, n, i, C + c0 * d, d, v);
#pragma unroll
    for (int g = 0; g < kCentreGroup; ++g)
      if (c0 + g < k) out[i * k + c0 + g] = static_cast<T>(__dsqrt_rn(v[g]));
  }
}

// Silhouette sums. A block owns kTile rows (samples i) and walks the columns
// (samples j) of its range in tiles of kTile: the tile's distances come from
// shared-memory feature slices (each thread: four (i, j) pairs, features in
// increasing order), then thread (tx, ty) adds row tx's distances, in
// increasing j, to the accumulators of labelings ty, ty + kRowsY, ... Only
// this block touches rows i0 .. i0 + kTile - 1 of acc, so every sum has a
// fixed order; warps write consecutive samples of one accumulator row.
constexpr int kTile = 32;   // rows and columns of a tile; features per slice
constexpr int kRowsY = 8;   // blockDim.y: each thread computes kTile / kRowsY pairs
constexpr int kPairs = kTile / kRowsY;

template <typename T>
__global__ void __launch_bounds__(kTile* kRowsY)
    cluster_sums_kernel(const T* __restrict__ X, int64_t n, int64_t d, const int32_t* __restrict__ labels,
                        const int64_t* __restrict__ offsets, int n_sets, int64_t j_begin, int64_t j_end,
                        double* __restrict__ acc) {
  __shared__ double Si[kTile][kTile + 1];
  __shared__ double Sj[kTile][kTile + 1];
  __shared__ double D[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  const int64_t i0 = static_cast<int64_t>(blockIdx.x) * kTile;
  for (int64_t j0 = j_begin; j0 < j_end; j0 += kTile) {
    double s[kPairs];
#pragma unroll
    for (int r = 0; r < kPairs; ++r) s[r] = 0.0;
    for (int64_t f0 = 0; f0 < d; f0 += kTile) {
      const int64_t f = f0 + tx;
#pragma unroll
      for (int r = 0; r < kPairs; ++r) {
        const int row = ty + kRowsY * r;
        const int64_t ri = i0 + row, rj = j0 + row;
        // Zero padding past n, j_end or d adds (0 - 0)^2 = 0: sums unchanged.
        Si[row][tx] = (ri < n && f < d) ? static_cast<double>(X[ri * d + f]) : 0.0;
        Sj[row][tx] = (rj < j_end && f < d) ? static_cast<double>(X[rj * d + f]) : 0.0;
      }
      __syncthreads();
#pragma unroll 8
      for (int ff = 0; ff < kTile; ++ff) {
        const double xj = Sj[tx][ff];
#pragma unroll
        for (int r = 0; r < kPairs; ++r) {
          const double t = Si[ty + kRowsY * r][ff] - xj;
          s[r] = fma(t, t, s[r]);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int r = 0; r < kPairs; ++r) {
      const int row = ty + kRowsY * r;
      D[row][tx] = (i0 + row != j0 + tx && s[r] > 0.0) ? sqrt(s[r]) : 0.0;
    }
    __syncthreads();
    const int64_t i = i0 + tx;
    if (i < n) {
      const int jn = static_cast<int>(j_end - j0 < kTile ? j_end - j0 : kTile);
      for (int set = ty; set < n_sets; set += kRowsY) {
        const int32_t* lab = labels + static_cast<int64_t>(set) * n + j0;
        double* a = acc + offsets[set] * n + i;
        for (int jj = 0; jj < jn; ++jj) a[static_cast<int64_t>(lab[jj]) * n] += D[tx][jj];
      }
    }
    __syncthreads();
  }
}

unsigned blocks_for(int64_t items, int64_t per_block) {
  return static_cast<unsigned>((items + per_block - 1) / per_block);
}

}  // namespace

template <typename T>
void nearest_centres(const T* Xt, int64_t n, int64_t d, const T* centres, int64_t k, int32_t* labels,
                     cudaStream_t stream) {
  nearest_centres_kernel<T><<<blocks_for(n, kDistThreads), kDistThreads, 0, stream>>>(Xt, n, d, centres, k, labels);
  check_launch("nearest_centres");
}

template <typename T>
void centre_distances(const T* Xt, int64_t n, int64_t d, const T* centres, int64_t k, T* out, cudaStream_t stream) {
  centre_distances_kernel<T><<<blocks_for(n, kDistThreads), kDistThreads, 0, stream>>>(Xt, n, d, centres, k, out);
  check_launch("centre_distances");
}

template <typename T>
void cluster_distance_sums(const T* X, int64_t n, int64_t d, const int32_t* labels, const int64_t* offsets,
                           int n_sets, int64_t j_begin, int64_t j_end, double* acc, cudaStream_t stream) {
  if (j_begin >= j_end) return;
  const dim3 block(kTile, kRowsY);
  cluster_sums_kernel<T><<<blocks_for(n, kTile), block, 0, stream>>>(X, n, d, labels, offsets, n_sets, j_begin, j_end,
                                                                     acc);
  check_launch("cluster_distance_sums");
}

#define STEMROI_KERNELS_INSTANTIATE(T)                                                                        \
  template void nearest_centres<T>(const T*, int64_t, int64_t, const T*, int64_t, int32_t*, cudaStream_t);   \
  template void centre_distances<T>(const T*, int64_t, int64_t, const T*, int64_t, T*, cudaStream_t);        \
  template void cluster_distance_sums<T>(const T*, int64_t, int64_t, const int32_t*, const int64_t*, int,    \
                                         int64_t, int64_t, double*, cudaStream_t);
STEMROI_KERNELS_INSTANTIATE(float)
STEMROI_KERNELS_INSTANTIATE(double)

}  // namespace stemroi::cuda::kernels
