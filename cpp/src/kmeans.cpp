#include "stemroi/kmeans.hpp"

#include <omp.h>

#include <Eigen/Dense>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <numeric>
#include <random>

#include "stemroi/callbacks.hpp"
#include "stemroi/cuda.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"

namespace stemroi {
namespace {

template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using CMap = Eigen::Map<const RowMat<T>>;

uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// Portable draws from mt19937_64 (the std distributions differ between libraries).
struct Rng {
  explicit Rng(uint64_t seed) : gen(seed) {}
  double uniform() { return static_cast<double>(gen() >> 11) * 0x1.0p-53; }
  int64_t randint(int64_t n) { return static_cast<int64_t>(gen() % static_cast<uint64_t>(n)); }
  std::mt19937_64 gen;
};

// Squared distance in double; four partial sums (fixed order) keep the
// dependency chain short.
template <typename T>
double sqdist(const T* a, const T* b, int64_t d) {
  double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  int64_t j = 0;
  for (; j + 4 <= d; j += 4) {
    const double t0 = static_cast<double>(a[j]) - static_cast<double>(b[j]);
    const double t1 = static_cast<double>(a[j + 1]) - static_cast<double>(b[j + 1]);
    const double t2 = static_cast<double>(a[j + 2]) - static_cast<double>(b[j + 2]);
    const double t3 = static_cast<double>(a[j + 3]) - static_cast<double>(b[j + 3]);
    s0 += t0 * t0, s1 += t1 * t1, s2 += t2 * t2, s3 += t3 * t3;
  }
  for (; j < d; ++j) {
    const double t = static_cast<double>(a[j]) - static_cast<double>(b[j]);
    s0 += t * t;
  }
  return (s0 + s1) + (s2 + s3);
}

int64_t n_chunks_of(int64_t n) { return (n + kReduceChunk - 1) / kReduceChunk; }

using RowMatD = RowMat<double>;

// Squared norms (double) of the rows of X.
template <typename T>
std::vector<double> row_sqnorms(const T* X, int64_t n, int64_t d, int nt) {
  std::vector<double> out(n);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t i = 0; i < n; ++i) {
    const T* x = X + i * d;
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t j = 0;
    for (; j + 4 <= d; j += 4) {
      const double t0 = x[j], t1 = x[j + 1], t2 = x[j + 2], t3 = x[j + 3];
      s0 += t0 * t0, s1 += t1 * t1, s2 += t2 * t2, s3 += t3 * t3;
    }
    for (; j < d; ++j) s0 += static_cast<double>(x[j]) * x[j];
    out[i] = (s0 + s1) + (s2 + s3);
  }
  return out;
}

// Centres prepared for squared distances by the GEMM form in double,
// ||x||^2 + ||c||^2 - 2 x.c (clamped at 0), as scikit-learn's k-means.
// Up to 16 centres: transposed and padded to KP = 4, 8 or 16 columns, so that one
// sample's distances to all of them are d broadcast multiply-adds of a
// KP-vector, four samples at a time (independent chains); more centres: an
// Eigen GEMM on gathered rows. Either way each sample's values depend only on
// that sample and the centres (fixed inner order), never on which other
// samples share a group, so results do not depend on the thread split.
struct Centres {
  int64_t k = 0, d = 0, kp = 0;  // kp = 0: GEMM route
  std::vector<double> ct;        // (d, kp) when kp > 0
  RowMatD C;                     // (k, d) when kp == 0
  std::vector<double> cn;        // (max(k, kp),) squared norms
};

template <typename T>
void prepare_centres(const T* centers, int64_t k, int64_t d, Centres& P) {
  P.k = k, P.d = d;
  P.kp = k <= 4 ? 4 : (k <= 8 ? 8 : (k <= 16 ? 16 : 0));
  P.cn.assign(std::max(k, P.kp), 0.0);
  for (int64_t c = 0; c < k; ++c) {
    double s = 0;
    for (int64_t j = 0; j < d; ++j) s += static_cast<double>(centers[c * d + j]) * static_cast<double>(centers[c * d + j]);
    P.cn[c] = s;
  }
  if (P.kp > 0) {
    P.ct.assign(static_cast<size_t>(d * P.kp), 0.0);
    for (int64_t c = 0; c < k; ++c)
      for (int64_t j = 0; j < d; ++j) P.ct[j * P.kp + c] = static_cast<double>(centers[c * d + j]);
  } else {
    P.C.resize(k, d);
    for (int64_t c = 0; c < k; ++c)
      for (int64_t j = 0; j < d; ++j) P.C(c, j) = static_cast<double>(centers[c * d + j]);
  }
}

template <int KP, typename T>
void sqdist_group4(const T* const* x, const double* xn4, const Centres& P, double* out, int64_t ld) {
  using Vec = Eigen::Array<double, KP, 1>;
  Vec a0 = Vec::Zero(), a1 = Vec::Zero(), a2 = Vec::Zero(), a3 = Vec::Zero();
  const double* ct = P.ct.data();
  for (int64_t j = 0; j < P.d; ++j, ct += KP) {
    const Eigen::Map<const Vec> c(ct);
    a0 += static_cast<double>(x[0][j]) * c;
    a1 += static_cast<double>(x[1][j]) * c;
    a2 += static_cast<double>(x[2][j]) * c;
    a3 += static_cast<double>(x[3][j]) * c;
  }
  const Eigen::Map<const Vec> cn(P.cn.data());
  const Vec* acc[4] = {&a0, &a1, &a2, &a3};
  for (int r = 0; r < 4; ++r)
    Eigen::Map<Vec>(out + r * ld) = (xn4[r] + cn - 2.0 * *acc[r]).max(0.0);
}

// out (m, ld >= max(k, kp)): squared distances of the samples rows[0, m)
// (or r0, r0 + 1, ... when rows is null) to the centres; columns >= k are junk.
template <typename T>
void sqdist_rows(const T* X, const double* xn, const int64_t* rows, int64_t r0, int64_t m, const Centres& P,
                 RowMatD& out, RowMatD& scratch) {
  const int64_t d = P.d;
  auto row_of = [&](int64_t i) { return rows ? rows[i] : r0 + i; };
  if (P.kp > 0) {
    out.resize(m, P.kp);
    for (int64_t i = 0; i < m; i += 4) {
      const T* xp[4];
      double xn4[4];
      double tail[4 * 16];
      const bool full = i + 4 <= m;
      for (int r = 0; r < 4; ++r) {
        const int64_t rr = row_of(std::min(i + r, m - 1));  // a short group repeats its last sample
        xp[r] = X + rr * d;
        xn4[r] = xn[rr];
      }
      double* dst = full ? out.row(i).data() : tail;
      if (P.kp == 4) sqdist_group4<4>(xp, xn4, P, dst, P.kp);
      else if (P.kp == 8) sqdist_group4<8>(xp, xn4, P, dst, P.kp);
      else sqdist_group4<16>(xp, xn4, P, dst, P.kp);
      if (!full)
        for (int64_t r = 0; i + r < m; ++r) std::copy(tail + r * P.kp, tail + (r + 1) * P.kp, out.row(i + r).data());
    }
    return;
  }
  scratch.resize(m, d);
  for (int64_t i = 0; i < m; ++i) {
    const T* x = X + row_of(i) * d;
    for (int64_t j = 0; j < d; ++j) scratch(i, j) = static_cast<double>(x[j]);
  }
  out.resize(m, P.k);
  out.noalias() = scratch * P.C.transpose();
  for (int64_t i = 0; i < m; ++i) {
    const double xi = xn[row_of(i)];
    double* o = out.row(i).data();
    for (int64_t c = 0; c < P.k; ++c) o[c] = std::max(xi + P.cn[c] - 2.0 * o[c], 0.0);
  }
}

// Polled between iterations: from the master thread only (it owns Python's
// signal handling); other threads see the shared flag.
struct StopFlag {
  std::atomic<bool> stop{false};
  bool poll() {
    if (omp_get_thread_num() == 0 && !stop.load(std::memory_order_relaxed) && InterruptCallback::is_interrupted())
      stop = true;
    return stop.load(std::memory_order_relaxed);
  }
};

// E-step: nearest centre by argmin(||c||^2 - 2 x.c) with a GEMM per chunk of
// rows (as scikit-learn's lloyd); first minimum wins.
template <typename T>
void assign_labels(const T* X, int64_t n, int64_t d, const T* centers, int64_t k, int32_t* labels, int nt) {
  CMap<T> C(centers, k, d);
  Eigen::Matrix<T, 1, Eigen::Dynamic> cnorm = C.rowwise().squaredNorm().transpose();
  const int64_t n_chunks = n_chunks_of(n);
  OmpExceptionCapture cap;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t c = 0; c < n_chunks; ++c) {
    cap.run([&] {
      const int64_t r0 = c * kReduceChunk, r1 = std::min(n, r0 + kReduceChunk);
      RowMat<T> D(r1 - r0, k);
      D.noalias() = CMap<T>(X + r0 * d, r1 - r0, d) * C.transpose();
      for (int64_t i = 0; i < r1 - r0; ++i) {
        int32_t best = 0;
        T best_v = cnorm[0] - T(2) * D(i, 0);
        for (int64_t j = 1; j < k; ++j) {
          T v = cnorm[j] - T(2) * D(i, j);
          if (v < best_v) best_v = v, best = static_cast<int32_t>(j);
        }
        labels[r0 + i] = best;
      }
    });
  }
  cap.rethrow();
}

