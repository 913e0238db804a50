// Cluster-vs-class contingency table and the optimal one-to-one matching of
// clusters to classes (Hungarian / Jonker-Volgenant shortest augmenting path,
// rectangular problems allowed).
#pragma once
#include <cstdint>
#include <vector>

namespace stemroi {

// (n_classes, n_clusters) counts, row-major. Codes must be in range.
std::vector<int64_t> contingency_matrix(const int64_t* classes, const int64_t* clusters, int64_t n,
                                        int64_t n_classes, int64_t n_clusters);

// Maximum-weight matching on a (rows, cols) weight matrix; returns for every
// row the matched column or -1 (when rows > cols). Same optimum as
// scipy.optimize.linear_sum_assignment(w, maximize=True).
std::vector<int64_t> max_weight_matching(const std::vector<double>& w, int64_t rows, int64_t cols);

}  // namespace stemroi
