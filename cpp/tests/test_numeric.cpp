// Unit tests of the numeric engine: PCA routes and signs, k-means++ / Lloyd
// determinism and empty clusters, silhouette against a brute-force reference,
// the one-pass multi-labeling silhouette, Hungarian matching.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>

#include "stemroi/cluster_metrics.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/kmeans.hpp"
#include "stemroi/linkage.hpp"
#include "stemroi/pca.hpp"
#include "stemroi/silhouette.hpp"

using namespace stemroi;

namespace {

// Gaussian blobs: k centres on a scaled grid, unit noise.
template <typename T>
std::vector<T> blobs(int64_t n, int64_t d, int64_t k, double spread, uint64_t seed, std::vector<int>* truth = nullptr) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> centres(k * d);
  for (auto& c : centres) c = spread * nd(g);
  std::vector<T> X(n * d);
  if (truth) truth->resize(n);
  for (int64_t i = 0; i < n; ++i) {
    int64_t c = i % k;
    if (truth) (*truth)[i] = static_cast<int>(c);
    for (int64_t j = 0; j < d; ++j) X[i * d + j] = static_cast<T>(centres[c * d + j] + nd(g));
  }
  return X;
}

// Anisotropic data with a well separated spectrum (scales 10, 9, ..., 1).
std::vector<double> anisotropic(int64_t n, int64_t d, uint64_t seed) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> nd(0.0, 1.0);
  std::vector<double> X(n * d);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) X[i * d + j] = (d - j) * nd(g) + 3.0;
  return X;
}

double brute_silhouette(const std::vector<double>& X, int64_t n, int64_t d, const std::vector<int32_t>& lab, int k) {
  std::vector<int64_t> freq(k, 0);
  for (int l : lab) ++freq[l];
  double total = 0;
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> sum(k, 0.0);
    for (int64_t j = 0; j < n; ++j) {
      double s = 0;
      for (int64_t f = 0; f < d; ++f) s += (X[i * d + f] - X[j * d + f]) * (X[i * d + f] - X[j * d + f]);
      sum[lab[j]] += std::sqrt(s);
    }
    if (freq[lab[i]] == 1) continue;
    double a = sum[lab[i]] / (freq[lab[i]] - 1), b = INFINITY;
    for (int c = 0; c < k; ++c)
      if (c != lab[i]) b = std::min(b, sum[c] / freq[c]);
    total += (b - a) / std::max(a, b);
  }
  return total / n;
}

}  // namespace

TEST(NumericPCA, GramAndSvdRoutesAgreeWithSigns) {
  const int64_t n = 300, d = 8;
  auto X = anisotropic(n, d, 1);
  PCAOptions gram, svd;
  gram.route = 1;
  svd.route = 2;
  auto a = pca_fit(X.data(), n, d, gram);
  auto b = pca_fit(X.data(), n, d, svd);
  EXPECT_TRUE(a.used_gram);
  EXPECT_FALSE(b.used_gram);
  ASSERT_EQ(a.n_components, d);
  for (int64_t j = 0; j < d; ++j) {
    EXPECT_NEAR(a.explained_variance[j], b.explained_variance[j], 1e-10 * b.explained_variance[0]);
    for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(a.components[j * d + i], b.components[j * d + i], 1e-9);
  }
  double ratio = std::accumulate(a.explained_variance_ratio.begin(), a.explained_variance_ratio.end(), 0.0);
  EXPECT_NEAR(ratio, 1.0, 1e-12);
}

TEST(NumericPCA, WideDataAndVarianceFraction) {
  const int64_t n = 20, d = 50;
  auto X = anisotropic(n, d, 2);
  PCAOptions gram, svd;
  gram.route = 1;
  svd.route = 2;
  gram.n_components = svd.n_components = 5;
  auto a = pca_fit(X.data(), n, d, gram);
  auto b = pca_fit(X.data(), n, d, svd);
  for (int64_t j = 0; j < 5; ++j)
    for (int64_t i = 0; i < d; ++i) EXPECT_NEAR(a.components[j * d + i], b.components[j * d + i], 1e-8);
  PCAOptions frac;
  frac.variance_fraction = 0.5;
  auto c = pca_fit(X.data(), n, d, frac);
  double cum = 0;
  for (int64_t j = 0; j < c.n_components - 1; ++j) cum += c.explained_variance_ratio[j];
  EXPECT_LE(cum, 0.5);
  EXPECT_GT(cum + c.explained_variance_ratio.back(), 0.5);
}