// Sum of squared distances to the assigned centres, in fixed chunk order.
template <typename T>
double inertia_of(const T* X, int64_t n, int64_t d, const T* centers, const int32_t* labels, int nt) {
  const int64_t n_chunks = n_chunks_of(n);
  std::vector<double> part(n_chunks, 0.0);
  OmpExceptionCapture cap;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t c = 0; c < n_chunks; ++c) {
    cap.run([&] {
      double s = 0;
      for (int64_t i = c * kReduceChunk; i < std::min(n, (c + 1) * kReduceChunk); ++i)
        s += sqdist(X + i * d, centers + static_cast<int64_t>(labels[i]) * d, d);
      part[c] = s;
    });
  }
  cap.rethrow();
  double total = 0;
  for (double p : part) total += p;
  return total;
}

// Per-cluster sums of the samples (double) and counts, kept from one
// iteration to the next: after the first, only the samples whose label
// changed are moved (subtracted from the old cluster's sum, added to the new),
// in sample order. The sums are a fixed function of the label history, so they
// do not depend on the thread split.
struct ClusterSums {
  std::vector<double> sums, counts;
  std::vector<int32_t> labels;  // the labels the sums hold
  bool valid = false;
};

// M-step: new centres as label means (sums in double, each element summed in
// row order whatever the thread split: threads own column blocks), with
// scikit-learn's relocation of empty clusters to the farthest samples.
// Returns the total squared centre shift.
template <typename T>
double update_centers(const T* X, int64_t n, int64_t d, const T* old_centers, int64_t k, const int32_t* labels,
                      T* new_centers, int nt, ClusterSums& cs) {
  const int64_t n_blocks = nt > 1 ? std::min<int64_t>(d, 4 * nt) : 1;
  const int64_t bw = (d + n_blocks - 1) / n_blocks;
  OmpExceptionCapture cap;
  if (!cs.valid) {
    cs.sums.assign(k * d, 0.0);
    cs.counts.assign(k, 0.0);
    for (int64_t i = 0; i < n; ++i) cs.counts[labels[i]] += 1.0;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t b = 0; b < n_blocks; ++b) {
      cap.run([&] {
        const int64_t j0 = b * bw, j1 = std::min(d, j0 + bw);
        for (int64_t i = 0; i < n; ++i) {
          const T* x = X + i * d;
          double* s = cs.sums.data() + static_cast<int64_t>(labels[i]) * d;
          for (int64_t j = j0; j < j1; ++j) s[j] += static_cast<double>(x[j]);
        }
      });
    }
    cap.rethrow();
    cs.labels.assign(labels, labels + n);
    cs.valid = true;
  } else {
    std::vector<int64_t> moved;
    for (int64_t i = 0; i < n; ++i)
      if (labels[i] != cs.labels[i]) moved.push_back(i);
    for (int64_t i : moved) cs.counts[cs.labels[i]] -= 1.0, cs.counts[labels[i]] += 1.0;
    const int64_t nb = moved.size() > 64 ? n_blocks : 1;
    const int64_t bwm = (d + nb - 1) / nb;
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1 && nb > 1)
    for (int64_t b = 0; b < nb; ++b) {
      cap.run([&] {
        const int64_t j0 = b * bwm, j1 = std::min(d, j0 + bwm);
        for (int64_t i : moved) {
          const T* x = X + i * d;
          double* from = cs.sums.data() + static_cast<int64_t>(cs.labels[i]) * d;
          double* to = cs.sums.data() + static_cast<int64_t>(labels[i]) * d;
          for (int64_t j = j0; j < j1; ++j) from[j] -= static_cast<double>(x[j]), to[j] += static_cast<double>(x[j]);
        }
      });
    }
    cap.rethrow();
    for (int64_t i : moved) cs.labels[i] = labels[i];
  }
  std::vector<double> sums_copy, counts_copy;
  const std::vector<double>* sums_p = &cs.sums;
  const std::vector<double>* counts_p = &cs.counts;
  std::vector<int64_t> empty;
  for (int64_t c = 0; c < k; ++c)
    if (cs.counts[c] == 0) empty.push_back(c);
  if (!empty.empty()) {
    // Relocation changes the centres, not the labels: work on copies so the
    // kept sums stay those of the labels.
    sums_copy = cs.sums, counts_copy = cs.counts;
    std::vector<double>& sums = sums_copy;
    std::vector<double>& counts = counts_copy;
    sums_p = &sums_copy, counts_p = &counts_copy;
    std::vector<double> dist(n);
    for (int64_t i = 0; i < n; ++i) dist[i] = sqdist(X + i * d, old_centers + static_cast<int64_t>(labels[i]) * d, d);
    std::vector<int64_t> order(n);
    std::iota(order.begin(), order.end(), 0);
    const int64_t m = std::min<int64_t>(empty.size(), n);
    std::partial_sort(order.begin(), order.begin() + m, order.end(), [&](int64_t a, int64_t b) {
      return dist[a] > dist[b] || (dist[a] == dist[b] && a < b);
    });
    for (int64_t e = 0; e < m; ++e) {
      const int64_t far = order[e], to = empty[e], from = labels[far];
      for (int64_t j = 0; j < d; ++j) {
        sums[from * d + j] -= static_cast<double>(X[far * d + j]);
        sums[to * d + j] = static_cast<double>(X[far * d + j]);
      }
      counts[to] = 1.0;
      counts[from] -= 1.0;
    }
  }
  const std::vector<double>& sums = *sums_p;
  const std::vector<double>& counts = *counts_p;
  double shift = 0;
  for (int64_t c = 0; c < k; ++c) {
    const double alpha = counts[c] > 0 ? 1.0 / counts[c] : 1.0;
    double s = 0;
    for (int64_t j = 0; j < d; ++j) {
      new_centers[c * d + j] = static_cast<T>(sums[c * d + j] * alpha);
      double t = static_cast<double>(new_centers[c * d + j]) - static_cast<double>(old_centers[c * d + j]);
      s += t * t;
    }
    shift += s;
  }
  return shift;
}

