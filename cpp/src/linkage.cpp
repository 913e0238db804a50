#include "stemroi/linkage.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "stemroi/callbacks.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"

namespace stemroi {
namespace {

// Index of pair (i, j), i < j, in the condensed (row-major upper triangle) matrix.
inline int64_t condensed(int64_t n, int64_t i, int64_t j) {
  if (i > j) std::swap(i, j);
  return n * i - (i * (i + 1)) / 2 + (j - i - 1);
}

int64_t find_root(std::vector<int64_t>& parent, int64_t x) {
  while (parent[x] != x) x = parent[x] = parent[parent[x]];
  return x;
}

}  // namespace

template <typename T>
Dendrogram average_linkage(const T* X, int64_t n, int64_t d, int n_threads) {
  STEMROI_CHECK(n >= 2, "average linkage needs at least 2 samples, got ", n);
  STEMROI_CHECK(d >= 1, "average linkage needs at least 1 feature, got ", d);
  STEMROI_CHECK(n <= kMaxLinkageSamples, "average linkage keeps all n(n-1)/2 pairwise distances: n = ", n,
                " would need ", (n * (n - 1) / 2) * 8 / (1 << 20), " MiB; the limit is n <= ", kMaxLinkageSamples,
                " (subsample, or cluster with K-means)");
  std::vector<double> D(static_cast<size_t>(n * (n - 1) / 2));
  const int threads = resolve_n_threads(n_threads);
  // Each entry is independent (direct differences in double): identical for any thread count.
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads)
  for (int64_t i = 0; i < n - 1; ++i) {
    const T* xi = X + i * d;
    double* row = D.data() + condensed(n, i, i + 1);
    for (int64_t j = i + 1; j < n; ++j) {
      const T* xj = X + j * d;
      double s = 0.0;
      for (int64_t c = 0; c < d; ++c) {
        const double t = static_cast<double>(xi[c]) - static_cast<double>(xj[c]);
        s += t * t;
      }
      row[j - i - 1] = std::sqrt(s);
    }
  }
  for (double v : D)
    STEMROI_CHECK(std::isfinite(v), "average linkage: a pairwise distance is not finite (NaN or inf in X)");

  // Nearest-neighbour chain, as scipy's nn_chain (same scan order, same ties).
  std::vector<int64_t> size(n, 1), chain;
  chain.reserve(n);
  std::vector<int64_t> left(n - 1), right(n - 1), msize(n - 1);
  std::vector<double> height(n - 1);
  for (int64_t k = 0; k < n - 1; ++k) {
    if ((k & 255) == 0) InterruptCallback::check();
    if (chain.empty())
      for (int64_t i = 0; i < n; ++i)
        if (size[i] > 0) {
          chain.push_back(i);
          break;
        }
    int64_t x = 0, y = 0;
    double current = 0.0;
    for (;;) {
      x = chain.back();
      if (chain.size() >= 2) {
        y = chain[chain.size() - 2];
        current = D[condensed(n, x, y)];
      } else {
        current = std::numeric_limits<double>::infinity();
      }
      for (int64_t i = 0; i < n; ++i) {
        if (size[i] == 0 || i == x) continue;
        const double v = D[condensed(n, x, i)];
        if (v < current) current = v, y = i;
      }
      if (chain.size() >= 2 && y == chain[chain.size() - 2]) break;
      chain.push_back(y);
    }
    chain.pop_back();
    chain.pop_back();
    if (x > y) std::swap(x, y);
    const int64_t nx = size[x], ny = size[y];
    left[k] = x, right[k] = y, height[k] = current, msize[k] = nx + ny;
    size[x] = 0;
    size[y] = nx + ny;
    for (int64_t i = 0; i < n; ++i) {
      if (size[i] == 0 || i == y) continue;
      double& dy = D[condensed(n, i, y)];
      dy = (static_cast<double>(nx) * D[condensed(n, i, x)] + static_cast<double>(ny) * dy) /
           static_cast<double>(nx + ny);
    }
  }

  // Sort the merges by height (stable) and name the clusters as scipy does:
  // the merge at position j forms cluster n + j.
  std::vector<int64_t> order(n - 1);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return height[a] < height[b]; });
  Dendrogram t;
  t.n_samples = n;
  t.left.resize(n - 1), t.right.resize(n - 1), t.size.resize(n - 1), t.height.resize(n - 1);
  std::vector<int64_t> parent(2 * n - 1), id(2 * n - 1);
  std::iota(parent.begin(), parent.end(), 0);
  std::iota(id.begin(), id.end(), 0);  // root (a sample index) -> current cluster id
  int64_t next = n;
  for (int64_t j = 0; j < n - 1; ++j) {
    const int64_t m = order[j];
    const int64_t rx = find_root(parent, left[m]), ry = find_root(parent, right[m]);
    int64_t a = id[rx], b = id[ry];
    if (a > b) std::swap(a, b);
    t.left[j] = a, t.right[j] = b, t.height[j] = height[m], t.size[j] = msize[m];
    parent[rx] = ry;
    id[ry] = next++;
  }
  return t;
}

std::vector<int32_t> cut_dendrogram(const Dendrogram& tree, int64_t k) {
  const int64_t n = tree.n_samples;
  STEMROI_CHECK(n >= 1 && static_cast<int64_t>(tree.left.size()) == n - 1,
                "dendrogram: expected ", n - 1, " merges for ", n, " samples, got ", tree.left.size());
  STEMROI_CHECK(k >= 1 && k <= n, "k must be in [1, ", n, "], got ", k);
  // Union-find over cluster ids: node n + j joins its two children.
  std::vector<int64_t> parent(2 * n - 1);
  std::iota(parent.begin(), parent.end(), 0);
  std::vector<char> used(2 * n - 1, 0);
  for (int64_t j = 0; j < n - 1; ++j)
    for (int64_t c : {tree.left[j], tree.right[j]}) {
      STEMROI_CHECK(c >= 0 && c < n + j && !used[c], "dendrogram: merge ", j, " joins cluster ", c,
                    ", expected an unmerged id in [0, ", n + j, ")");
      used[c] = 1;
    }
  for (int64_t j = 0; j < n - k; ++j) {
    parent[tree.left[j]] = n + j;
    parent[tree.right[j]] = n + j;
  }
  std::vector<int32_t> out(n);
  std::vector<int32_t> code(2 * n - 1, -1);
  int32_t next = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t r = find_root(parent, i);
    if (code[r] < 0) code[r] = next++;
    out[i] = code[r];
  }
  return out;
}

template Dendrogram average_linkage<float>(const float*, int64_t, int64_t, int);
template Dendrogram average_linkage<double>(const double*, int64_t, int64_t, int);

}  // namespace stemroi
