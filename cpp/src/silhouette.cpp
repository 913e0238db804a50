#include "stemroi/silhouette.hpp"

#include <omp.h>

#include <Eigen/Dense>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

#include "stemroi/callbacks.hpp"
#include "stemroi/cuda.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"

namespace stemroi {
namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
constexpr int64_t kBlock = 2 * kReduceChunk;  // rows (and columns) of a distance block

// Rows [r0, r1) centred in double (the data are never upcast as a whole).
template <typename T>
void load_rows(const T* X, int64_t d, int64_t r0, int64_t r1, const std::vector<double>& mean, MatD& out,
               Eigen::VectorXd& norms) {
  out.resize(r1 - r0, d);
  norms.resize(r1 - r0);
  for (int64_t i = r0; i < r1; ++i) {
    double s = 0;
    for (int64_t j = 0; j < d; ++j) {
      double v = static_cast<double>(X[i * d + j]) - mean[j];
      out(i - r0, j) = v;
      s += v * v;
    }
    norms[i - r0] = s;
  }
}

// Cluster sizes of every label set and the column offset of each set's
// per-cluster sums (all sets side by side, `width` columns in all).
struct LabelSets {
  std::vector<std::vector<int64_t>> freq;
  std::vector<int64_t> offset;
  int64_t width = 0;
  int64_t max_k = 0;
};

LabelSets check_label_sets(const std::vector<const int32_t*>& labels, const std::vector<int32_t>& n_clusters,
                           int64_t n) {
  STEMROI_CHECK(labels.size() == n_clusters.size(), "silhouette: ", labels.size(), " label sets but ",
                n_clusters.size(), " cluster counts");
  const size_t n_sets = labels.size();
  LabelSets sets;
  sets.freq.resize(n_sets);
  sets.offset.assign(n_sets + 1, 0);
  for (size_t s = 0; s < n_sets; ++s) {
    const int32_t k = n_clusters[s];
    STEMROI_CHECK(k >= 2 && k <= n - 1, "Number of labels is ", k,
                  ". Valid values are 2 to n_samples - 1 (inclusive), n_samples=", n);
    sets.freq[s].assign(k, 0);
    for (int64_t i = 0; i < n; ++i) {
      const int32_t l = labels[s][i];
      STEMROI_CHECK(l >= 0 && l < k, "silhouette: label code ", l, " at index ", i, " outside [0, ", k, ")");
      ++sets.freq[s][l];
    }
    sets.offset[s + 1] = sets.offset[s] + k;
  }
  sets.width = sets.offset[n_sets];
  sets.max_k = *std::max_element(n_clusters.begin(), n_clusters.end());
  return sets;
}

template <typename T>
std::vector<double> feature_mean(const T* X, int64_t n, int64_t d) {
  std::vector<double> mean(d, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) mean[j] += static_cast<double>(X[i * d + j]);
  for (double& m : mean) m /= static_cast<double>(n);
  return mean;
}

// Adds the distances drow[0, nc) of one sample to its per-cluster sums acc[0, k)
// (lab: the cluster of each column). Four interleaved accumulators break the
// add -> store -> load dependency when neighbouring samples share a cluster;
// they are combined in a fixed order.
void add_cluster_sums(const double* drow, const int32_t* lab, int64_t nc, int64_t k, std::vector<double>& acc4,
                      double* acc) {
  std::fill(acc4.begin(), acc4.begin() + 4 * k, 0.0);
  double *a0 = acc4.data(), *a1 = a0 + k, *a2 = a1 + k, *a3 = a2 + k;
  int64_t j = 0;
  for (; j + 4 <= nc; j += 4) {
    a0[lab[j]] += drow[j];
    a1[lab[j + 1]] += drow[j + 1];
    a2[lab[j + 2]] += drow[j + 2];
    a3[lab[j + 3]] += drow[j + 3];
  }
  for (; j < nc; ++j) a0[lab[j]] += drow[j];
  for (int64_t c = 0; c < k; ++c) acc[c] += (a0[c] + a1[c]) + (a2[c] + a3[c]);
}

// A coding of the samples whose per-code distance sums are accumulated:
// code[i] in [0, n_codes), sums in columns [offset, offset + n_codes).
struct Coding {
  const int32_t* code;
  int32_t n_codes;
  int64_t offset;
};

// Which sum columns make up each cluster of each label set, summed in the
// listed (ascending) order.
using ColumnMap = std::vector<std::vector<std::vector<int64_t>>>;  // [set][cluster] -> columns

// The codings whose sums answer every label set.
//   * per set: one coding per label set (width = sum of k), each cluster one column;
//   * cells: the joint partition of all the sets (samples with the same label in
//     every set share a cell), used when it has fewer cells than the per-set width.
//     Each distance is then added once per row and once per column instead of
//     once per set, and a cluster's sum is the sum of its cells' sums.
// Both are fixed functions of the labels, so the sums do not depend on threads.
struct SumPlan {
  std::vector<Coding> codings;
  std::vector<int32_t> cells;  // storage of the joint coding
  ColumnMap columns;
  int64_t width = 0;
  int32_t max_codes = 0;
};

SumPlan plan_sums(const std::vector<const int32_t*>& labels, const std::vector<int32_t>& n_clusters,
                  const LabelSets& sets, int64_t n) {
  const size_t n_sets = labels.size();
  SumPlan plan;
  if (n_sets >= 2) {
    // Joint cell ids, dense in order of first appearance, one set at a time;
    // stop as soon as the cells are no fewer than the per-set columns.
    std::vector<int32_t> cell(labels[0], labels[0] + n);
    int64_t n_cells = n_clusters[0];
    std::vector<int32_t> table;
    for (size_t s = 1; s < n_sets && n_cells < sets.width; ++s) {
      const int64_t k = n_clusters[s];
      table.assign(static_cast<size_t>(n_cells * k), -1);
      int32_t next = 0;
      for (int64_t i = 0; i < n; ++i) {
        int32_t& id = table[static_cast<size_t>(cell[i]) * k + labels[s][i]];
        if (id < 0) id = next++;
        cell[i] = id;
      }
      n_cells = next;
    }
    if (n_cells < sets.width) {
      std::vector<int32_t> first(n_cells, -1);
      for (int64_t i = 0; i < n; ++i)
        if (first[cell[i]] < 0) first[cell[i]] = static_cast<int32_t>(i);
      plan.columns.resize(n_sets);
      for (size_t s = 0; s < n_sets; ++s) {
        plan.columns[s].resize(n_clusters[s]);
        for (int64_t c = 0; c < n_cells; ++c) plan.columns[s][labels[s][first[c]]].push_back(c);
      }
      plan.cells = std::move(cell);
      plan.codings.push_back({plan.cells.data(), static_cast<int32_t>(n_cells), 0});
      plan.width = plan.max_codes = static_cast<int32_t>(n_cells);
      return plan;
    }
  }
  plan.columns.resize(n_sets);
  for (size_t s = 0; s < n_sets; ++s) {
    plan.codings.push_back({labels[s], n_clusters[s], sets.offset[s]});
    plan.columns[s].resize(n_clusters[s]);
    for (int32_t c = 0; c < n_clusters[s]; ++c) plan.columns[s][c].push_back(sets.offset[s] + c);
  }
  plan.width = sets.width;
  plan.max_codes = static_cast<int32_t>(sets.max_k);
  return plan;
}

// Sum of distances from every sample to every code of every coding:
// direct(i, col) + mirror(col, i).
struct ClusterDistanceSums {
  MatD direct;  // (sample, column)
  MatD mirror;  // (column, sample)
};

// Each distance is computed once: block pairs (I, J >= I) of the upper
// triangle. Rows of I take their sums over the columns of J directly
// ("direct", row-wise); rows of J take their sums over the rows of I
// ("mirror"), first in a per-thread buffer, then merged into the shared
// mirror sums in the order of I (an OpenMP ordered section). Every sum is
// therefore formed in a fixed order, whatever the number of threads.
template <typename T>
ClusterDistanceSums cluster_distance_sums(const T* X, int64_t n, int64_t d, const std::vector<double>& mean,
                                          const SumPlan& plan, int nt) {
  const int64_t width = plan.width;
  const int64_t B = kBlock;
  const int64_t nb = (n + B - 1) / B;
  ClusterDistanceSums sums;
  MatD& direct = sums.direct;
  MatD& mirror = sums.mirror;
  direct = MatD::Zero(n, width);
  mirror = MatD::Zero(width, n);
  std::atomic<bool> stop{false};
  OmpExceptionCapture cap;
#pragma omp parallel num_threads(nt)
  {
    MatD local;  // this thread's mirror contributions of the current block row
    MatD XI, XJ, D;
    Eigen::VectorXd nI, nJ;
    std::vector<double> acc4(4 * static_cast<size_t>(plan.max_codes));
#pragma omp for ordered schedule(static, 1)
    for (int64_t I = 0; I < nb; ++I) {
      const int64_t r0 = I * B, r1 = std::min(n, r0 + B), nr = r1 - r0;
      cap.run([&] {
        if (omp_get_thread_num() == 0 && InterruptCallback::is_interrupted()) stop = true;
        if (stop) return;
        if (local.rows() != width || local.cols() != n) local = MatD::Zero(width, n);
        load_rows(X, d, r0, r1, mean, XI, nI);
        for (int64_t J = I; J < nb; ++J) {
          const int64_t c0 = J * B, c1 = std::min(n, c0 + B), nc = c1 - c0;
          if (J == I) XJ = XI, nJ = nI;
          else load_rows(X, d, c0, c1, mean, XJ, nJ);
          D.resize(nr, nc);
          D.noalias() = XI * XJ.transpose();
          for (int64_t i = 0; i < nr; ++i) {
            double* drow = D.row(i).data();
            const double ni = nI[i];
            const double* nj = nJ.data();
            for (int64_t j = 0; j < nc; ++j) drow[j] = std::max(ni + nj[j] - 2.0 * drow[j], 0.0);
            Eigen::Map<Eigen::ArrayXd> row(drow, nc);
            row = row.sqrt();  // vectorised (Eigen's packet sqrt, correctly rounded)
            if (J == I) drow[i] = 0.0;
            for (const Coding& cd : plan.codings) {
              add_cluster_sums(drow, cd.code + c0, nc, cd.n_codes, acc4, direct.row(r0 + i).data() + cd.offset);
              // mirror: row i of this block is column i for the samples of J
              if (J > I) {
                double* dst = local.row(cd.offset + cd.code[r0 + i]).data() + c0;
                for (int64_t jj = 0; jj < nc; ++jj) dst[jj] += drow[jj];
              }
            }
          }
        }
      });
#pragma omp ordered
      {
        if (local.rows() == width && r1 < n) {
          for (int64_t c = 0; c < width; ++c) {
            double* m = mirror.row(c).data();
            double* l = local.row(c).data();
            for (int64_t j = r1; j < n; ++j) m[j] += l[j], l[j] = 0.0;
          }
        }
      }
    }
  }
  cap.rethrow();
  if (stop) throw Interrupted();
  return sums;
}

// s(i) = (b - a) / max(a, b) from the distance sums (0 for singleton clusters).
std::vector<std::vector<double>> silhouette_values(const ClusterDistanceSums& sums, const ColumnMap& columns,
                                                   const std::vector<const int32_t*>& labels,
                                                   const std::vector<int32_t>& n_clusters, const LabelSets& sets,
                                                   int64_t n) {
  const size_t n_sets = labels.size();
  std::vector<std::vector<double>> out(n_sets, std::vector<double>(n, 0.0));
  std::vector<double> acc(sets.max_k);
  for (size_t s = 0; s < n_sets; ++s) {
    const int32_t k = n_clusters[s];
    const auto& freq = sets.freq[s];
    for (int64_t i = 0; i < n; ++i) {
      for (int32_t c = 0; c < k; ++c) {
        double v = 0;
        for (int64_t col : columns[s][c]) v += sums.direct(i, col) + sums.mirror(col, i);
        acc[c] = v;
      }
      const int32_t own = labels[s][i];
      double v = 0;
      if (freq[own] > 1) {
        const double a = acc[own] / static_cast<double>(freq[own] - 1);
        double bmin = std::numeric_limits<double>::infinity();
        for (int32_t c = 0; c < k; ++c)
          if (c != own) bmin = std::min(bmin, acc[c] / static_cast<double>(freq[c]));
        const double m = std::max(a, bmin);
        v = m > 0 ? (bmin - a) / m : 0.0;
      }
      out[s][i] = v;
    }
  }
  return out;
}

}  // namespace