// Hamerly's bounds (exact Lloyd, fewer distances): ub >= distance to the
// assigned centre, lb <= distance to the second closest. A sample whose ub is
// below max(lb, half the gap from its centre to the nearest other centre)
// cannot change cluster, so its distances are skipped. Each sample is handled
// on its own, so the result does not depend on the thread split.
struct Bounds {
  std::vector<double> ub, lb;
  bool valid = false;
};

template <typename T>
void assign_bounded(const T* X, int64_t n, int64_t d, const double* xn, const T* centers, int64_t k, int32_t* labels,
                    Bounds& b, int nt) {
  const double inf = std::numeric_limits<double>::infinity();
  std::vector<double> half_gap(k, inf);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t j2 = j + 1; j2 < k; ++j2) {
      const double g = 0.5 * std::sqrt(sqdist(centers + j * d, centers + j2 * d, d));
      half_gap[j] = std::min(half_gap[j], g);
      half_gap[j2] = std::min(half_gap[j2], g);
    }
  Centres P;
  prepare_centres(centers, k, d, P);
  if (!b.valid) {
    b.ub.assign(n, inf);
    b.lb.assign(n, 0.0);
  }
  const bool valid = b.valid;
  const int64_t n_chunks = n_chunks_of(n);
  OmpExceptionCapture cap;
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    std::vector<int64_t> todo;
    RowMatD D2, scratch;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < n_chunks; ++c) {
      cap.run([&] {
        todo.clear();
        for (int64_t i = c * kReduceChunk; i < std::min(n, (c + 1) * kReduceChunk); ++i) {
          if (valid && b.ub[i] <= std::max(half_gap[labels[i]], b.lb[i])) continue;  // cannot change cluster
          todo.push_back(i);
        }
        if (todo.empty()) return;
        // Distances to every centre of the samples that may change cluster.
        sqdist_rows(X, xn, todo.data(), 0, static_cast<int64_t>(todo.size()), P, D2, scratch);
        for (size_t t = 0; t < todo.size(); ++t) {
          const double* dr = D2.row(static_cast<int64_t>(t)).data();
          int32_t best = 0;
          double d1 = dr[0], d2 = inf;
          for (int64_t j = 1; j < k; ++j) {
            const double dj = dr[j];
            if (dj < d1) d2 = d1, d1 = dj, best = static_cast<int32_t>(j);
            else if (dj < d2) d2 = dj;
          }
          const int64_t i = todo[t];
          labels[i] = best;
          b.ub[i] = std::sqrt(d1);
          b.lb[i] = std::sqrt(d2);
        }
      });
    }
  }
  cap.rethrow();
  b.valid = true;
}

