// Principal component analysis (scikit-learn 1.2 PCA semantics and signs).
// The full solver takes the covariance/Gram route (eigendecomposition of the
// centred Gram matrix, accumulated in double in fixed chunk order) when the
// retained spectrum is well conditioned enough for that to be as accurate as
// an SVD, and an SVD of the centred data otherwise.
#pragma once
#include <cstdint>
#include <vector>

#include "stemroi/compute_device.hpp"

namespace stemroi {

enum class PCASolver { Full, Randomized };

struct PCAOptions {
  int64_t n_components = -1;      // -1: min(n_samples, n_features), or from variance_fraction
  double variance_fraction = 0;   // in (0, 1): fewest components whose cumulative ratio exceeds it
  PCASolver solver = PCASolver::Full;
  int64_t n_oversamples = 10;     // randomized only
  int n_iter = -1;                // randomized only; -1: 7 if k < 0.1 min(n, d) else 4 (as scikit-learn)
  uint64_t seed = 0;              // randomized only
  int n_threads = 0;              // <= 0: all cores
  // Full solver: 0 = choose (Gram when accurate enough), 1 = force Gram, 2 = force SVD.
  int route = 0;
  // CUDA: the full solver's Gram matrix is formed on the GPU (cuBLAS, double);
  // its eigendecomposition, the SVD route and the randomized solver run on the CPU.
  ComputeDevice device;
};

template <typename T>
struct PCAFit {
  int64_t n_samples = 0, n_features = 0, n_components = 0;
  std::vector<T> mean;                            // (d,)
  std::vector<T> components;                      // (k, d) row-major, unit rows
  std::vector<double> explained_variance;         // (k,)  s^2 / (n - 1)
  std::vector<double> explained_variance_ratio;   // (k,)
  std::vector<double> singular_values;            // (k,)
  double noise_variance = 0;
  bool used_gram = false;                         // full solver: covariance route taken
};

template <typename T>
PCAFit<T> pca_fit(const T* X, int64_t n, int64_t d, const PCAOptions& opt);

// out (n, k) = ((X - mean) @ components.T) / scale   (scale may be null: no whitening)
template <typename T>
void pca_transform(const T* X, int64_t n, int64_t d, const T* mean, const T* components, int64_t k,
                   const double* scale, T* out, int n_threads);

// out (n, d) = (Z * scale) @ components + mean
template <typename T>
void pca_inverse_transform(const T* Z, int64_t n, int64_t k, const T* mean, const T* components, int64_t d,
                           const double* scale, T* out, int n_threads);

}  // namespace stemroi
