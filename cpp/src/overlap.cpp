// Overlap groups of shifted-crop patches (see overlap.hpp).
#include "stemroi/overlap.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <numeric>
#include <tuple>

#include "stemroi/errors.hpp"
#include "stemroi/parallel.hpp"

namespace stemroi {
namespace {

struct SegmentEntry {
  uint64_t hash;
  int32_t patch;
  int16_t row, col;
};

struct Candidate {
  int32_t i, j;
  int16_t dy, dx;
  bool operator<(const Candidate& o) const {
    return std::tie(i, j, dy, dx) < std::tie(o.i, o.j, o.dy, o.dx);
  }
  bool operator==(const Candidate& o) const { return i == o.i && j == o.j && dy == o.dy && dx == o.dx; }
};

inline uint32_t float_bits(float v) {
  if (v == 0.0f) v = 0.0f;  // -0 and +0 are the same pixel value
  uint32_t b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}

inline uint64_t mix64(uint64_t x) {  // splitmix64 finaliser
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ULL;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebULL;
  x ^= x >> 31;
  return x;
}

struct UnionFind {
  std::vector<int64_t> parent;
  explicit UnionFind(int64_t n) : parent(n) { std::iota(parent.begin(), parent.end(), 0); }
  int64_t find(int64_t x) {
    while (parent[x] != x) {
      parent[x] = parent[parent[x]];
      x = parent[x];
    }
    return x;
  }
  void unite(int64_t a, int64_t b) {
    a = find(a);
    b = find(b);
    if (a != b) parent[std::max(a, b)] = std::min(a, b);  // smallest index is the root
  }
};

// Segments of one patch that pass the content-defined sampling.
void hash_patch(const float* p, int32_t index, int64_t h, int64_t w, int L, int sample_every,
                std::vector<SegmentEntry>& out) {
  std::vector<uint32_t> bits(w);
  for (int64_t r = 0; r < h; ++r) {
    for (int64_t c = 0; c < w; ++c) bits[c] = float_bits(p[r * w + c]);
    for (int64_t c = 0; c + L <= w; ++c) {
      uint64_t hv = 0xcbf29ce484222325ULL;
      bool constant = true;
      for (int k = 0; k < L; ++k) {
        hv = (hv ^ bits[c + k]) * 0x100000001b3ULL;
        constant = constant && bits[c + k] == bits[c];
      }
      if (constant) continue;  // flat runs (vacuum, saturation) match everywhere
      hv = mix64(hv);
      if ((hv >> 40) % static_cast<uint64_t>(sample_every) != 0) continue;
      out.push_back({hv, index, static_cast<int16_t>(r), static_cast<int16_t>(c)});
    }
  }
}

// Overlap share if patch j at (dy, dx) matches patch i, else a negative value.
double verify(const float* a, const float* b, int64_t h, int64_t w, int dy, int dx, float atol,
              double min_overlap, double min_match) {
  const int64_t r0 = std::max<int64_t>(0, -dy), r1 = std::min<int64_t>(h, h - dy);
  const int64_t c0 = std::max<int64_t>(0, -dx), c1 = std::min<int64_t>(w, w - dx);
  if (r1 <= r0 || c1 <= c0) return -1.0;
  const int64_t area = (r1 - r0) * (c1 - c0);
  const double share = static_cast<double>(area) / static_cast<double>(h * w);
  if (share + 1e-12 < min_overlap) return -1.0;
  const int64_t allowed = static_cast<int64_t>(std::floor((1.0 - min_match) * area + 1e-9));
  int64_t mismatches = 0;
  float lo = a[(r0 + dy) * w + c0 + dx], hi = lo;
  for (int64_t r = r0; r < r1; ++r) {
    const float* ra = a + (r + dy) * w + dx;
    const float* rb = b + r * w;
    for (int64_t c = c0; c < c1; ++c) {
      const float va = ra[c];
      if (!(std::fabs(va - rb[c]) <= atol) && ++mismatches > allowed) return -1.0;
      lo = std::min(lo, va);
      hi = std::max(hi, va);
    }
  }
  if (hi - lo <= atol) return -1.0;  // a flat overlap says nothing about shared origin
  return share;
}

}  // namespace

double shifted_match(const float* a, const float* b, int64_t h, int64_t w, int dy, int dx, float atol) {
  const int64_t r0 = std::max<int64_t>(0, -dy), r1 = std::min<int64_t>(h, h - dy);
  const int64_t c0 = std::max<int64_t>(0, -dx), c1 = std::min<int64_t>(w, w - dx);
  if (r1 <= r0 || c1 <= c0) return -1.0;
  int64_t matches = 0;
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t c = c0; c < c1; ++c) matches += std::fabs(a[(r + dy) * w + c + dx] - b[r * w + c]) <= atol;
  return static_cast<double>(matches) / static_cast<double>(h * w);
}