// Loosen the bounds by how far the centres moved.
template <typename T>
void shift_bounds(const T* old_c, const T* new_c, int64_t k, int64_t d, const int32_t* labels, int64_t n, Bounds& b) {
  std::vector<double> p(k);
  int64_t top = 0;
  for (int64_t j = 0; j < k; ++j) {
    p[j] = std::sqrt(sqdist(old_c + j * d, new_c + j * d, d));
    if (p[j] > p[top]) top = j;
  }
  double second = 0;
  for (int64_t j = 0; j < k; ++j)
    if (j != top) second = std::max(second, p[j]);
  for (int64_t i = 0; i < n; ++i) {
    b.ub[i] += p[labels[i]];
    b.lb[i] -= (labels[i] == top ? second : p[top]);
  }
}

// Lloyd's iterations. `assign(centers, labels)` sets every label to the
// nearest centre; `moved(old, new, labels)` is told how the centres moved
// (the bounded assignment loosens its bounds there). Converged when the labels
// repeat (strict) or the centres shift by at most tol.
template <typename T, typename Assign, typename Moved>
KMeansFit<T> lloyd_iterations(const T* X, int64_t n, int64_t d, int64_t k, std::vector<T> centers, int max_iter,
                              double tol, int nt, StopFlag& stop, Assign&& assign, Moved&& moved) {
  KMeansFit<T> out;
  std::vector<int32_t> labels(n), labels_old(n, -1);
  std::vector<T> new_centers(k * d);
  bool strict = false;
  int it = 0;
  ClusterSums cs;
  for (; it < max_iter; ++it) {
    assign(centers.data(), labels.data());
    double shift = update_centers(X, n, d, centers.data(), k, labels.data(), new_centers.data(), nt, cs);
    moved(centers.data(), new_centers.data(), labels.data());
    std::swap(centers, new_centers);
    if (labels == labels_old) {
      strict = true;
      break;
    }
    if (shift <= tol) break;
    labels_old = labels;
    if (stop.poll()) return out;
  }
  if (it == max_iter) it = max_iter - 1;
  // Labels consistent with the final centres (as scikit-learn).
  if (!strict) assign(centers.data(), labels.data());
  out.inertia = inertia_of(X, n, d, centers.data(), labels.data(), nt);
  out.n_iter = it + 1;
  out.centers = std::move(centers);
  out.labels = std::move(labels);
  return out;
}

