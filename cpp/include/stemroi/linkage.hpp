// Average-linkage (UPGMA) agglomerative clustering: every pairwise Euclidean
// distance once, then the nearest-neighbour chain algorithm (exact for
// average linkage, which is reducible), O(n^2) time and n(n-1)/2 doubles of
// memory. Same merges, heights and tie order as scipy.cluster.hierarchy's
// linkage(X, "average"); K-means' spherical clusters are not assumed, which
// is what helps on patch sets whose classes are elongated or of very
// different sizes.
#pragma once
#include <cstdint>
#include <vector>

namespace stemroi {

// Above this many samples the condensed distance matrix (n(n-1)/2 doubles)
// would pass 1 GiB: the caller subsamples or uses K-means.
constexpr int64_t kMaxLinkageSamples = 16384;

// scipy's linkage matrix, row i = merge i in order of height (stable):
// clusters left[i] < right[i] (ids < n are samples, n + j the cluster formed
// by merge j), the average distance between them, the merged size.
struct Dendrogram {
  int64_t n_samples = 0;
  std::vector<int64_t> left, right, size;
  std::vector<double> height;
};

template <typename T>
Dendrogram average_linkage(const T* X, int64_t n, int64_t d, int n_threads);

// Flat clusters when the tree is cut into k (the first n - k merges joined):
// codes in [0, k) numbered in order of first appearance over the samples.
std::vector<int32_t> cut_dendrogram(const Dendrogram& tree, int64_t k);

}  // namespace stemroi
