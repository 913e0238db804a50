// A regular grid of square patches over a 2-D image: origins in row-major
// order and extraction of any range of patches into a contiguous batch.
//
// Edge handling along each axis of length L (patch p, stride s):
//   drop : origins 0, s, 2s, ... with origin + p <= L (needs L >= p)
//   shift: as drop, plus one last window at L - p when the drop grid leaves
//          pixels uncovered (every pixel covered, last stride shorter; needs L >= p)
//   pad  : origins 0, s, 2s, ... < L up to the first window that reaches L
//          (every pixel covered when s <= p; any L >= 1); pixels past the bottom/right border are
//          mirrored with scipy.ndimage's 'reflect' (= np.pad mode 'symmetric':
//          "d c b a | a b c d | d c b a"), see reflect_index in filters.hpp.
//
// Streaming: extraction reads an image band (rows [band_row0, band_row0 +
// band_rows) of the full image); row_span() says which rows a batch needs, so
// the caller only has to map or copy those rows.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace stemroi {

enum class EdgeMode { Drop, Pad, Shift };

EdgeMode parse_edge_mode(const std::string& name);
const char* edge_mode_name(EdgeMode mode);

class PatchGrid {
 public:
  // stride <= 0 means stride = patch_size (non-overlapping). Throws ValueError
  // for patch_size < 1.
  explicit PatchGrid(int64_t patch_size, int64_t stride = 0, EdgeMode edge = EdgeMode::Drop);

  int64_t patch_size() const { return patch_; }
  int64_t stride() const { return stride_; }
  EdgeMode edge() const { return edge_; }

  // Origins along one axis of the given length (validated: ValueError naming
  // the image shape when the axis is too small for drop/shift).
  std::vector<int64_t> axis_origins(int64_t length, int64_t h, int64_t w) const;
  // Number of patches of an h x w image.
  int64_t n_patches(int64_t h, int64_t w) const;
  // (row, col) of every patch, row-major, flattened as [r0, c0, r1, c1, ...].
  std::vector<int64_t> origins(int64_t h, int64_t w) const;

  // Rows [first, last) of the image that patches [start, stop) read (the
  // reflected rows included for pad).
  std::pair<int64_t, int64_t> row_span(int64_t h, int64_t w, int64_t start, int64_t stop) const;

  // Copies patches [start, stop) into out ((stop - start) x p x p, C order).
  // `band` holds image rows [band_row0, band_row0 + band_rows) of an h x w
  // image, C-contiguous (row stride w); it must contain row_span(...).
  // Float inputs: when check_finite, a NaN/inf pixel inside a patch raises
  // ValueError naming the patch index and origin (after the parallel loop).
  template <typename T>
  void extract(const T* band, int64_t band_row0, int64_t band_rows, int64_t h, int64_t w, int64_t start,
               int64_t stop, T* out, bool check_finite = true, int n_threads = 0) const;

 private:
  void check_image(int64_t h, int64_t w) const;
  int64_t patch_;
  int64_t stride_;
  EdgeMode edge_;
};

}  // namespace stemroi
