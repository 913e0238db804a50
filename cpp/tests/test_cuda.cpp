// The CUDA numeric engine against the CPU path: the same labels, values within
// 1e-5 (float32) / 1e-10 (float64) relative, and bit-identical GPU results run
// to run. GPU cases skip without a usable GPU; device parsing runs everywhere.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "stemroi/compute_device.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/kmeans.hpp"
#include "stemroi/pca.hpp"
#include "stemroi/silhouette.hpp"

using namespace stemroi;

namespace {

bool gpu_ready() { return cuda_built() && torch::cuda::is_available() && cuda_device_count() > 0; }

#define SKIP_WITHOUT_GPU()                                                                               \
  do {                                                                                                    \
    if (!cuda_built()) GTEST_SKIP() << "stemroi built without CUDA (STEMROI_WITH_CUDA=OFF)";             \
    if (!gpu_ready()) GTEST_SKIP() << "no usable CUDA device (torch::cuda::is_available() is false)";    \
  } while (0)

template <typename T>
double tol() {
  return sizeof(T) == 4 ? 1e-5 : 1e-10;
}

// |a - b| <= rtol * max(|b|, floor): relative, with a floor for values near 0.
template <typename A, typename B>
void expect_close(const std::vector<A>& a, const std::vector<B>& b, double rtol, double floor, const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  for (size_t i = 0; i < a.size(); ++i) {
    const double x = static_cast<double>(a[i]), y = static_cast<double>(b[i]);
    ASSERT_LE(std::abs(x - y), rtol * std::max(std::abs(y), floor)) << what << " at " << i << ": " << x << " vs " << y;
  }
}

// Gaussian blobs around k well separated centres (no near-ties between centres).
template <typename T>
std::vector<T> blobs(int64_t n, int64_t d, int64_t k, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> centres(k * d);
  for (auto& c : centres) c = 8.0 * nd(g);
  std::vector<T> X(n * d);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) X[i * d + j] = static_cast<T>(centres[(i % k) * d + j] + nd(g));
  return X;
}

ComputeDevice gpu() { return parse_compute_device("cuda:0"); }

template <typename T>
class CudaNumeric : public ::testing::Test {};
using FloatTypes = ::testing::Types<float, double>;
TYPED_TEST_SUITE(CudaNumeric, FloatTypes);

}  // namespace

TEST(ComputeDevice, ParsesNamesAndRefusesWhatThisBuildCannotRun) {
  EXPECT_FALSE(parse_compute_device("cpu").is_cuda());
  EXPECT_EQ(parse_compute_device("auto").is_cuda(), cuda_device_count() > 0);
  for (const char* bad : {"gpu", "cuda:", "cuda:x", "cuda0", "CPU", ""}) {
    try {
      parse_compute_device(bad);
      ADD_FAILURE() << "accepted '" << bad << "'";
    } catch (const ValueError& e) {
      EXPECT_NE(std::string(e.what()).find("'cpu', 'cuda', 'cuda:N' or 'auto'"), std::string::npos) << e.what();
    }
  }
  if (!cuda_built()) {
    EXPECT_EQ(cuda_device_count(), 0);
    try {
      parse_compute_device("cuda:0");
      ADD_FAILURE() << "a build without CUDA accepted cuda:0";
    } catch (const ValueError& e) {
      const std::string msg = e.what();
      EXPECT_NE(msg.find("STEMROI_WITH_CUDA=OFF"), std::string::npos) << msg;
      EXPECT_NE(msg.find("device='cuda:0'"), std::string::npos) << msg;
    }
    // A hand-made CUDA device reaches the same error, not a crash.
    std::vector<double> X = blobs<double>(10, 2, 2, 1), c(X.begin(), X.begin() + 4);
    std::vector<int32_t> lab(10);
    EXPECT_THROW(kmeans_predict(X.data(), 10, 2, c.data(), 2, lab.data(), 1, ComputeDevice{true, 0}), ValueError);
  } else if (cuda_device_count() == 0) {
    EXPECT_THROW(parse_compute_device("cuda"), ValueError);
  } else {
    const int count = cuda_device_count();
    EXPECT_EQ(parse_compute_device("cuda:0").index, 0);
    EXPECT_THROW(parse_compute_device("cuda:" + std::to_string(count)), ValueError);
  }
}

TYPED_TEST(CudaNumeric, PredictAndTransformMatchTheCpu) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const int64_t n = 3001, d = 37, k = 7;  // n, d and k not multiples of the kernels' tiles
  std::vector<T> X = blobs<T>(n, d, k, 3);
  std::vector<T> C(X.begin(), X.begin() + k * d);  // one sample of each blob
  std::vector<int32_t> lc(n), lg(n);
  const double ic = kmeans_predict(X.data(), n, d, C.data(), k, lc.data(), 2);
  const double ig = kmeans_predict(X.data(), n, d, C.data(), k, lg.data(), 2, gpu());
  EXPECT_EQ(lg, lc);
  EXPECT_NEAR(ig, ic, tol<T>() * ic);
  std::vector<T> dc(n * k), dg(n * k), dg2(n * k);
  kmeans_transform(X.data(), n, d, C.data(), k, dc.data(), 2);
  kmeans_transform(X.data(), n, d, C.data(), k, dg.data(), 2, gpu());
  kmeans_transform(X.data(), n, d, C.data(), k, dg2.data(), 2, gpu());
  expect_close(dg, dc, tol<T>(), 0.0, "transform");
  EXPECT_EQ(dg2, dg) << "GPU distances differ run to run";
}

