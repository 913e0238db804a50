// Bindings of the numeric engine (PCA, K-means, silhouette, cluster metrics).
// Arrays are validated in Python (stemroi._validation.check_array) and taken
// here with noconvert(), so a C-contiguous float32/float64 array is used in
// place, never copied or upcast. The GIL is released around every core call.
// device: "cpu", "cuda", "cuda:N" or "auto" (see stemroi/compute_device.hpp).
#include <cmath>
#include <optional>

#include "common.hpp"
#include "stemroi/cluster_metrics.hpp"
#include "stemroi/compute_device.hpp"
#include "stemroi/kmeans.hpp"
#include "stemroi/linkage.hpp"
#include "stemroi/pca.hpp"
#include "stemroi/silhouette.hpp"

namespace stemroi::bind {
namespace {

template <typename T>
py::array_t<T> to_array(const std::vector<T>& v, std::vector<py::ssize_t> shape) {
  py::array_t<T> a(shape);
  if (!v.empty()) std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

template <typename T>
void bind_typed(py::module_& m) {
  m.def(
      "pca_fit",
      [](const carray<T>& X, int64_t n_components, double variance_fraction, const std::string& solver,
         int64_t n_oversamples, int n_iter, uint64_t seed, int n_threads, int route, const std::string& device) {
        require_ndim(X, 2, "X");
        PCAOptions opt;
        opt.device = parse_compute_device(device);
        opt.n_components = n_components;
        opt.variance_fraction = variance_fraction;
        if (solver == "full") opt.solver = PCASolver::Full;
        else if (solver == "randomized") opt.solver = PCASolver::Randomized;
        else throw ValueError(concat("svd_solver must be 'full' or 'randomized', got '", solver, "'"));
        opt.n_oversamples = n_oversamples;
        opt.n_iter = n_iter;
        opt.seed = seed;
        opt.n_threads = n_threads;
        opt.route = route;
        PCAFit<T> fit;
        {
          py::gil_scoped_release nogil;
          fit = pca_fit<T>(X.data(), X.shape(0), X.shape(1), opt);
        }
        const py::ssize_t k = fit.n_components, d = fit.n_features;
        py::dict out;
        out["mean"] = to_array(fit.mean, {d});
        out["components"] = to_array(fit.components, {k, d});
        out["explained_variance"] = to_array(fit.explained_variance, {k});
        out["explained_variance_ratio"] = to_array(fit.explained_variance_ratio, {k});
        out["singular_values"] = to_array(fit.singular_values, {k});
        out["noise_variance"] = fit.noise_variance;
        out["n_components"] = fit.n_components;
        out["used_gram"] = fit.used_gram;
        return out;
      },
      py::arg("X").noconvert(), py::kw_only(), py::arg("n_components") = PCAOptions{}.n_components,
      py::arg("variance_fraction") = PCAOptions{}.variance_fraction, py::arg("solver") = "full",
      py::arg("n_oversamples") = PCAOptions{}.n_oversamples, py::arg("n_iter") = PCAOptions{}.n_iter,
      py::arg("seed") = PCAOptions{}.seed, py::arg("n_threads") = PCAOptions{}.n_threads,
      py::arg("route") = PCAOptions{}.route, py::arg("device") = "cpu",
      "PCA fit; keyword options are PCAOptions (n_iter=-1: scikit-learn's 'auto', route 0: choose, 1: Gram, 2: SVD).");

  m.def(
      "pca_transform",
      [](const carray<T>& X, const carray<T>& mean, const carray<T>& components,
         std::optional<carray<double>> scale, int n_threads) {
        require_ndim(X, 2, "X");
        const int64_t n = X.shape(0), d = X.shape(1), k = components.shape(0);
        if (components.ndim() != 2 || components.shape(1) != d || mean.size() != d)
          throw ValueError(concat("X has ", d, " features, but the PCA was fitted with ", mean.size()));
        py::array_t<T> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(k)});
        T* o = out.mutable_data();
        const double* s = scale ? scale->data() : nullptr;
        py::gil_scoped_release nogil;
        pca_transform<T>(X.data(), n, d, mean.data(), components.data(), k, s, o, n_threads);
        return out;
      },
      py::arg("X").noconvert(), py::arg("mean").noconvert(), py::arg("components").noconvert(), py::arg("scale"),
      py::arg("n_threads"));

