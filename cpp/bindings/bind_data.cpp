// Bindings of the data area: overlap groups between patches.
#include "common.hpp"
#include "stemroi/overlap.hpp"

namespace stemroi::bind {
void bind_data(py::module_& m) {
  m.def(
      "overlap_groups",
      [](const carray<float>& patches, const py::object& labels, int segment_length, double min_overlap,
         int sample_every, float atol, double min_match, int neighbours, int max_bucket, bool same_label_only,
         int n_threads) {
        require_ndim(patches, 3, "patches");
        const int64_t n = patches.shape(0), h = patches.shape(1), w = patches.shape(2);
        carray<int64_t> lab;
        const int64_t* lab_ptr = nullptr;
        if (!labels.is_none()) {
          lab = labels.cast<carray<int64_t>>();
          require_ndim(lab, 1, "labels");
          if (lab.shape(0) != n)
            throw ValueError(concat("labels: expected ", n, " entries (one per patch), got ", lab.shape(0)));
          lab_ptr = lab.data();
        }
        OverlapOptions o;
        o.segment_length = segment_length;
        o.min_overlap = min_overlap;
        o.sample_every = sample_every;
        o.atol = atol;
        o.min_match = min_match;
        o.neighbours = neighbours;
        o.max_bucket = max_bucket;
        o.same_label_only = same_label_only;
        OverlapResult r;
        {
          py::gil_scoped_release release;
          r = find_overlap_groups(patches.data(), n, h, w, lab_ptr, o, n_threads);
        }
        py::array_t<int64_t> groups(n);
        std::copy(r.groups.begin(), r.groups.end(), groups.mutable_data());
        const auto m_edges = static_cast<py::ssize_t>(r.edges.size());
        py::array_t<int64_t> edges({m_edges, py::ssize_t{4}});
        py::array_t<double> shares(m_edges);
        auto e = edges.mutable_unchecked<2>();
        auto s = shares.mutable_unchecked<1>();
        for (py::ssize_t k = 0; k < m_edges; ++k) {
          e(k, 0) = r.edges[k].i;
          e(k, 1) = r.edges[k].j;
          e(k, 2) = r.edges[k].dy;
          e(k, 3) = r.edges[k].dx;
          s(k) = r.edges[k].overlap;
        }
        py::dict stats;
        stats["n_candidates"] = r.n_candidates;
        stats["n_verified"] = r.n_verified;
        return py::make_tuple(groups, edges, shares, stats);
      },
      py::arg("patches"), py::arg("labels") = py::none(), py::arg("segment_length") = 16,
      py::arg("min_overlap") = 0.25, py::arg("sample_every") = 4, py::arg("atol") = 0.0f,
      py::arg("min_match") = 1.0, py::arg("neighbours") = 4, py::arg("max_bucket") = 4096, py::arg("same_label_only") = false,
      py::arg("n_threads") = 0,
      "Group ids of shifted-crop patches: (groups (n,), edges (m, 4) [i, j, dy, dx], overlap shares (m,), stats).");
}
}  // namespace stemroi::bind
