// Overlap detection between patches that are shifted crops of the same image
// region: exact shared row segments are hashed, equal hashes propose a pair
// and a shift, each proposal is verified pixel by pixel over the whole overlap,
// and verified pairs are merged with union-find into groups (connected
// components of the overlap graph).
#pragma once
#include <cstdint>
#include <vector>

namespace stemroi {

struct OverlapOptions {
  int segment_length = 16;   // pixels per hashed row segment (overlaps narrower are not found)
  double min_overlap = 0.25; // overlap area / patch area needed for an edge
  int sample_every = 4;      // keep ~1/sample_every segments, chosen by content (same in every copy)
  float atol = 0.0f;         // |a - b| <= atol counts as a matching pixel in verification
  double min_match = 1.0;    // share of matching pixels over the overlap needed for an edge
  int neighbours = 4;        // pairs proposed per shared segment (with the next entries of its bucket)
  int max_bucket = 4096;     // segments shared by more patches than this carry no information
  bool same_label_only = false;  // with labels: only link patches of the same label
};

// Patch j's pixel (r, c) equals patch i's pixel (r + dy, c + dx); i < j.
struct OverlapEdge {
  int64_t i = 0, j = 0;
  int32_t dy = 0, dx = 0;
  double overlap = 0.0;  // overlap area / patch area
};

struct OverlapResult {
  std::vector<int64_t> groups;     // (n,) component ids 0..G-1 in order of first patch
  std::vector<OverlapEdge> edges;  // a spanning forest of the verified overlap graph
  int64_t n_candidates = 0;        // distinct (i, j, shift) proposals from the hash index
  int64_t n_verified = 0;          // proposals checked pixel by pixel
};

// patches: n * h * w floats, C order. labels: n entries or nullptr.
// Deterministic (sorted proposals, fixed order) whatever n_threads.
OverlapResult find_overlap_groups(const float* patches, int64_t n, int64_t h, int64_t w,
                                  const int64_t* labels, const OverlapOptions& options,
                                  int n_threads = 0);

// Share of pixels (of h*w) where patch j at shift (dy, dx) matches patch i
// within atol, or -1 when the overlap is empty. Exposed for tests.
double shifted_match(const float* a, const float* b, int64_t h, int64_t w, int dy, int dx, float atol);

}  // namespace stemroi
