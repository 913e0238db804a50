#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "stemroi/errors.hpp"
#include "stemroi/overlap.hpp"

using namespace stemroi;

namespace {
// n crops of size p from a random integer-valued image at the given origins.
std::vector<float> crops(const std::vector<float>& img, int64_t W, const std::vector<std::pair<int, int>>& origins, int p) {
  std::vector<float> out;
  for (auto [r0, c0] : origins)
    for (int r = 0; r < p; ++r)
      for (int c = 0; c < p; ++c) out.push_back(img[(r0 + r) * W + c0 + c]);
  return out;
}
std::vector<float> random_image(int64_t H, int64_t W, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> d(0, 255);
  std::vector<float> img(H * W);
  for (auto& v : img) v = static_cast<float>(d(gen)) / 255.0f;
  return img;
}
}  // namespace

TEST(Overlap, ShiftedCropsShareAGroupUnrelatedDoNot) {
  const int64_t H = 200, W = 200;
  const int p = 32;
  auto a = random_image(H, W, 1), b = random_image(H, W, 2);
  // 0..2: shifted crops of image a (chain 0-1-2); 3: far away in a; 4: from b
  auto pa = crops(a, W, {{10, 10}, {13, 25}, {30, 30}, {150, 150}}, p);
  auto pb = crops(b, W, {{10, 10}}, p);
  pa.insert(pa.end(), pb.begin(), pb.end());
  OverlapOptions o;
  o.segment_length = 8;
  o.min_overlap = 0.1;
  auto r = find_overlap_groups(pa.data(), 5, p, p, nullptr, o, 2);
  ASSERT_EQ(r.groups.size(), 5u);
  EXPECT_EQ(r.groups[0], r.groups[1]);
  EXPECT_EQ(r.groups[1], r.groups[2]);
  EXPECT_NE(r.groups[0], r.groups[3]);
  EXPECT_NE(r.groups[0], r.groups[4]);
  EXPECT_NE(r.groups[3], r.groups[4]);
  EXPECT_EQ(r.edges.size(), 2u);
  // edge 0-1: patch 1 pixel (r, c) is patch 0 pixel (r + 3, c + 15)
  EXPECT_EQ(r.edges[0].i, 0);
  EXPECT_EQ(r.edges[0].j, 1);
  EXPECT_EQ(r.edges[0].dy, 3);
  EXPECT_EQ(r.edges[0].dx, 15);
  EXPECT_NEAR(r.edges[0].overlap, (29.0 * 17.0) / (32.0 * 32.0), 1e-12);
}

TEST(Overlap, MinOverlapAndLabelsRestrictEdges) {
  const int64_t H = 100, W = 100;
  const int p = 32;
  auto a = random_image(H, W, 3);
  auto pa = crops(a, W, {{0, 0}, {0, 20}}, p);  // overlap 32x12 = 0.375
  OverlapOptions o;
  o.segment_length = 8;
  o.sample_every = 1;
  o.min_overlap = 0.5;
  EXPECT_NE(find_overlap_groups(pa.data(), 2, p, p, nullptr, o).groups[1], 0);
  o.min_overlap = 0.3;
  EXPECT_EQ(find_overlap_groups(pa.data(), 2, p, p, nullptr, o).groups[1], 0);
  const int64_t labels[2] = {0, 1};
  o.same_label_only = true;
  EXPECT_EQ(find_overlap_groups(pa.data(), 2, p, p, labels, o).groups[1], 1);
}

TEST(Overlap, SameResultForAnyThreadCount) {
  const int64_t H = 300, W = 300;
  const int p = 24;
  auto a = random_image(H, W, 4);
  std::mt19937 gen(5);
  std::uniform_int_distribution<int> d(0, H - p);
  std::vector<std::pair<int, int>> origins;
  for (int k = 0; k < 200; ++k) origins.push_back({d(gen), d(gen)});
  auto pa = crops(a, W, origins, p);
  OverlapOptions o;
  o.segment_length = 8;
  auto r1 = find_overlap_groups(pa.data(), 200, p, p, nullptr, o, 1);
  auto r2 = find_overlap_groups(pa.data(), 200, p, p, nullptr, o, 2);
  EXPECT_EQ(r1.groups, r2.groups);
  ASSERT_EQ(r1.edges.size(), r2.edges.size());
  EXPECT_GT(r1.edges.size(), 20u);  // the random crops do overlap
  for (const auto& e : r1.edges)
    EXPECT_GE(shifted_match(&pa[e.i * p * p], &pa[e.j * p * p], p, p, e.dy, e.dx, 0.0f), o.min_overlap);
}

TEST(Overlap, BadOptionsThrowValueError) {
  std::vector<float> x(2 * 16 * 16, 0.5f);
  OverlapOptions o;
  o.segment_length = 32;
  EXPECT_THROW(find_overlap_groups(x.data(), 2, 16, 16, nullptr, o), ValueError);
  o = OverlapOptions();
  o.min_overlap = 0.0;
  EXPECT_THROW(find_overlap_groups(x.data(), 2, 16, 16, nullptr, o), ValueError);
  // constant patches are never linked (no information in a flat overlap)
  o = OverlapOptions();
  o.segment_length = 8;
  auto r = find_overlap_groups(x.data(), 2, 16, 16, nullptr, o);
  EXPECT_NE(r.groups[0], r.groups[1]);
}