double ordered_mean(const std::vector<double>& v) {
  double s = 0;
  for (double x : v) s += x;
  return v.empty() ? 0.0 : s / static_cast<double>(v.size());
}

template <typename T>
std::vector<std::vector<double>> silhouette_samples_multi(const T* X, int64_t n, int64_t d,
                                                          const std::vector<const int32_t*>& labels,
                                                          const std::vector<int32_t>& n_clusters, int n_threads,
                                                          const ComputeDevice& device) {
  STEMROI_CHECK(n >= 1 && d >= 1, "silhouette needs a non-empty 2-D array, got shape ", shape_str({n, d}));
  const LabelSets sets = check_label_sets(labels, n_clusters, n);
  if (device.is_cuda()) {
    // The GPU's sums come whole, in the (cluster column, sample) layout of mirror.
    ClusterDistanceSums sums;
    sums.direct = MatD::Zero(n, sets.width);
    sums.mirror.resize(sets.width, n);
    cuda::cluster_distance_sums(X, n, d, labels, sets.offset, device.index, sums.mirror.data());
    ColumnMap columns(labels.size());
    for (size_t s = 0; s < labels.size(); ++s)
      for (int32_t c = 0; c < n_clusters[s]; ++c) columns[s].push_back({sets.offset[s] + c});
    return silhouette_values(sums, columns, labels, n_clusters, sets, n);
  }
  const std::vector<double> mean = feature_mean(X, n, d);
  const SumPlan plan = plan_sums(labels, n_clusters, sets, n);
  const ClusterDistanceSums sums = cluster_distance_sums(X, n, d, mean, plan, resolve_n_threads(n_threads));
  return silhouette_values(sums, plan.columns, labels, n_clusters, sets, n);
}

