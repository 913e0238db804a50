#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "stemroi/errors.hpp"
#include "stemroi/patches.hpp"

using namespace stemroi;

TEST(PatchGrid, NonOverlappingTilesOf768Image) {
  PatchGrid grid(64);
  EXPECT_EQ(grid.n_patches(768, 768), 144);
  const auto o = grid.origins(768, 768);
  ASSERT_EQ(o.size(), 288u);
  for (int64_t i = 0; i < 144; ++i) {
    EXPECT_EQ(o[2 * i], (i / 12) * 64);
    EXPECT_EQ(o[2 * i + 1], (i % 12) * 64);
  }
  EXPECT_EQ(PatchGrid(64, 16).n_patches(768, 768), 2025);
}

TEST(PatchGrid, EdgeModesAlongAnAxis) {
  EXPECT_EQ(PatchGrid(16, 7, EdgeMode::Drop).axis_origins(50, 50, 50), (std::vector<int64_t>{0, 7, 14, 21, 28}));
  EXPECT_EQ(PatchGrid(16, 7, EdgeMode::Shift).axis_origins(50, 50, 50),
            (std::vector<int64_t>{0, 7, 14, 21, 28, 34}));
  EXPECT_EQ(PatchGrid(16, 7, EdgeMode::Pad).axis_origins(50, 50, 50), (std::vector<int64_t>{0, 7, 14, 21, 28, 35}));
  EXPECT_EQ(PatchGrid(16, 7, EdgeMode::Shift).axis_origins(37, 37, 37), (std::vector<int64_t>{0, 7, 14, 21}));
  EXPECT_EQ(PatchGrid(8, 0, EdgeMode::Pad).axis_origins(1, 1, 1), (std::vector<int64_t>{0}));
}

// Shift is the tiled-prediction rule: 0, s, 2s, ... while a window still
// ends inside, then one window flush with the edge at L - p.
TEST(PatchGrid, ShiftEndsFlushWithTheEdge) {
  EXPECT_EQ(PatchGrid(64, 32, EdgeMode::Shift).axis_origins(100, 100, 100), (std::vector<int64_t>{0, 32, 36}));
  EXPECT_EQ(PatchGrid(64, 32, EdgeMode::Shift).axis_origins(64, 64, 64), (std::vector<int64_t>{0}));
  EXPECT_THROW(PatchGrid(64, 32, EdgeMode::Shift).axis_origins(10, 10, 10), ValueError);
  for (int64_t p = 1; p <= 9; ++p)
    for (int64_t s = 1; s <= 12; ++s)
      for (int64_t L = p; L <= 40; ++L) {
        std::vector<int64_t> flush;
        for (int64_t o = 0; o + p < L; o += s) flush.push_back(o);
        flush.push_back(L - p);
        EXPECT_EQ(PatchGrid(p, s, EdgeMode::Shift).axis_origins(L, L, L), flush) << "p=" << p << " s=" << s << " L=" << L;
      }
}

TEST(PatchGrid, ExtractEqualsSlicingAndReflectPadding) {
  const int64_t h = 11, w = 13;
  std::vector<float> img(h * w);
  for (int64_t i = 0; i < h * w; ++i) img[i] = static_cast<float>(i);
  PatchGrid grid(6, 4, EdgeMode::Pad);  // rows 0,4,8 ; cols 0,4,8
  const int64_t n = grid.n_patches(h, w);
  ASSERT_EQ(n, 9);
  std::vector<float> out(n * 36);
  grid.extract<float>(img.data(), 0, h, h, w, 0, n, out.data());
  const auto o = grid.origins(h, w);
  auto sym = [](int64_t i, int64_t len) { return i < len ? i : 2 * len - 1 - i; };  // one reflection suffices here
  for (int64_t k = 0; k < n; ++k)
    for (int64_t y = 0; y < 6; ++y)
      for (int64_t x = 0; x < 6; ++x)
        EXPECT_EQ(out[k * 36 + y * 6 + x], img[sym(o[2 * k] + y, h) * w + sym(o[2 * k + 1] + x, w)]);
}