TEST(NumericPCA, TransformInverseRoundTripAndErrors) {
  const int64_t n = 100, d = 6;
  auto X = anisotropic(n, d, 3);
  auto fit = pca_fit(X.data(), n, d, PCAOptions{});
  std::vector<double> Z(n * d), back(n * d);
  pca_transform(X.data(), n, d, fit.mean.data(), fit.components.data(), d, nullptr, Z.data(), 2);
  pca_inverse_transform(Z.data(), n, d, fit.mean.data(), fit.components.data(), d, nullptr, back.data(), 2);
  for (int64_t i = 0; i < n * d; ++i) EXPECT_NEAR(back[i], X[i], 1e-9);
  PCAOptions bad;
  bad.n_components = 7;
  EXPECT_THROW(pca_fit(X.data(), n, d, bad), ValueError);
  EXPECT_THROW(pca_fit(X.data(), 1, d, PCAOptions{}), ValueError);
}

TEST(NumericKMeans, RecoversBlobsDeterministicAcrossThreads) {
  const int64_t n = 2000, d = 5, k = 4;
  std::vector<int> truth;
  auto X = blobs<float>(n, d, k, 10.0, 7, &truth);
  KMeansOptions o1, o2;
  o1.n_clusters = o2.n_clusters = k;
  o1.seed = o2.seed = 42;
  o1.n_threads = 1;
  o2.n_threads = 2;
  auto a = kmeans_fit(X.data(), n, d, o1);
  auto b = kmeans_fit(X.data(), n, d, o2);
  EXPECT_EQ(a.labels, b.labels);
  EXPECT_EQ(a.centers, b.centers);
  EXPECT_EQ(a.inertia, b.inertia);
  EXPECT_EQ(a.n_iter, b.n_iter);
  // One-to-one with the truth.
  std::vector<int> map(k, -1);
  for (int64_t i = 0; i < n; ++i) {
    if (map[truth[i]] < 0) map[truth[i]] = a.labels[i];
    EXPECT_EQ(map[truth[i]], a.labels[i]);
  }
  // n_init = 1 with inner parallelism equals the same run single-threaded.
  o1.n_init = o2.n_init = 1;
  EXPECT_EQ(kmeans_fit(X.data(), n, d, o1).centers, kmeans_fit(X.data(), n, d, o2).centers);
}

TEST(NumericKMeans, EmptyClusterIsRelocated) {
  const int64_t n = 60, d = 2, k = 3;
  auto X = blobs<double>(n, d, 2, 20.0, 3);
  // Two identical initial centres: one of them gets no sample at first.
  std::vector<double> init = {X[0], X[1], X[0], X[1], X[2], X[3]};
  KMeansOptions o;
  o.n_clusters = k;
  o.n_init = 1;
  auto fit = kmeans_fit(X.data(), n, d, o, init.data());
  std::vector<int> counts(k, 0);
  for (int l : fit.labels) ++counts[l];
  for (int c : counts) EXPECT_GT(c, 0);
}

TEST(NumericKMeans, PlusPlusPicksSamplesAndErrors) {
  const int64_t n = 500, d = 3;
  auto X = blobs<double>(n, d, 5, 50.0, 11);
  auto c = kmeans_plusplus(X.data(), n, d, 5, 9, 2);
  EXPECT_EQ(c, kmeans_plusplus(X.data(), n, d, 5, 9, 1));
  for (int j = 0; j < 5; ++j) {
    bool found = false;
    for (int64_t i = 0; i < n && !found; ++i) found = std::equal(X.begin() + i * d, X.begin() + (i + 1) * d, c.begin() + j * d);
    EXPECT_TRUE(found);
  }
  KMeansOptions o;
  o.n_clusters = n + 1;
  EXPECT_THROW(kmeans_fit(X.data(), n, d, o), ValueError);
}

TEST(NumericSilhouette, MatchesBruteForceAndMultiEqualsSingle) {
  const int64_t n = 700, d = 4;  // > one row block and one column block
  auto X = blobs<double>(n, d, 3, 3.0, 5);
  std::vector<int32_t> l3(n), l2(n);
  for (int64_t i = 0; i < n; ++i) l3[i] = i % 3, l2[i] = (i % 3 == 0) ? 0 : 1;
  l3[5] = 2;  // keep it irregular
  auto multi = silhouette_samples_multi(X.data(), n, d, {l3.data(), l2.data()}, {3, 2}, 2);
  auto single = silhouette_samples_multi(X.data(), n, d, {l2.data()}, {2}, 1);
  EXPECT_NEAR(ordered_mean(multi[0]), brute_silhouette(X, n, d, l3, 3), 1e-12);
  EXPECT_NEAR(ordered_mean(multi[1]), brute_silhouette(X, n, d, l2, 2), 1e-12);
  // The multi pass sums each cluster from the cells of the joint partition:
  // the same values up to rounding (a different summation grouping).
  ASSERT_EQ(multi[1].size(), single[0].size());
  for (size_t i = 0; i < single[0].size(); ++i) EXPECT_NEAR(multi[1][i], single[0][i], 1e-13);
}