OverlapResult find_overlap_groups(const float* patches, int64_t n, int64_t h, int64_t w,
                                  const int64_t* labels, const OverlapOptions& o, int n_threads) {
  STEMROI_CHECK(n >= 1, "overlap_groups: need at least 1 patch, got ", n);
  STEMROI_CHECK(n < (int64_t{1} << 31), "overlap_groups: at most 2^31 - 1 patches, got ", n);
  STEMROI_CHECK(h >= 2 && w >= 2 && h <= 32767 && w <= 32767,
                "overlap_groups: patch sides must be in [2, 32767], got ", shape_str({h, w}));
  STEMROI_CHECK(o.segment_length >= 2 && o.segment_length <= w,
                "overlap_groups: segment_length must be in [2, patch width ", w, "], got ", o.segment_length);
  STEMROI_CHECK(o.min_overlap > 0.0 && o.min_overlap <= 1.0,
                "overlap_groups: min_overlap must be in (0, 1], got ", o.min_overlap);
  STEMROI_CHECK(o.min_match > 0.0 && o.min_match <= 1.0,
                "overlap_groups: min_match must be in (0, 1], got ", o.min_match);
  STEMROI_CHECK(o.sample_every >= 1, "overlap_groups: sample_every must be >= 1, got ", o.sample_every);
  STEMROI_CHECK(o.neighbours >= 1, "overlap_groups: neighbours must be >= 1, got ", o.neighbours);
  STEMROI_CHECK(o.max_bucket >= 2, "overlap_groups: max_bucket must be >= 2, got ", o.max_bucket);
  STEMROI_CHECK(o.atol >= 0.0f, "overlap_groups: atol must be >= 0, got ", o.atol);
  const int threads = resolve_n_threads(n_threads);
  const int64_t hw = h * w;

  // 1. sampled row-segment hashes, per patch in parallel, concatenated in patch order
  std::vector<std::vector<SegmentEntry>> per_patch(n);
  OmpExceptionCapture capture;
#pragma omp parallel for schedule(dynamic, 16) num_threads(threads)
  for (int64_t p = 0; p < n; ++p)
    capture.run([&] { hash_patch(patches + p * hw, static_cast<int32_t>(p), h, w, o.segment_length, o.sample_every, per_patch[p]); });
  capture.rethrow();
  std::vector<SegmentEntry> entries;
  {
    size_t total = 0;
    for (const auto& v : per_patch) total += v.size();
    entries.reserve(total);
    for (auto& v : per_patch) {
      entries.insert(entries.end(), v.begin(), v.end());
      std::vector<SegmentEntry>().swap(v);
    }
  }
  std::sort(entries.begin(), entries.end(), [](const SegmentEntry& a, const SegmentEntry& b) {
    return std::tie(a.hash, a.patch, a.row, a.col) < std::tie(b.hash, b.patch, b.row, b.col);
  });

  // 2. equal hashes propose (i, j, shift)
  std::vector<Candidate> cands;
  for (size_t s = 0; s < entries.size();) {
    size_t e = s + 1;
    while (e < entries.size() && entries[e].hash == entries[s].hash) ++e;
    if (e - s >= 2 && e - s <= static_cast<size_t>(o.max_bucket)) {
      // each entry proposes pairs with the next `neighbours` entries of other patches: true
      // twins share many segments, so these chains connect them with linear, not quadratic, work
      for (size_t a = s; a < e; ++a) {
        int proposed = 0;
        for (size_t b = a + 1; b < e && proposed < o.neighbours; ++b) {
          const SegmentEntry& x = entries[a];
          const SegmentEntry& y = entries[b];
          if (x.patch == y.patch) continue;  // sorted: x.patch < y.patch from here on
          if (labels && o.same_label_only && labels[x.patch] != labels[y.patch]) continue;
          cands.push_back({x.patch, y.patch, static_cast<int16_t>(x.row - y.row), static_cast<int16_t>(x.col - y.col)});
          ++proposed;
        }
      }
    }
    s = e;
  }
  std::vector<SegmentEntry>().swap(entries);
  std::sort(cands.begin(), cands.end());
  cands.erase(std::unique(cands.begin(), cands.end()), cands.end());

  // 3. verify in fixed order; pairs already connected need no check
  OverlapResult result;
  result.n_candidates = static_cast<int64_t>(cands.size());
  UnionFind uf(n);
  for (const Candidate& c : cands) {
    if (uf.find(c.i) == uf.find(c.j)) continue;
    ++result.n_verified;
    const double share = verify(patches + c.i * hw, patches + c.j * hw, h, w, c.dy, c.dx, o.atol, o.min_overlap, o.min_match);
    if (share < 0.0) continue;
    uf.unite(c.i, c.j);
    result.edges.push_back({c.i, c.j, c.dy, c.dx, share});
  }

  // 4. component ids in order of first patch
  result.groups.assign(n, -1);
  std::vector<int64_t> id_of_root(n, -1);
  int64_t next = 0;
  for (int64_t p = 0; p < n; ++p) {
    const int64_t r = uf.find(p);
    if (id_of_root[r] < 0) id_of_root[r] = next++;
    result.groups[p] = id_of_root[r];
  }
  return result;
}

}  // namespace stemroi