TEST(PatchGrid, RangeFromRowBandEqualsFullExtraction) {
  const int64_t h = 40, w = 30;
  std::vector<uint16_t> img(h * w);
  for (int64_t i = 0; i < h * w; ++i) img[i] = static_cast<uint16_t>(i * 7);
  PatchGrid grid(8, 5, EdgeMode::Shift);
  const int64_t n = grid.n_patches(h, w);
  std::vector<uint16_t> full(n * 64), part(5 * 64);
  grid.extract<uint16_t>(img.data(), 0, h, h, w, 0, n, full.data());
  const int64_t start = n / 2, stop = start + 5;
  const auto span = grid.row_span(h, w, start, stop);
  EXPECT_LT(span.second - span.first, h);
  grid.extract<uint16_t>(img.data() + span.first * w, span.first, span.second - span.first, h, w, start, stop,
                         part.data());
  for (int64_t i = 0; i < 5 * 64; ++i) EXPECT_EQ(part[i], full[start * 64 + i]);
  // a band that misses needed rows is refused
  EXPECT_THROW(grid.extract<uint16_t>(img.data() + (span.first + 1) * w, span.first + 1, span.second - span.first - 1,
                                      h, w, start, stop, part.data()),
               ValueError);
}

TEST(PatchGrid, BadInputIsAValueErrorNamingValues) {
  try {
    PatchGrid(64).n_patches(31, 40);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("patch_size must be <= image size (31, 40), got 64"), std::string::npos);
  }
  EXPECT_THROW(PatchGrid(0), ValueError);
  EXPECT_THROW(PatchGrid(4).n_patches(0, 4), ValueError);
  EXPECT_THROW(parse_edge_mode("wrap"), ValueError);
  EXPECT_THROW(PatchGrid(4).row_span(8, 8, 3, 2), ValueError);
  EXPECT_EQ(PatchGrid(4, 0, EdgeMode::Pad).n_patches(1, 1), 1);
}

TEST(PatchGrid, NaNIsReportedWithItsPatch) {
  std::vector<double> img(16 * 16, 0.0);
  img[9 * 16 + 5] = std::numeric_limits<double>::quiet_NaN();
  PatchGrid grid(8);
  std::vector<double> out(4 * 64);
  try {
    grid.extract<double>(img.data(), 0, 16, 16, 16, 0, 4, out.data(), true, 2);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_NE(std::string(e.what()).find("patch 2 at origin (8, 0)"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(grid.extract<double>(img.data(), 0, 16, 16, 16, 0, 4, out.data(), false, 2));
  EXPECT_TRUE(std::isnan(out[2 * 64 + 1 * 8 + 5]));
}

TEST(PatchGrid, ThreadCountDoesNotChangeTheResult) {
  const int64_t h = 160, w = 150;  // large enough for the parallel path
  std::vector<float> img(h * w);
  for (int64_t i = 0; i < h * w; ++i) img[i] = std::sin(0.01f * i);
  PatchGrid grid(16, 3, EdgeMode::Pad);
  const int64_t n = grid.n_patches(h, w);
  std::vector<float> a(n * 256), b(n * 256);
  grid.extract<float>(img.data(), 0, h, h, w, 0, n, a.data(), true, 1);
  grid.extract<float>(img.data(), 0, h, h, w, 0, n, b.data(), true, 2);
  EXPECT_EQ(a, b);
}

TEST(PatchGrid, PadOriginsStayInsideWhenStrideExceedsPatch) {
  // L = 11, p = 1, s = 14: the second window would start at 14, past the image
  EXPECT_EQ(PatchGrid(1, 14, EdgeMode::Pad).axis_origins(11, 11, 18), (std::vector<int64_t>{0}));
  EXPECT_EQ(PatchGrid(3, 5, EdgeMode::Pad).axis_origins(12, 12, 12), (std::vector<int64_t>{0, 5, 10}));
  const PatchGrid grid(1, 14, EdgeMode::Pad);
  std::vector<float> img(11 * 18, 1.0f), out(2);
  EXPECT_EQ(grid.n_patches(11, 18), 2);
  grid.extract<float>(img.data(), 0, 11, 11, 18, 0, 2, out.data());
  EXPECT_EQ(out[1], 1.0f);
}
