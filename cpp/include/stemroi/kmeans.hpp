// K-means (scikit-learn 1.2 KMeans semantics): greedy k-means++ seeding,
// Lloyd iterations with Hamerly bounds and GEMM-form distances in double,
// tol scaled by the mean feature variance, centre-shift convergence,
// empty-cluster relocation.
// Deterministic: the same seed gives bit-identical results whatever n_threads
// (per-run seeds derived from the seed; every reduction in fixed order).
#pragma once
#include <cstdint>
#include <vector>

#include "stemroi/compute_device.hpp"

namespace stemroi {

struct KMeansOptions {
  int64_t n_clusters = 8;
  int n_init = 10;
  int max_iter = 300;
  double tol = 1e-4;   // relative: multiplied by the mean variance of the features
  uint64_t seed = 0;
  int n_threads = 0;   // <= 0: all cores
  // CUDA: every Lloyd assignment runs on the GPU (exact distances in double;
  // the CPU's bounded assignment uses the GEMM form in double, so the labels
  // agree except on ties at double rounding level); seeding and centre
  // updates stay on the CPU.
  ComputeDevice device;
};

template <typename T>
struct KMeansFit {
  std::vector<T> centers;        // (k, d) row-major
  std::vector<int32_t> labels;   // (n,)
  double inertia = 0;
  int n_iter = 0;
};

// init: optional (k, d) initial centres (then n_init runs all start from them).
template <typename T>
KMeansFit<T> kmeans_fit(const T* X, int64_t n, int64_t d, const KMeansOptions& opt, const T* init = nullptr);

// One fit per k in ks (opt.n_clusters ignored), all (k, run) pairs scheduled
// together; result i equals kmeans_fit with n_clusters = ks[i].
template <typename T>
std::vector<KMeansFit<T>> kmeans_fit_many(const T* X, int64_t n, int64_t d, const std::vector<int64_t>& ks,
                                          const KMeansOptions& opt, const T* init = nullptr);

// Greedy k-means++ (2 + log(k) local trials) on X as given; returns (k, d).
template <typename T>
std::vector<T> kmeans_plusplus(const T* X, int64_t n, int64_t d, int64_t k, uint64_t seed, int n_threads);

// Nearest centre of every sample; returns the inertia (sum of squared distances).
// On the CPU the nearest centre comes from scikit-learn's GEMM form in T; on
// CUDA from exact squared distances in double (labels differ only on ties at
// T's rounding level).
template <typename T>
double kmeans_predict(const T* X, int64_t n, int64_t d, const T* centers, int64_t k, int32_t* labels,
                      int n_threads, const ComputeDevice& device = {});

// Euclidean distances (n, k) to the centres (CUDA: the CPU's values, see cuda.hpp).
template <typename T>
void kmeans_transform(const T* X, int64_t n, int64_t d, const T* centers, int64_t k, T* out, int n_threads,
                      const ComputeDevice& device = {});

// Seed of run `run` derived from `seed` (splitmix64), shared with select_n_clusters.
uint64_t derive_seed(uint64_t seed, uint64_t run);

}  // namespace stemroi