// Lloyd with Elkan-style bounds that skip samples whose nearest centre cannot change.
template <typename T>
KMeansFit<T> lloyd(const T* X, int64_t n, int64_t d, const double* xn, int64_t k, std::vector<T> centers,
                   int max_iter, double tol, int nt, StopFlag& stop) {
  Bounds bounds;
  return lloyd_iterations<T>(
      X, n, d, k, std::move(centers), max_iter, tol, nt, stop,
      [&](const T* c, int32_t* labels) { assign_bounded(X, n, d, xn, c, k, labels, bounds, nt); },
      [&](const T* old_c, const T* new_c, const int32_t* labels) { shift_bounds(old_c, new_c, k, d, labels, n, bounds); });
}

// Lloyd with a full nearest-centre assignment by `assign` (the GPU's) in place
// of the bounded one: the same iterations as lloyd, hence the same result,
// since the bounds skip only samples whose nearest centre cannot change.
template <typename T, typename Assign>
KMeansFit<T> lloyd_full(const T* X, int64_t n, int64_t d, int64_t k, std::vector<T> centers, int max_iter,
                        double tol, int nt, StopFlag& stop, Assign&& assign) {
  return lloyd_iterations<T>(X, n, d, k, std::move(centers), max_iter, tol, nt, stop, assign,
                             [](const T*, const T*, const int32_t*) {});
}

bool same_clustering(const std::vector<int32_t>& a, const std::vector<int32_t>& b, int64_t k) {
  std::vector<int32_t> map(k, -1);
  for (size_t i = 0; i < a.size(); ++i) {
    if (map[a[i]] == -1) map[a[i]] = b[i];
    else if (map[a[i]] != b[i]) return false;
  }
  return true;
}