TYPED_TEST(CudaNumeric, FitMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const int64_t n = 2000, d = 9, k = 5;
  std::vector<T> X = blobs<T>(n, d, k, 4);
  KMeansOptions opt;
  opt.n_clusters = k;
  opt.n_init = 3;
  opt.seed = 11;
  opt.n_threads = 2;
  KMeansFit<T> cpu = kmeans_fit(X.data(), n, d, opt);
  opt.device = gpu();
  KMeansFit<T> g1 = kmeans_fit(X.data(), n, d, opt);
  KMeansFit<T> g2 = kmeans_fit(X.data(), n, d, opt);
  EXPECT_EQ(g1.labels, cpu.labels);
  EXPECT_EQ(g1.n_iter, cpu.n_iter);
  expect_close(g1.centers, cpu.centers, tol<T>(), 1.0, "centres");
  EXPECT_NEAR(g1.inertia, cpu.inertia, tol<T>() * cpu.inertia);
  EXPECT_EQ(g2.labels, g1.labels);
  EXPECT_EQ(g2.centers, g1.centers);
  EXPECT_EQ(g2.inertia, g1.inertia);
}

TYPED_TEST(CudaNumeric, SilhouetteMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const int64_t n = 1000, d = 45;  // several row and column tiles, a partial feature slice
  std::vector<T> X = blobs<T>(n, d, 4, 5);
  std::vector<int32_t> l4(n), l3(n), l2(n);
  for (int64_t i = 0; i < n; ++i) l4[i] = i % 4, l3[i] = (i * 7) % 3, l2[i] = i < 10 ? 1 : 0;  // small cluster
  std::vector<const int32_t*> sets{l4.data(), l3.data(), l2.data()};
  std::vector<int32_t> ks{4, 3, 2};
  auto cpu = silhouette_samples_multi(X.data(), n, d, sets, ks, 2);
  auto g1 = silhouette_samples_multi(X.data(), n, d, sets, ks, 2, gpu());
  auto g2 = silhouette_samples_multi(X.data(), n, d, sets, ks, 2, gpu());
  ASSERT_EQ(g1.size(), cpu.size());
  for (size_t s = 0; s < cpu.size(); ++s) {
    expect_close(g1[s], cpu[s], tol<T>(), 1.0, "silhouette");
    EXPECT_EQ(g2[s], g1[s]) << "GPU silhouettes differ run to run";
  }
}

TYPED_TEST(CudaNumeric, SweepMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  const int64_t n = 600, d = 6;
  std::vector<T> X = blobs<T>(n, d, 4, 6);
  KMeansOptions opt;
  opt.n_init = 2;
  opt.seed = 3;
  opt.n_threads = 2;
  std::vector<int64_t> sample{5, 1, 99, 400, 7, 250, 3, 599, 42, 77, 300, 123, 8, 511, 60, 61};
  for (const auto& idx : {std::vector<int64_t>{}, sample}) {
    opt.device = {};
    auto cpu = select_n_clusters(X.data(), n, d, {2, 3, 4, 5}, opt, idx);
    opt.device = gpu();
    auto g = select_n_clusters(X.data(), n, d, {2, 3, 4, 5}, opt, idx);
    EXPECT_EQ(g.labels, cpu.labels);
    expect_close(g.scores, cpu.scores, tol<T>(), 1.0, "scores");
    expect_close(g.inertias, cpu.inertias, tol<T>(), 0.0, "inertias");
  }
}

TYPED_TEST(CudaNumeric, PcaGramRouteMatchesTheCpu) {
  SKIP_WITHOUT_GPU();
  using T = TypeParam;
  std::mt19937_64 g(7);
  std::normal_distribution<double> nd(0.0, 1.0);
  for (const auto& shape : {std::pair<int64_t, int64_t>{500, 8}, std::pair<int64_t, int64_t>{6, 40}}) {
    const int64_t n = shape.first, d = shape.second;
    std::vector<T> X(n * d);  // scales d, d - 1, ..., 1: a well separated spectrum
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < d; ++j) X[i * d + j] = static_cast<T>((d - j) * nd(g) + 3.0);
    PCAOptions opt;
    opt.n_components = std::min<int64_t>(std::min(n, d), 4);
    opt.route = 1;
    opt.n_threads = 2;
    PCAFit<T> cpu = pca_fit(X.data(), n, d, opt);
    opt.device = gpu();
    PCAFit<T> g1 = pca_fit(X.data(), n, d, opt);
    PCAFit<T> g2 = pca_fit(X.data(), n, d, opt);
    EXPECT_TRUE(g1.used_gram);
    // Unit components: a 1e-10 (1e-5) absolute bound is relative to their norm.
    expect_close(g1.components, cpu.components, tol<T>(), 1.0, "components");
    expect_close(g1.explained_variance, cpu.explained_variance, tol<T>(), 0.0, "explained_variance");
    expect_close(g1.singular_values, cpu.singular_values, tol<T>(), 0.0, "singular_values");
    EXPECT_EQ(g2.components, g1.components) << "GPU PCA differs run to run";
  }
}