  m.def(
      "pca_inverse_transform",
      [](const carray<T>& Z, const carray<T>& mean, const carray<T>& components, std::optional<carray<double>> scale,
         int n_threads) {
        require_ndim(Z, 2, "X");
        const int64_t n = Z.shape(0), k = Z.shape(1), d = components.shape(1);
        if (components.shape(0) != k)
          throw ValueError(concat("X has ", k, " components, but the PCA keeps ", components.shape(0)));
        py::array_t<T> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(d)});
        T* o = out.mutable_data();
        const double* s = scale ? scale->data() : nullptr;
        py::gil_scoped_release nogil;
        pca_inverse_transform<T>(Z.data(), n, k, mean.data(), components.data(), d, s, o, n_threads);
        return out;
      },
      py::arg("Z").noconvert(), py::arg("mean").noconvert(), py::arg("components").noconvert(), py::arg("scale"),
      py::arg("n_threads"));

  m.def(
      "kmeans_fit",
      [](const carray<T>& X, int64_t n_clusters, std::optional<carray<T>> init, int n_init, int max_iter, double tol,
         uint64_t seed, int n_threads, const std::string& device) {
        require_ndim(X, 2, "X");
        const int64_t n = X.shape(0), d = X.shape(1);
        if (init && (init->ndim() != 2 || init->shape(0) != n_clusters || init->shape(1) != d))
          throw ValueError(concat("init should be of shape (", n_clusters, ", ", d, "), got ",
                                  shape_str(shape_of(*init))));
        KMeansOptions opt;
        opt.n_clusters = n_clusters;
        opt.n_init = n_init;
        opt.max_iter = max_iter;
        opt.tol = tol;
        opt.seed = seed;
        opt.n_threads = n_threads;
        opt.device = parse_compute_device(device);
        KMeansFit<T> fit;
        {
          py::gil_scoped_release nogil;
          fit = kmeans_fit<T>(X.data(), n, d, opt, init ? init->data() : nullptr);
        }
        return py::make_tuple(to_array(fit.centers, {static_cast<py::ssize_t>(n_clusters), static_cast<py::ssize_t>(d)}),
                              to_array(fit.labels, {static_cast<py::ssize_t>(n)}), fit.inertia, fit.n_iter);
      },
      py::arg("X").noconvert(), py::arg("n_clusters"), py::arg("init").noconvert(), py::arg("n_init"),
      py::arg("max_iter"), py::arg("tol"), py::arg("seed"), py::arg("n_threads"), py::kw_only(),
      py::arg("device") = "cpu");

  m.def(
      "kmeans_plusplus",
      [](const carray<T>& X, int64_t n_clusters, uint64_t seed, int n_threads) {
        require_ndim(X, 2, "X");
        std::vector<T> c;
        {
          py::gil_scoped_release nogil;
          c = kmeans_plusplus<T>(X.data(), X.shape(0), X.shape(1), n_clusters, seed, n_threads);
        }
        return to_array(c, {static_cast<py::ssize_t>(n_clusters), X.shape(1)});
      },
      py::arg("X").noconvert(), py::arg("n_clusters"), py::arg("seed"), py::arg("n_threads"));

  m.def(
      "kmeans_predict",
      [](const carray<T>& X, const carray<T>& centers, int n_threads, const std::string& device) {
        require_ndim(X, 2, "X");
        const int64_t n = X.shape(0), d = X.shape(1), k = centers.shape(0);
        if (centers.ndim() != 2 || centers.shape(1) != d)
          throw ValueError(concat("X has ", d, " features, but KMeans was fitted with ", centers.shape(1)));
        const ComputeDevice dev = parse_compute_device(device);
        py::array_t<int32_t> labels(static_cast<py::ssize_t>(n));
        int32_t* l = labels.mutable_data();
        double inertia;
        {
          py::gil_scoped_release nogil;
          inertia = kmeans_predict<T>(X.data(), n, d, centers.data(), k, l, n_threads, dev);
        }
        return py::make_tuple(labels, inertia);
      },
      py::arg("X").noconvert(), py::arg("centers").noconvert(), py::arg("n_threads"), py::kw_only(),
      py::arg("device") = "cpu");

  m.def(
      "kmeans_transform",
      [](const carray<T>& X, const carray<T>& centers, int n_threads, const std::string& device) {
        require_ndim(X, 2, "X");
        const int64_t n = X.shape(0), d = X.shape(1), k = centers.shape(0);
        if (centers.ndim() != 2 || centers.shape(1) != d)
          throw ValueError(concat("X has ", d, " features, but KMeans was fitted with ", centers.shape(1)));
        const ComputeDevice dev = parse_compute_device(device);
        py::array_t<T> out({static_cast<py::ssize_t>(n), static_cast<py::ssize_t>(k)});
        T* o = out.mutable_data();
        py::gil_scoped_release nogil;
        kmeans_transform<T>(X.data(), n, d, centers.data(), k, o, n_threads, dev);
        return out;
      },
      py::arg("X").noconvert(), py::arg("centers").noconvert(), py::arg("n_threads"), py::kw_only(),
      py::arg("device") = "cpu");

  m.def(
      "average_linkage",
      [](const carray<T>& X, int n_threads) {
        require_ndim(X, 2, "X");
        Dendrogram t;
        {
          py::gil_scoped_release nogil;
          t = average_linkage<T>(X.data(), X.shape(0), X.shape(1), n_threads);
        }
        // scipy's linkage matrix: (n - 1, 4) float64 [left, right, height, size]
        const py::ssize_t m = static_cast<py::ssize_t>(t.height.size());
        py::array_t<double> Z({m, static_cast<py::ssize_t>(4)});
        double* z = Z.mutable_data();
        for (py::ssize_t j = 0; j < m; ++j) {
          z[4 * j] = static_cast<double>(t.left[j]);
          z[4 * j + 1] = static_cast<double>(t.right[j]);
          z[4 * j + 2] = t.height[j];
          z[4 * j + 3] = static_cast<double>(t.size[j]);
        }
        return Z;
      },
      py::arg("X").noconvert(), py::arg("n_threads"));

  m.def(
      "silhouette_samples_multi",
      [](const carray<T>& X, const std::vector<carray<int32_t>>& labels, const std::vector<int32_t>& n_clusters,
         int n_threads, const std::string& device) {
        require_ndim(X, 2, "X");
        const int64_t n = X.shape(0);
        const ComputeDevice dev = parse_compute_device(device);
        std::vector<const int32_t*> ptrs;
        for (const auto& l : labels) {
          if (l.ndim() != 1 || l.shape(0) != n)
            throw ValueError(concat("labels must have shape (", n, ",), got ", shape_str(shape_of(l))));
          ptrs.push_back(l.data());
        }
        std::vector<std::vector<double>> res;
        {
          py::gil_scoped_release nogil;
          res = silhouette_samples_multi<T>(X.data(), n, X.shape(1), ptrs, n_clusters, n_threads, dev);
        }
        py::list out;
        for (const auto& v : res) {
          py::array_t<T> a(static_cast<py::ssize_t>(n));
          std::transform(v.begin(), v.end(), a.mutable_data(), [](double x) { return static_cast<T>(x); });
          out.append(py::make_tuple(a, ordered_mean(v)));
        }
        return out;
      },
      py::arg("X").noconvert(), py::arg("labels"), py::arg("n_clusters"), py::arg("n_threads"), py::kw_only(),
      py::arg("device") = "cpu");

  m.def(
      "select_n_clusters",
      [](const carray<T>& X, const std::vector<int64_t>& k_values, int n_init, int max_iter, double tol, uint64_t seed,
         int n_threads, const std::vector<int64_t>& sample_idx, const std::string& device) {
        require_ndim(X, 2, "X");
        KMeansOptions opt;
        opt.device = parse_compute_device(device);
        opt.n_init = n_init;
        opt.max_iter = max_iter;
        opt.tol = tol;
        opt.seed = seed;
        opt.n_threads = n_threads;
        NClustersSweep<T> r;
        {
          py::gil_scoped_release nogil;
          r = select_n_clusters<T>(X.data(), X.shape(0), X.shape(1), k_values, opt, sample_idx);
        }
        py::dict out;
        out["scores"] = r.scores;
        out["inertias"] = r.inertias;
        out["n_iter"] = r.n_iter;
        py::list labels, centers;
        for (size_t s = 0; s < r.labels.size(); ++s) {
          labels.append(to_array(r.labels[s], {X.shape(0)}));
          centers.append(to_array(r.centers[s], {static_cast<py::ssize_t>(k_values[s]), X.shape(1)}));
        }
        out["labels"] = labels;
        out["centers"] = centers;
        return out;
      },
      py::arg("X").noconvert(), py::arg("k_values"), py::arg("n_init"), py::arg("max_iter"), py::arg("tol"),
      py::arg("seed"), py::arg("n_threads"), py::arg("sample_idx"), py::kw_only(), py::arg("device") = "cpu");
}

}  // namespace