TEST(NumericSilhouette, RejectsBadLabels) {
  const int64_t n = 10, d = 2;
  auto X = blobs<double>(n, d, 2, 3.0, 5);
  std::vector<int32_t> one(n, 0), bad(n, 0);
  bad[3] = 5;
  EXPECT_THROW(silhouette_samples_multi(X.data(), n, d, {one.data()}, {1}, 1), ValueError);
  EXPECT_THROW(silhouette_samples_multi(X.data(), n, d, {bad.data()}, {2}, 2), ValueError);
}

TEST(NumericSweep, ScoresEqualSeparateSilhouettes) {
  const int64_t n = 400, d = 3;
  auto X = blobs<float>(n, d, 3, 8.0, 21);
  KMeansOptions o;
  o.seed = 5;
  o.n_init = 3;
  auto sweep = select_n_clusters(X.data(), n, d, {2, 3, 4}, o, {});
  ASSERT_EQ(sweep.scores.size(), 3u);
  for (size_t s = 0; s < 3; ++s) {
    KMeansOptions ok = o;
    ok.n_clusters = sweep.k_values[s];
    auto fit = kmeans_fit(X.data(), n, d, ok);
    EXPECT_EQ(fit.labels, sweep.labels[s]);
    auto sil = silhouette_samples_multi(X.data(), n, d, {fit.labels.data()}, {static_cast<int32_t>(ok.n_clusters)}, 1);
    EXPECT_NEAR(ordered_mean(sil[0]), sweep.scores[s], 1e-13);  // cells vs one labeling: rounding only
  }
  EXPECT_EQ(std::max_element(sweep.scores.begin(), sweep.scores.end()) - sweep.scores.begin(), 1);
}

TEST(NumericMetrics, HungarianMatchesBruteForce) {
  std::mt19937_64 g(3);
  for (int trial = 0; trial < 30; ++trial) {
    const int64_t r = 1 + g() % 5, c = 1 + g() % 5;
    std::vector<double> w(r * c);
    for (auto& v : w) v = static_cast<double>(g() % 20);
    auto a = max_weight_matching(w, r, c);
    double got = 0;
    std::vector<int> used(c, 0);
    for (int64_t i = 0; i < r; ++i)
      if (a[i] >= 0) {
        got += w[i * c + a[i]];
        EXPECT_EQ(used[a[i]]++, 0);
      }
    // Brute force over permutations of the larger side.
    const int64_t m = std::max(r, c);
    std::vector<int64_t> perm(m);
    std::iota(perm.begin(), perm.end(), 0);
    double best = 0;
    do {
      double s = 0;
      for (int64_t i = 0; i < r; ++i)
        if (perm[i] < c) s += w[i * c + perm[i]];
      best = std::max(best, s);
    } while (std::next_permutation(perm.begin(), perm.end()));
    EXPECT_EQ(got, best);
  }
  std::vector<int64_t> y = {0, 0, 1, 1, 2}, l = {1, 1, 0, 0, 0};
  auto m = contingency_matrix(y.data(), l.data(), 5, 3, 2);
  EXPECT_EQ(m, (std::vector<int64_t>{0, 2, 2, 0, 1, 0}));
}

TEST(NumericLinkage, AverageLinkageByHandAndCut) {
  // 1-D points 0, 1, 5, 6, 20: {0,1} and {5,6} at height 1, then their mean
  // distance (5 + 6 + 4 + 5) / 4 = 5, then 20 at (20 + 19 + 15 + 14) / 4 = 17.
  const std::vector<double> X{0, 1, 5, 6, 20};
  for (int threads : {1, 2}) {
    const Dendrogram t = average_linkage(X.data(), 5, 1, threads);
    ASSERT_EQ(t.height.size(), 4u);
    EXPECT_EQ(t.left, (std::vector<int64_t>{0, 2, 5, 4}));
    EXPECT_EQ(t.right, (std::vector<int64_t>{1, 3, 6, 7}));
    EXPECT_EQ(t.height, (std::vector<double>{1, 1, 5, 17}));
    EXPECT_EQ(t.size, (std::vector<int64_t>{2, 2, 4, 5}));
    EXPECT_EQ(cut_dendrogram(t, 3), (std::vector<int32_t>{0, 0, 1, 1, 2}));
    EXPECT_EQ(cut_dendrogram(t, 1), (std::vector<int32_t>{0, 0, 0, 0, 0}));
    EXPECT_EQ(cut_dendrogram(t, 5), (std::vector<int32_t>{0, 1, 2, 3, 4}));
    EXPECT_THROW(cut_dendrogram(t, 0), ValueError);
    EXPECT_THROW(cut_dendrogram(t, 6), ValueError);
  }
  const std::vector<double> nan{0, std::nan(""), 1};
  EXPECT_THROW(average_linkage(nan.data(), 3, 1, 1), ValueError);
  EXPECT_THROW(average_linkage(X.data(), 1, 1, 1), ValueError);
  EXPECT_THROW(average_linkage(X.data(), kMaxLinkageSamples + 1, 1, 1), ValueError);  // refused before reading X
}