template <typename T>
NClustersSweep<T> select_n_clusters(const T* X, int64_t n, int64_t d, const std::vector<int64_t>& k_values,
                                    const KMeansOptions& base, const std::vector<int64_t>& sample_idx) {
  STEMROI_CHECK(!k_values.empty(), "k_range must contain at least one value");
  const int64_t m = sample_idx.empty() ? n : static_cast<int64_t>(sample_idx.size());
  for (int64_t k : k_values)
    STEMROI_CHECK(k >= 2 && k <= m - 1, "every k must be between 2 and n_samples - 1 = ", m - 1,
                  " (silhouette needs 2 <= k <= n_samples - 1), got ", k);
  NClustersSweep<T> res;
  res.k_values = k_values;
  InterruptCallback::check();
  for (KMeansFit<T>& fit : kmeans_fit_many(X, n, d, k_values, base)) {
    res.inertias.push_back(fit.inertia);
    res.n_iter.push_back(fit.n_iter);
    res.labels.push_back(std::move(fit.labels));
    res.centers.push_back(std::move(fit.centers));
  }
  InterruptCallback::check();
  // Silhouette rows (all, or the sample) and labels re-encoded to the clusters
  // present there (as scikit-learn's LabelEncoder in silhouette_samples).
  std::vector<T> Xs;
  const T* Xp = X;
  if (!sample_idx.empty()) {
    Xs.resize(m * d);
    for (int64_t i = 0; i < m; ++i) {
      const int64_t r = sample_idx[i];
      STEMROI_CHECK(r >= 0 && r < n, "sample index ", r, " out of range for ", n, " samples");
      std::copy(X + r * d, X + (r + 1) * d, Xs.begin() + i * d);
    }
    Xp = Xs.data();
  }
  std::vector<std::vector<int32_t>> codes(k_values.size(), std::vector<int32_t>(m));
  std::vector<const int32_t*> ptrs;
  std::vector<int32_t> ks;
  for (size_t s = 0; s < k_values.size(); ++s) {
    std::vector<int32_t> remap(k_values[s], -1);
    const auto& lab = res.labels[s];
    for (int64_t i = 0; i < m; ++i) remap[lab[sample_idx.empty() ? i : sample_idx[i]]] = 1;
    int32_t next = 0;
    for (auto& r : remap)
      if (r == 1) r = next++;
    for (int64_t i = 0; i < m; ++i) codes[s][i] = remap[lab[sample_idx.empty() ? i : sample_idx[i]]];
    // Identical rows (blank or constant patches) leave K-means one non-empty cluster, for which
    // the silhouette is undefined: say so instead of the silhouette's "Number of labels is 1".
    STEMROI_CHECK(next >= 2, "k = ", k_values[s], ": K-means found ", next, " distinct cluster among the ", m,
                  " samples", sample_idx.empty() ? "" : " scored by the silhouette",
                  ": they are all identical (blank or constant input?); the silhouette needs at least 2 "
                  "distinct points");
    ptrs.push_back(codes[s].data());
    ks.push_back(next);
  }
  auto sil = silhouette_samples_multi(Xp, m, d, ptrs, ks, base.n_threads, base.device);
  for (auto& v : sil) res.scores.push_back(ordered_mean(v));
  return res;
}

#define STEMROI_SIL_INSTANTIATE(T)                                                                          \
  template std::vector<std::vector<double>> silhouette_samples_multi<T>(                                   \
      const T*, int64_t, int64_t, const std::vector<const int32_t*>&, const std::vector<int32_t>&, int,    \
      const ComputeDevice&);                                                                               \
  template NClustersSweep<T> select_n_clusters<T>(const T*, int64_t, int64_t, const std::vector<int64_t>&, \
                                                  const KMeansOptions&, const std::vector<int64_t>&);
STEMROI_SIL_INSTANTIATE(float)
STEMROI_SIL_INSTANTIATE(double)

}  // namespace stemroi