void bind_numeric(py::module_& m) {
  m.attr("cuda_built") = cuda_built();
  m.def("cuda_device_count", &cuda_device_count,
        "CUDA devices the numeric engine can use (0 in a build without CUDA or without a visible GPU).");
  bind_typed<float>(m);
  bind_typed<double>(m);
  m.def(
      "contingency_matrix",
      [](const carray<int64_t>& classes, const carray<int64_t>& clusters, int64_t n_classes, int64_t n_clusters) {
        if (classes.ndim() != 1 || clusters.ndim() != 1 || classes.shape(0) != clusters.shape(0))
          throw ValueError(concat("y_true and labels must be 1-D of the same length, got shapes ",
                                  shape_str(shape_of(classes)), " and ", shape_str(shape_of(clusters))));
        auto m = contingency_matrix(classes.data(), clusters.data(), classes.shape(0), n_classes, n_clusters);
        return to_array(m, {static_cast<py::ssize_t>(n_classes), static_cast<py::ssize_t>(n_clusters)});
      },
      py::arg("classes").noconvert(), py::arg("clusters").noconvert(), py::arg("n_classes"), py::arg("n_clusters"));
  m.def(
      "cut_dendrogram",
      [](const carray<double>& Z, int64_t k) {
        if (Z.ndim() != 2 || Z.shape(1) != 4)
          throw ValueError(concat("Z must be a linkage matrix of shape (n - 1, 4), got ", shape_str(shape_of(Z))));
        Dendrogram t;
        const int64_t m = Z.shape(0);
        t.n_samples = m + 1;
        const double* z = Z.data();
        for (int64_t j = 0; j < m; ++j) {
          for (int c = 0; c < 2; ++c) {
            const double v = z[4 * j + c];
            if (!(v >= 0 && v < static_cast<double>(2 * m + 1) && v == std::floor(v)))
              throw ValueError(concat("Z[", j, ", ", c, "] must be a cluster id in [0, ", 2 * m + 1, "), got ", v));
          }
          t.left.push_back(static_cast<int64_t>(z[4 * j]));
          t.right.push_back(static_cast<int64_t>(z[4 * j + 1]));
          t.height.push_back(z[4 * j + 2]);
          t.size.push_back(static_cast<int64_t>(z[4 * j + 3]));
        }
        return to_array(cut_dendrogram(t, k), {static_cast<py::ssize_t>(m + 1)});
      },
      py::arg("Z").noconvert(), py::arg("k"));
  m.def(
      "max_weight_matching",
      [](const carray<double>& w) {
        require_ndim(w, 2, "weights");
        std::vector<double> v(w.data(), w.data() + w.size());
        return to_array(max_weight_matching(v, w.shape(0), w.shape(1)), {w.shape(0)});
      },
      py::arg("weights").noconvert());
}

}  // namespace stemroi::bind