// Greedy k-means++; squared distances by the GEMM form in double (as
// scikit-learn's), per chunk of rows; chunk partial sums combined in order.
template <typename T>
std::vector<T> plusplus(const T* X, int64_t n, int64_t d, const double* xn, int64_t k, uint64_t seed, int nt) {
  Rng rng(seed);
  std::vector<T> centers(k * d);
  const int trials = 2 + static_cast<int>(std::log(static_cast<double>(k)));
  const int64_t n_chunks = n_chunks_of(n);
  int64_t first = rng.randint(n);
  std::copy(X + first * d, X + (first + 1) * d, centers.begin());
  std::vector<double> closest(n);
  std::vector<double> part(n_chunks * trials);
  std::vector<int64_t> cand(trials);
  std::vector<double> cand_dist(static_cast<size_t>(trials) * n);
  Centres P;
  OmpExceptionCapture cap;
  // dist(t, i) = squared distance of sample i to candidate t (centres of P);
  // with `clip`, min(closest[i], that). Partial sums per (chunk, t).
  auto distances = [&](int n_cand, bool clip) {
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
      RowMatD D2, scratch;
#pragma omp for schedule(static)
      for (int64_t c = 0; c < n_chunks; ++c) {
        cap.run([&] {
          const int64_t r0 = c * kReduceChunk, r1 = std::min(n, r0 + kReduceChunk);
          sqdist_rows(X, xn, nullptr, r0, r1 - r0, P, D2, scratch);
          for (int t = 0; t < n_cand; ++t) {
            double s = 0;
            double* dt = clip ? cand_dist.data() + static_cast<size_t>(t) * n : closest.data();
            for (int64_t i = r0; i < r1; ++i) {
              const double v = D2(i - r0, t);
              s += (dt[i] = clip ? std::min(closest[i], v) : v);
            }
            part[c * trials + t] = s;
          }
        });
      }
    }
    cap.rethrow();
  };
  prepare_centres(X + first * d, 1, d, P);
  distances(1, false);
  double pot = 0;
  for (int64_t c = 0; c < n_chunks; ++c) pot += part[c * trials];
  std::vector<double> cum(n);
  std::vector<T> cand_rows(static_cast<size_t>(trials) * d);
  for (int64_t ci = 1; ci < k; ++ci) {
    double acc = 0;
    for (int64_t i = 0; i < n; ++i) cum[i] = (acc += closest[i]);
    for (int t = 0; t < trials; ++t) {
      double r = rng.uniform() * pot;
      int64_t id = std::lower_bound(cum.begin(), cum.end(), r) - cum.begin();
      cand[t] = std::min(id, n - 1);
      std::copy(X + cand[t] * d, X + (cand[t] + 1) * d, cand_rows.begin() + t * d);
    }
    prepare_centres(cand_rows.data(), trials, d, P);
    distances(trials, true);
    int best = 0;
    double best_pot = 0;
    for (int t = 0; t < trials; ++t) {
      double p = 0;
      for (int64_t c = 0; c < n_chunks; ++c) p += part[c * trials + t];
      if (t == 0 || p < best_pot) best_pot = p, best = t;
    }
    pot = best_pot;
    std::copy(cand_dist.begin() + static_cast<size_t>(best) * n, cand_dist.begin() + static_cast<size_t>(best + 1) * n,
              closest.begin());
    std::copy(X + cand[best] * d, X + (cand[best] + 1) * d, centers.begin() + ci * d);
  }
  return centers;
}

}  // namespace

uint64_t derive_seed(uint64_t seed, uint64_t run) { return splitmix64(seed ^ splitmix64(run + 0x5851F42D4C957F2DULL)); }

template <typename T>
std::vector<T> kmeans_plusplus(const T* X, int64_t n, int64_t d, int64_t k, uint64_t seed, int n_threads) {
  STEMROI_CHECK(k >= 1 && k <= n, "n_clusters must be between 1 and n_samples=", n, ", got ", k);
  const int nt = resolve_n_threads(n_threads);
  const std::vector<double> xn = row_sqnorms(X, n, d, nt);
  return plusplus(X, n, d, xn.data(), k, seed, nt);
}

