// Exact silhouette coefficients (scikit-learn semantics: singletons score 0),
// blocked and parallel over row blocks; distances and sums in double, so
// float32 inputs are never upcast as a whole. Several labelings of the same
// samples are scored in ONE pass over the pairwise distances, which is what
// makes select_n_clusters cheap. When the joint partition of the labelings
// (samples with the same label in every labeling) has fewer cells than the
// labelings have clusters in all, distances are summed once per cell and each
// cluster's sum is the sum of its cells': equal to scoring each labeling
// alone up to rounding (a different summation grouping), still bit-identical
// across thread counts.
#pragma once
#include <cstdint>
#include <vector>

#include "stemroi/kmeans.hpp"

namespace stemroi {

// labels[s]: (n,) codes in [0, n_clusters[s]), every code present, 2 <= k <= n - 1.
// Returns per-sample silhouettes for every labeling. On CUDA the distance
// sums come from the GPU (every pair, direct differences in double) and agree
// with the CPU's within about 1e-12 relative.
template <typename T>
std::vector<std::vector<double>> silhouette_samples_multi(const T* X, int64_t n, int64_t d,
                                                          const std::vector<const int32_t*>& labels,
                                                          const std::vector<int32_t>& n_clusters,
                                                          int n_threads, const ComputeDevice& device = {});

// Mean in fixed chunk order (deterministic).
double ordered_mean(const std::vector<double>& v);

template <typename T>
struct NClustersSweep {
  std::vector<int64_t> k_values;
  std::vector<double> scores, inertias;
  std::vector<int> n_iter;
  std::vector<std::vector<int32_t>> labels;
  std::vector<std::vector<T>> centers;
};

// K-means (same seed for every k, as looping KMeans(k, random_state=seed))
// then silhouette of every k in one pass, both on base.device. sample_idx
// (optional): rows on which the silhouette is computed.
template <typename T>
NClustersSweep<T> select_n_clusters(const T* X, int64_t n, int64_t d, const std::vector<int64_t>& k_values,
                                    const KMeansOptions& base, const std::vector<int64_t>& sample_idx);

}  // namespace stemroi
