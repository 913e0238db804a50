#include "stemroi/cluster_metrics.hpp"

#include <algorithm>
#include <limits>

#include "stemroi/errors.hpp"

namespace stemroi {

std::vector<int64_t> contingency_matrix(const int64_t* classes, const int64_t* clusters, int64_t n,
                                        int64_t n_classes, int64_t n_clusters) {
  std::vector<int64_t> m(n_classes * n_clusters, 0);
  for (int64_t i = 0; i < n; ++i) {
    STEMROI_CHECK(classes[i] >= 0 && classes[i] < n_classes, "class code ", classes[i], " at index ", i,
                  " outside [0, ", n_classes, ")");
    STEMROI_CHECK(clusters[i] >= 0 && clusters[i] < n_clusters, "cluster code ", clusters[i], " at index ", i,
                  " outside [0, ", n_clusters, ")");
    ++m[classes[i] * n_clusters + clusters[i]];
  }
  return m;
}

// Shortest augmenting path Hungarian algorithm (potentials), O(r^2 c), for
// r <= c; minimises cost. a[i] = column of row i.
static std::vector<int64_t> hungarian_min(const std::vector<double>& cost, int64_t r, int64_t c) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> u(r + 1, 0), v(c + 1, 0);
  std::vector<int64_t> p(c + 1, 0), way(c + 1, 0);
  for (int64_t i = 1; i <= r; ++i) {
    p[0] = i;
    int64_t j0 = 0;
    std::vector<double> minv(c + 1, inf);
    std::vector<char> used(c + 1, 0);
    do {
      used[j0] = 1;
      const int64_t i0 = p[j0];
      double delta = inf;
      int64_t j1 = 0;
      for (int64_t j = 1; j <= c; ++j) {
        if (used[j]) continue;
        const double cur = cost[(i0 - 1) * c + (j - 1)] - u[i0] - v[j];
        if (cur < minv[j]) minv[j] = cur, way[j] = j0;
        if (minv[j] < delta) delta = minv[j], j1 = j;
      }
      for (int64_t j = 0; j <= c; ++j) {
        if (used[j]) u[p[j]] += delta, v[j] -= delta;
        else minv[j] -= delta;
      }
      j0 = j1;
    } while (p[j0] != 0);
    do {
      const int64_t j1 = way[j0];
      p[j0] = p[j1];
      j0 = j1;
    } while (j0);
  }
  std::vector<int64_t> a(r, -1);
  for (int64_t j = 1; j <= c; ++j)
    if (p[j] != 0) a[p[j] - 1] = j - 1;
  return a;
}

std::vector<int64_t> max_weight_matching(const std::vector<double>& w, int64_t rows, int64_t cols) {
  STEMROI_CHECK(rows >= 1 && cols >= 1 && static_cast<int64_t>(w.size()) == rows * cols,
                "matching needs a non-empty weight matrix, got ", rows, " x ", cols, " with ", w.size(), " entries");
  double wmax = *std::max_element(w.begin(), w.end());
  if (rows <= cols) {
    std::vector<double> cost(w.size());
    for (size_t i = 0; i < w.size(); ++i) cost[i] = wmax - w[i];
    return hungarian_min(cost, rows, cols);
  }
  std::vector<double> cost(w.size());  // transposed: (cols, rows)
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j) cost[j * rows + i] = wmax - w[i * cols + j];
  std::vector<int64_t> col_to_row = hungarian_min(cost, cols, rows);
  std::vector<int64_t> a(rows, -1);
  for (int64_t j = 0; j < cols; ++j) a[col_to_row[j]] = j;
  return a;
}

}  // namespace stemroi