template <typename T>
std::vector<KMeansFit<T>> kmeans_fit_many(const T* X, int64_t n, int64_t d, const std::vector<int64_t>& ks,
                                          const KMeansOptions& opt, const T* init) {
  STEMROI_CHECK(n >= 1 && d >= 1, "KMeans needs a non-empty 2-D array, got shape ", shape_str({n, d}));
  STEMROI_CHECK(!ks.empty() && (!init || ks.size() == 1), "kmeans: an init array needs exactly one n_clusters");
  for (int64_t k : ks) {
    STEMROI_CHECK(k >= 1, "n_clusters must be >= 1, got ", k);
    STEMROI_CHECK(k <= n, "n_samples=", n, " should be >= n_clusters=", k);
  }
  STEMROI_CHECK(opt.n_init >= 1, "n_init must be >= 1, got ", opt.n_init);
  STEMROI_CHECK(opt.max_iter >= 1, "max_iter must be >= 1, got ", opt.max_iter);
  STEMROI_CHECK(opt.tol >= 0, "tol must be >= 0, got ", opt.tol);
  const int nt = resolve_n_threads(opt.n_threads);

  // Centre the data (as scikit-learn) for accurate GEMM distances.
  std::vector<double> mean(d, 0.0);
  {
    const int64_t n_chunks = n_chunks_of(n);
    std::vector<double> part(n_chunks * d, 0.0);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t c = 0; c < n_chunks; ++c)
      for (int64_t i = c * kReduceChunk; i < std::min(n, (c + 1) * kReduceChunk); ++i)
        for (int64_t j = 0; j < d; ++j) part[c * d + j] += static_cast<double>(X[i * d + j]);
    for (int64_t c = 0; c < n_chunks; ++c)
      for (int64_t j = 0; j < d; ++j) mean[j] += part[c * d + j];
    for (double& m : mean) m /= static_cast<double>(n);
  }
  std::vector<T> mean_t(d);
  for (int64_t j = 0; j < d; ++j) mean_t[j] = static_cast<T>(mean[j]);
  std::vector<T> Xc(n * d);
  double var_sum = 0;
  {
    const int64_t n_chunks = n_chunks_of(n);
    std::vector<double> part(n_chunks, 0.0);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
    for (int64_t c = 0; c < n_chunks; ++c) {
      double s = 0;
      for (int64_t i = c * kReduceChunk; i < std::min(n, (c + 1) * kReduceChunk); ++i)
        for (int64_t j = 0; j < d; ++j) {
          Xc[i * d + j] = X[i * d + j] - mean_t[j];
          double t = static_cast<double>(X[i * d + j]) - mean[j];
          s += t * t;
        }
      part[c] = s;
    }
    for (double p : part) var_sum += p;
  }
  const double tol = var_sum / static_cast<double>(n) / static_cast<double>(d) * opt.tol;

  const std::vector<double> xn = row_sqnorms(Xc.data(), n, d, nt);
  std::vector<T> init_c;
  if (init) {
    const int64_t k = ks[0];
    init_c.resize(k * d);
    for (int64_t c = 0; c < k; ++c)
      for (int64_t j = 0; j < d; ++j) init_c[c * d + j] = init[c * d + j] - mean_t[j];
  }
  // Tasks: every (k, run) pair; run r of any k is seeded with derive_seed(seed, r),
  // so each k gets exactly the runs KMeans(k, random_state=seed) would make.
  const int n_init = opt.n_init;
  const int64_t n_tasks = static_cast<int64_t>(ks.size()) * n_init;
  std::vector<KMeansFit<T>> runs(n_tasks);
  StopFlag stop;
  // CUDA: the centred data stay on the GPU for every run.
  std::unique_ptr<cuda::NearestCentres<T>> gpu;
  if (opt.device.is_cuda()) gpu = std::make_unique<cuda::NearestCentres<T>>(Xc.data(), n, d, opt.device.index);
  // Seeding shared across k: k-means++ with the seed of run r draws the same
  // centres, in the same order, for every k with the same number of local
  // trials (2 + int(log k)), so the seeding of the largest such k gives every
  // smaller one its centres as a prefix (bit-identical to seeding each k).
  std::vector<int64_t> group_k;        // largest k of each trial count
  std::vector<int> group_of(ks.size());
  auto trials_of = [](int64_t k) { return 2 + static_cast<int>(std::log(static_cast<double>(k))); };
  std::vector<std::vector<T>> seeded;  // (group, run) -> centres of group_k
  if (!init && ks.size() > 1) {
    for (size_t ki = 0; ki < ks.size(); ++ki) {
      int g = -1;
      for (size_t j = 0; j < group_k.size(); ++j)
        if (trials_of(group_k[j]) == trials_of(ks[ki])) g = static_cast<int>(j);
      if (g < 0) g = static_cast<int>(group_k.size()), group_k.push_back(ks[ki]);
      group_k[g] = std::max(group_k[g], ks[ki]);
      group_of[ki] = g;
    }
    const int64_t n_seed = static_cast<int64_t>(group_k.size()) * n_init;
    seeded.resize(n_seed);
    auto seed_one = [&](int64_t t, int inner) {
      seeded[t] = plusplus(Xc.data(), n, d, xn.data(), group_k[t / n_init],
                           derive_seed(opt.seed, static_cast<uint64_t>(t % n_init)), inner);
    };
    if (n_seed > 1 && nt > 1) {
      OmpExceptionCapture cap;
#pragma omp parallel for schedule(dynamic, 1) num_threads(static_cast<int>(std::min<int64_t>(nt, n_seed)))
      for (int64_t t = 0; t < n_seed; ++t) cap.run([&] { if (!stop.poll()) seed_one(t, 1); });
      cap.rethrow();
    } else {
      for (int64_t t = 0; t < n_seed && !stop.poll(); ++t) seed_one(t, nt);
    }
    if (stop.stop) throw Interrupted();
  }
  auto one_run = [&](int64_t task, int inner) {
    const int64_t ki = task / n_init;
    const int64_t k = ks[ki];
    const int r = static_cast<int>(task % n_init);
    std::vector<T> c0;
    if (init) c0 = init_c;
    else if (!seeded.empty()) {
      const std::vector<T>& src = seeded[static_cast<size_t>(group_of[ki]) * n_init + r];
      c0.assign(src.begin(), src.begin() + k * d);
    } else c0 = plusplus(Xc.data(), n, d, xn.data(), k, derive_seed(opt.seed, r), inner);
    if (stop.poll()) return;
    if (gpu)
      runs[task] = lloyd_full(Xc.data(), n, d, k, std::move(c0), opt.max_iter, tol, inner, stop,
                              [&](const T* c, int32_t* l) { gpu->assign(c, k, l); });
    else
      runs[task] = lloyd(Xc.data(), n, d, xn.data(), k, std::move(c0), opt.max_iter, tol, inner, stop);
  };
  if (n_tasks > 1 && nt > 1 && !gpu) {
    // Independent runs in parallel, each single-threaded: results do not
    // depend on which thread ran them. Largest k first for load balance.
    std::vector<int64_t> order(n_tasks);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return ks[a / n_init] > ks[b / n_init]; });
    OmpExceptionCapture cap;
