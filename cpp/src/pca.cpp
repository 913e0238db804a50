#include "stemroi/pca.hpp"

#include <omp.h>

#include <Eigen/Dense>
#include <Eigen/SVD>
#include <algorithm>
#include <cmath>
#include <random>

#include "stemroi/callbacks.hpp"
#include "stemroi/cuda.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"

namespace stemroi {
namespace {

using MatD = Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using RowMat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
template <typename T>
using CMap = Eigen::Map<const RowMat<T>>;

constexpr int64_t kGramChunk = 8 * kReduceChunk;  // rows per Gram partial

// Column means in double, summed row by row in fixed chunk order.
template <typename T>
Eigen::VectorXd column_mean(const T* X, int64_t n, int64_t d, int n_threads) {
  const int64_t n_chunks = (n + kReduceChunk - 1) / kReduceChunk;
  MatD partial = MatD::Zero(n_chunks, d);
  OmpExceptionCapture cap;
#pragma omp parallel for schedule(static) num_threads(n_threads)
  for (int64_t c = 0; c < n_chunks; ++c) {
    cap.run([&] {
      const int64_t r1 = std::min(n, (c + 1) * kReduceChunk);
      for (int64_t i = c * kReduceChunk; i < r1; ++i)
        for (int64_t j = 0; j < d; ++j) partial(c, j) += static_cast<double>(X[i * d + j]);
    });
  }
  cap.rethrow();
  Eigen::VectorXd mean = Eigen::VectorXd::Zero(d);
  for (int64_t c = 0; c < n_chunks; ++c) mean += partial.row(c).transpose();
  return mean / static_cast<double>(n);
}

// Rows [r0, r1) of X centred, in double.
template <typename T>
MatD centred_rows(const T* X, int64_t d, int64_t r0, int64_t r1, const Eigen::VectorXd& mean) {
  MatD out(r1 - r0, d);
  for (int64_t i = r0; i < r1; ++i)
    for (int64_t j = 0; j < d; ++j) out(i - r0, j) = static_cast<double>(X[i * d + j]) - mean[j];
  return out;
}

// Xc^T Xc (d x d): per-chunk partials computed in parallel, summed in chunk order.
template <typename T>
Eigen::MatrixXd gram_tall(const T* X, int64_t n, int64_t d, const Eigen::VectorXd& mean, int n_threads) {
  const int64_t n_chunks = (n + kGramChunk - 1) / kGramChunk;
  Eigen::MatrixXd G = Eigen::MatrixXd::Zero(d, d);
  const int group = std::max<int64_t>(1, std::min<int64_t>(n_threads, n_chunks));
  std::vector<Eigen::MatrixXd> part(group);
  for (int64_t g0 = 0; g0 < n_chunks; g0 += group) {
    InterruptCallback::check();
    const int64_t g1 = std::min(n_chunks, g0 + group);
    OmpExceptionCapture cap;
#pragma omp parallel for schedule(static, 1) num_threads(group)
    for (int64_t c = g0; c < g1; ++c) {
      cap.run([&] {
        MatD Xc = centred_rows(X, d, c * kGramChunk, std::min(n, (c + 1) * kGramChunk), mean);
        Eigen::MatrixXd& P = part[c - g0];
        P.setZero(d, d);
        P.selfadjointView<Eigen::Lower>().rankUpdate(Xc.transpose());
      });
    }
    cap.rethrow();
    for (int64_t c = g0; c < g1; ++c) G += part[c - g0];
  }
  G.triangularView<Eigen::StrictlyUpper>() = G.transpose();
  return G;
}

// For every column j of (Xc @ V), the value of the first entry of largest
// magnitude (scikit-learn's u-based svd_flip decision), in fixed chunk order.
template <typename T>
std::vector<double> max_abs_entries(const T* X, int64_t n, int64_t d, const Eigen::VectorXd& mean,
                                    const Eigen::MatrixXd& V, int n_threads) {
  const int64_t k = V.cols();
  const int64_t n_chunks = (n + kGramChunk - 1) / kGramChunk;
  MatD best_abs = MatD::Constant(n_chunks, k, -1.0), best_val = MatD::Zero(n_chunks, k);
  OmpExceptionCapture cap;
#pragma omp parallel for schedule(static) num_threads(n_threads)
  for (int64_t c = 0; c < n_chunks; ++c) {
    cap.run([&] {
      MatD Xc = centred_rows(X, d, c * kGramChunk, std::min(n, (c + 1) * kGramChunk), mean);
      MatD P = Xc * V;
      for (int64_t i = 0; i < P.rows(); ++i)
        for (int64_t j = 0; j < k; ++j)
          if (std::abs(P(i, j)) > best_abs(c, j)) best_abs(c, j) = std::abs(P(i, j)), best_val(c, j) = P(i, j);
    });
  }
  cap.rethrow();
  std::vector<double> out(k, 0.0);
  std::vector<double> babs(k, -1.0);
  for (int64_t c = 0; c < n_chunks; ++c)
    for (int64_t j = 0; j < k; ++j)
      if (best_abs(c, j) > babs[j]) babs[j] = best_abs(c, j), out[j] = best_val(c, j);
  return out;
}

double sign_of(double v) { return v > 0 ? 1.0 : (v < 0 ? -1.0 : 0.0); }

// Number of components to keep from the descending variances (scikit-learn:
// searchsorted(cumsum(ratio), fraction, side="right") + 1).
int64_t choose_k(const std::vector<double>& ev, const PCAOptions& opt, int64_t kmax) {
  if (opt.variance_fraction > 0) {
    double total = 0;
    for (double v : ev) total += v;
    double cum = 0;
    int64_t below = 0;
    for (double v : ev) {
      cum += v / total;
      if (cum <= opt.variance_fraction) ++below;
      else break;
    }
    return std::min<int64_t>(below + 1, kmax);
  }
  return opt.n_components < 0 ? kmax : opt.n_components;
}

template <typename T>
void finish(PCAFit<T>& fit, const std::vector<double>& sv_all, int64_t k, double total_var) {
  const int64_t n = fit.n_samples;
  fit.n_components = k;
  fit.singular_values.assign(sv_all.begin(), sv_all.begin() + k);
  fit.explained_variance.resize(k);
  fit.explained_variance_ratio.resize(k);
  for (int64_t j = 0; j < k; ++j) {
    fit.explained_variance[j] = sv_all[j] * sv_all[j] / static_cast<double>(n - 1);
    fit.explained_variance_ratio[j] = total_var > 0 ? fit.explained_variance[j] / total_var : 0.0;
  }
}

// Thin orthonormal basis of the columns of A (Householder QR).
MatD orthonormal(const MatD& A) {
  Eigen::HouseholderQR<MatD> qr(A);
  return qr.householderQ() * MatD::Identity(A.rows(), A.cols());
}

// Index of the entry of largest magnitude of column j (first one on ties).
template <typename M>
Eigen::Index arg_max_abs(const M& U, int64_t j) {
  Eigen::Index arg = 0;
  for (Eigen::Index i = 0; i < U.rows(); ++i)
    if (std::abs(U(i, j)) > std::abs(U(arg, j))) arg = i;
  return arg;
}

// Randomized solver (Halko et al., as scikit-learn's randomized_svd): sets the
// fit's variances, returns the k components as columns (d, k).
template <typename T>
Eigen::MatrixXd randomized_components(const T* X, int64_t n, int64_t d, const Eigen::VectorXd& mean,
                                      const PCAOptions& opt, PCAFit<T>& fit) {
  const int64_t kmax = std::min(n, d);
  STEMROI_CHECK(opt.variance_fraction <= 0, "the randomized solver needs an int n_components");
  const int64_t k = opt.n_components < 0 ? kmax : opt.n_components;
  const int64_t p = std::min(kmax, k + opt.n_oversamples);
  int n_iter = opt.n_iter >= 0 ? opt.n_iter : (k < 0.1 * kmax ? 7 : 4);
  MatD Xc = centred_rows(X, d, 0, n, mean);
  std::mt19937_64 rng(opt.seed);
  std::normal_distribution<double> normal(0.0, 1.0);
  MatD omega(d, p);
  for (int64_t i = 0; i < d; ++i)
    for (int64_t j = 0; j < p; ++j) omega(i, j) = normal(rng);
  MatD Q = orthonormal(Xc * omega);
  for (int it = 0; it < n_iter; ++it) {
    InterruptCallback::check();
    MatD Z = orthonormal(Xc.transpose() * Q);
    Q = orthonormal(Xc * Z);
  }
  MatD B = Q.transpose() * Xc;  // (p, d)
  Eigen::JacobiSVD<MatD> svd(B, Eigen::ComputeThinU | Eigen::ComputeThinV);
  MatD U = Q * svd.matrixU();
  Eigen::MatrixXd V = svd.matrixV().leftCols(k);
  std::vector<double> s_all(svd.singularValues().data(), svd.singularValues().data() + k);
  // scikit-learn's randomized_svd flips u-based unless it transposed (n < d).
  for (int64_t j = 0; j < k; ++j) {
    double val = 0, best = -1;
    if (n >= d) {
      for (int64_t i = 0; i < n; ++i)
        if (std::abs(U(i, j)) > best) best = std::abs(U(i, j)), val = U(i, j);
    } else {
      for (int64_t i = 0; i < d; ++i)
        if (std::abs(V(i, j)) > best) best = std::abs(V(i, j)), val = V(i, j);
    }
    V.col(j) *= sign_of(val);
  }
  double total = Xc.squaredNorm() / static_cast<double>(n - 1);
  finish(fit, s_all, k, total);
  double kept = 0;
  for (double v : fit.explained_variance) kept += v;
  fit.noise_variance = k < kmax ? (total - kept) / static_cast<double>(kmax - k) : 0.0;
  return V;
}

// Full solver, covariance route: eigendecomposition of the centred Gram
// matrix (d x d for tall data, n x n for wide data).
struct GramSpectrum {
  Eigen::MatrixXd G;
  Eigen::SelfAdjointEigenSolver<Eigen::MatrixXd> es;
  MatD Xc_wide;               // the centred data, wide case only
  std::vector<double> s_all;  // singular values, descending
  int64_t k = 0;
  bool accurate = true;       // every retained eigenvalue within the Gram route's tolerance
};

template <typename T>
GramSpectrum gram_spectrum(const T* X, int64_t n, int64_t d, const Eigen::VectorXd& mean, const PCAOptions& opt,
                           int nt) {
  const int64_t kmax = std::min(n, d);
  GramSpectrum g;
  if (opt.device.is_cuda()) {
    if (n < d) g.Xc_wide = centred_rows(X, d, 0, n, mean);
    MatD G(kmax, kmax);
    cuda::gram_matrix(X, n, d, mean.data(), opt.device.index, G.data());
    g.G = G;
    g.G.triangularView<Eigen::StrictlyUpper>() = g.G.transpose();
  } else if (n >= d) {
    g.G = gram_tall(X, n, d, mean, nt);
  } else {
    g.Xc_wide = centred_rows(X, d, 0, n, mean);
    g.G = Eigen::MatrixXd::Zero(n, n);
    g.G.selfadjointView<Eigen::Lower>().rankUpdate(g.Xc_wide);
    g.G.triangularView<Eigen::StrictlyUpper>() = g.G.transpose();
  }
  InterruptCallback::check();
  g.es.compute(g.G);
  STEMROI_CHECK(g.es.info() == Eigen::Success, "PCA: eigendecomposition of the Gram matrix failed");
  const int64_t m = g.G.rows();
  g.s_all.resize(kmax);
  std::vector<double> ev(kmax);
  for (int64_t j = 0; j < kmax; ++j) {
    double lam = std::max(0.0, g.es.eigenvalues()[m - 1 - j]);
    g.s_all[j] = std::sqrt(lam);
    ev[j] = lam;
  }
  g.k = choose_k(ev, opt, kmax);
  // The Gram route loses accuracy on eigenvalues far below the largest
  // (absolute error ~ eps * lambda_max): fall back to an SVD unless every
  // retained eigenvalue is within the stated tolerances.
  const double tau = sizeof(T) == 4 ? 1e-9 : 1e-5;
  g.accurate = !(ev[0] > 0 && ev[g.k - 1] < tau * ev[0]);
  return g;
}

// Components (d, k) from the Gram eigenvectors, with scikit-learn's signs.
template <typename T>
Eigen::MatrixXd gram_components(const T* X, int64_t n, int64_t d, const Eigen::VectorXd& mean,
                                const GramSpectrum& g, int nt) {
  const int64_t m = g.G.rows(), k = g.k;
  Eigen::MatrixXd V;
  if (n >= d) {
    V.resize(d, k);
    for (int64_t j = 0; j < k; ++j) V.col(j) = g.es.eigenvectors().col(m - 1 - j);
    std::vector<double> u_max = max_abs_entries(X, n, d, mean, V, nt);
    for (int64_t j = 0; j < k; ++j) V.col(j) *= sign_of(u_max[j]);
  } else {
    Eigen::MatrixXd U(n, k);
    for (int64_t j = 0; j < k; ++j) {
      U.col(j) = g.es.eigenvectors().col(m - 1 - j);
      U.col(j) *= sign_of(U(arg_max_abs(U, j), j));
    }
    V = g.Xc_wide.transpose() * U;
    for (int64_t j = 0; j < k; ++j) V.col(j) /= (g.s_all[j] > 0 ? g.s_all[j] : 1.0);
  }
  return V;
}

// Full solver, SVD route: sets s_all and k, returns the components (d, k).
template <typename T>
Eigen::MatrixXd svd_components(const T* X, int64_t n, int64_t d, const Eigen::VectorXd& mean, const PCAOptions& opt,
                               std::vector<double>& s_all, int64_t& k) {
  const int64_t kmax = std::min(n, d);
  MatD Xc = centred_rows(X, d, 0, n, mean);
  InterruptCallback::check();
  Eigen::BDCSVD<MatD> svd(Xc, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const auto& S = svd.singularValues();
  s_all.assign(S.data(), S.data() + kmax);
  std::vector<double> ev(kmax);
  for (int64_t j = 0; j < kmax; ++j) ev[j] = s_all[j] * s_all[j];
  k = choose_k(ev, opt, kmax);
  Eigen::MatrixXd V = svd.matrixV().leftCols(k);
  const MatD& U = svd.matrixU();
  for (int64_t j = 0; j < k; ++j) V.col(j) *= sign_of(U(arg_max_abs(U, j), j));
  return V;
}

// Full solver: variances from all kmax singular values.
template <typename T>
void full_variances(PCAFit<T>& fit, const std::vector<double>& s_all, int64_t k, int64_t n) {
  const int64_t kmax = static_cast<int64_t>(s_all.size());
  double total = 0;
  for (double s : s_all) total += s * s / static_cast<double>(n - 1);
  finish(fit, s_all, k, total);
  double rest = 0;
  for (int64_t j = k; j < kmax; ++j) rest += s_all[j] * s_all[j] / static_cast<double>(n - 1);
  fit.noise_variance = k < kmax ? rest / static_cast<double>(kmax - k) : 0.0;
}

// Full solver: the Gram route when route allows it and it is accurate, else the SVD.
template <typename T>
Eigen::MatrixXd full_components(const T* X, int64_t n, int64_t d, const Eigen::VectorXd& mean,
                                const PCAOptions& opt, int nt, PCAFit<T>& fit) {
  if (opt.route != 2) {
    GramSpectrum g = gram_spectrum(X, n, d, mean, opt, nt);
    if (opt.route == 1 || g.accurate) {
      Eigen::MatrixXd V = gram_components(X, n, d, mean, g, nt);
      fit.used_gram = true;
      full_variances(fit, g.s_all, g.k, n);
      return V;
    }
  }
  std::vector<double> s_all;
  int64_t k = 0;
  Eigen::MatrixXd V = svd_components(X, n, d, mean, opt, s_all, k);
  full_variances(fit, s_all, k, n);
  return V;
}

}  // namespace

template <typename T>
PCAFit<T> pca_fit(const T* X, int64_t n, int64_t d, const PCAOptions& opt) {
  STEMROI_CHECK(n >= 2 && d >= 1, "PCA needs at least 2 samples and 1 feature, got shape ", shape_str({n, d}));
  const int64_t kmax = std::min(n, d);
  STEMROI_CHECK(opt.n_components == -1 || (opt.n_components >= 1 && opt.n_components <= kmax),
                "n_components must be between 1 and min(n_samples, n_features)=", kmax, ", got ", opt.n_components);
  const int nt = resolve_n_threads(opt.n_threads);
  PCAFit<T> fit;
  fit.n_samples = n;
  fit.n_features = d;
  Eigen::VectorXd mean = column_mean(X, n, d, nt);
  fit.mean.resize(d);
  for (int64_t j = 0; j < d; ++j) fit.mean[j] = static_cast<T>(mean[j]);
  const Eigen::MatrixXd V = opt.solver == PCASolver::Randomized ? randomized_components(X, n, d, mean, opt, fit)
                                                                 : full_components(X, n, d, mean, opt, nt, fit);
  const int64_t k = V.cols();
  fit.components.resize(k * d);
  for (int64_t j = 0; j < k; ++j)
    for (int64_t i = 0; i < d; ++i) fit.components[j * d + i] = static_cast<T>(V(i, j));
  return fit;
}

template <typename T>
void pca_transform(const T* X, int64_t n, int64_t d, const T* mean, const T* components, int64_t k,
                   const double* scale, T* out, int n_threads) {
  const int nt = resolve_n_threads(n_threads);
  CMap<T> C(components, k, d);
  Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>> mu(mean, d);
  const int64_t n_chunks = (n + kReduceChunk - 1) / kReduceChunk;
  OmpExceptionCapture cap;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t c = 0; c < n_chunks; ++c) {
    cap.run([&] {
      const int64_t r0 = c * kReduceChunk, r1 = std::min(n, r0 + kReduceChunk);
      RowMat<T> Xc = CMap<T>(X + r0 * d, r1 - r0, d).rowwise() - mu;
      Eigen::Map<RowMat<T>> Z(out + r0 * k, r1 - r0, k);
      Z.noalias() = Xc * C.transpose();
      if (scale)
        for (int64_t j = 0; j < k; ++j) Z.col(j) /= static_cast<T>(scale[j]);
    });
  }
  cap.rethrow();
}

template <typename T>
void pca_inverse_transform(const T* Zp, int64_t n, int64_t k, const T* mean, const T* components, int64_t d,
                           const double* scale, T* out, int n_threads) {
  const int nt = resolve_n_threads(n_threads);
  RowMat<T> C = CMap<T>(components, k, d);
  if (scale)
    for (int64_t j = 0; j < k; ++j) C.row(j) *= static_cast<T>(scale[j]);
  Eigen::Map<const Eigen::Matrix<T, 1, Eigen::Dynamic>> mu(mean, d);
  const int64_t n_chunks = (n + kReduceChunk - 1) / kReduceChunk;
  OmpExceptionCapture cap;
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t c = 0; c < n_chunks; ++c) {
    cap.run([&] {
      const int64_t r0 = c * kReduceChunk, r1 = std::min(n, r0 + kReduceChunk);
      Eigen::Map<RowMat<T>> Xr(out + r0 * d, r1 - r0, d);
      Xr.noalias() = CMap<T>(Zp + r0 * k, r1 - r0, k) * C;
      Xr.rowwise() += mu;
    });
  }
  cap.rethrow();
}

#define STEMROI_PCA_INSTANTIATE(T)                                                                      \
  template PCAFit<T> pca_fit<T>(const T*, int64_t, int64_t, const PCAOptions&);                          \
  template void pca_transform<T>(const T*, int64_t, int64_t, const T*, const T*, int64_t, const double*, \
                                 T*, int);                                                               \
  template void pca_inverse_transform<T>(const T*, int64_t, int64_t, const T*, const T*, int64_t,        \
                                         const double*, T*, int);
STEMROI_PCA_INSTANTIATE(float)
STEMROI_PCA_INSTANTIATE(double)

}  // namespace stemroi