#pragma omp parallel for schedule(dynamic, 1) num_threads(static_cast<int>(std::min<int64_t>(nt, n_tasks)))
    for (int64_t t = 0; t < n_tasks; ++t) cap.run([&] { if (!stop.poll()) one_run(order[t], 1); });
    cap.rethrow();
  } else {
    for (int64_t t = 0; t < n_tasks && !stop.poll(); ++t) one_run(t, nt);
  }
  if (stop.stop) throw Interrupted();

  std::vector<KMeansFit<T>> out;
  for (size_t ki = 0; ki < ks.size(); ++ki) {
    const int64_t k = ks[ki];
    KMeansFit<T>* group = runs.data() + ki * n_init;
    int best = 0;
    for (int r = 1; r < n_init; ++r)
      if (group[r].inertia < group[best].inertia && !same_clustering(group[r].labels, group[best].labels, k)) best = r;
    out.push_back(std::move(group[best]));
    for (int64_t c = 0; c < k; ++c)
      for (int64_t j = 0; j < d; ++j) out.back().centers[c * d + j] += mean_t[j];
  }
  return out;
}

template <typename T>
KMeansFit<T> kmeans_fit(const T* X, int64_t n, int64_t d, const KMeansOptions& opt, const T* init) {
  return std::move(kmeans_fit_many(X, n, d, {opt.n_clusters}, opt, init)[0]);
}

template <typename T>
double kmeans_predict(const T* X, int64_t n, int64_t d, const T* centers, int64_t k, int32_t* labels,
                      int n_threads, const ComputeDevice& device) {
  const int nt = resolve_n_threads(n_threads);
  if (device.is_cuda())
    cuda::NearestCentres<T>(X, n, d, device.index).assign(centers, k, labels);
  else
    assign_labels(X, n, d, centers, k, labels, nt);
  return inertia_of(X, n, d, centers, labels, nt);
}

template <typename T>
void kmeans_transform(const T* X, int64_t n, int64_t d, const T* centers, int64_t k, T* out, int n_threads,
                      const ComputeDevice& device) {
  if (device.is_cuda()) {
    cuda::NearestCentres<T>(X, n, d, device.index).distances(centers, k, out);
    return;
  }
  const int nt = resolve_n_threads(n_threads);
#pragma omp parallel for schedule(static) num_threads(nt) if (nt > 1)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t c = 0; c < k; ++c) out[i * k + c] = static_cast<T>(std::sqrt(sqdist(X + i * d, centers + c * d, d)));
}

#define STEMROI_KMEANS_INSTANTIATE(T)                                                                          \
  template KMeansFit<T> kmeans_fit<T>(const T*, int64_t, int64_t, const KMeansOptions&, const T*);            \
  template std::vector<KMeansFit<T>> kmeans_fit_many<T>(const T*, int64_t, int64_t, const std::vector<int64_t>&, \
                                                        const KMeansOptions&, const T*);                        \
  template std::vector<T> kmeans_plusplus<T>(const T*, int64_t, int64_t, int64_t, uint64_t, int);             \
  template double kmeans_predict<T>(const T*, int64_t, int64_t, const T*, int64_t, int32_t*, int,             \
                                    const ComputeDevice&);                                                     \
  template void kmeans_transform<T>(const T*, int64_t, int64_t, const T*, int64_t, T*, int, const ComputeDevice&);
STEMROI_KMEANS_INSTANTIATE(float)
STEMROI_KMEANS_INSTANTIATE(double)

}  // namespace stemroi
