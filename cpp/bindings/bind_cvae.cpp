// Bindings of the cvae area: the CVAE module (train, reconstruct, encode,
// save/load) and the anomaly scores of difference images.
#include "common.hpp"
#include "stemroi/anomaly.hpp"
#include "stemroi/cvae.hpp"
#include "stemroi/torch_io.hpp"

namespace stemroi::bind {

namespace {
struct PyCVAE {
  CVAE model{nullptr};
};

torch::Tensor crops_tensor(const carray<float>& data) {
  require_ndim(data, 3, "crops");
  return tensor_view(data);
}

}  // namespace

void bind_cvae(py::module_& m) {
  auto cvae = py::class_<PyCVAE>(m, "CVAE", "Convolutional VAE (private; use stemroi.BulkCVAE)")
      .def(py::init([](int64_t latent_dim, const std::string& variant, int64_t crop_size, uint64_t seed) {
             CVAEConfig c;
             c.latent_dim = latent_dim;
             c.variant = variant;
             c.crop_size = crop_size;
             return PyCVAE{CVAE(c, seed)};
           }),
           py::arg("latent_dim"), py::arg("variant"), py::arg("crop_size"), py::arg("seed"))
      .def_property_readonly("latent_dim", [](PyCVAE& s) { return s.model->config().latent_dim; })
      .def_property_readonly("variant", [](PyCVAE& s) { return s.model->config().variant; })
      .def_property_readonly("crop_size", [](PyCVAE& s) { return s.model->config().crop_size; })
      .def_property_readonly("encoded_size", [](PyCVAE& s) { return s.model->encoded_size(); })
      .def(
          "fit",
          [](PyCVAE& s, const carray<float>& crops, int64_t epochs, int64_t batch_size, double learning_rate,
             uint64_t seed, int n_threads, const py::object& progress, const AugmentOptions& augment) {
            auto x = crops_tensor(crops);
            CVAETrainOptions o;
            o.augment = augment;
            o.epochs = epochs;
            o.batch_size = batch_size;
            o.learning_rate = learning_rate;
            o.seed = seed;
            o.n_threads = n_threads;
            auto cb = wrap_progress(progress);
            py::gil_scoped_release release;
            return train_cvae(s.model, x, o, cb);
          },
          py::arg("crops").noconvert(), py::arg("epochs"), py::arg("batch_size"), py::arg("learning_rate"),
          py::arg("seed"), py::arg("n_threads") = 0, py::arg("progress") = py::none(),
          py::arg("augment") = AugmentOptions{})
      .def(
          "reconstruct",
          [](PyCVAE& s, const carray<float>& crops, int64_t batch_size, int n_threads) {
            auto x = crops_tensor(crops);
            torch::Tensor out;
            {
              py::gil_scoped_release release;
              out = cvae_reconstruct(s.model, x, batch_size, n_threads);
            }
            return tensor_to_numpy(out);
          },
          py::arg("crops").noconvert(), py::arg("batch_size") = 64, py::arg("n_threads") = 0)
      .def(
          "encode",
          [](PyCVAE& s, const carray<float>& crops, int64_t batch_size, int n_threads) {
            auto x = crops_tensor(crops);
            std::pair<torch::Tensor, torch::Tensor> out;
            {
              py::gil_scoped_release release;
              out = cvae_encode(s.model, x, batch_size, n_threads);
            }
            return py::make_tuple(tensor_to_numpy(out.first), tensor_to_numpy(out.second));
          },
          py::arg("crops").noconvert(), py::arg("batch_size") = 64, py::arg("n_threads") = 0)
      .def(
          "eval_loss",
          [](PyCVAE& s, const carray<float>& crops, uint64_t seed, int64_t batch_size, int n_threads) {
            auto x = crops_tensor(crops);
            py::gil_scoped_release release;
            return cvae_eval_loss(s.model, x, seed, batch_size, n_threads);
          },
          py::arg("crops").noconvert(), py::arg("seed"), py::arg("batch_size") = 64, py::arg("n_threads") = 0)
      .def("state_dict", [](PyCVAE& s) { return state_to_dict(module_state(*s.model)); })
      .def(
          "save",
          [](PyCVAE& s, const std::string& path, const std::map<std::string, std::string>& metadata) {
            py::gil_scoped_release release;
            save_cvae(path, s.model, metadata);
          },
          py::arg("path"), py::arg("metadata"))
      .def_static(
          "load",
          [](const std::string& path, const std::string& sha256) {
            std::pair<CVAE, std::map<std::string, std::string>> loaded{CVAE(nullptr), {}};
            {
              py::gil_scoped_release release;
              loaded = load_cvae(path, sha256);
            }
            return py::make_tuple(PyCVAE{loaded.first}, loaded.second);
          },
          py::arg("path"), py::arg("sha256") = "");
  def_network_device(cvae, [](PyCVAE& s) -> torch::nn::Module& { return *s.model; });

  m.def(
      "anm_scores",
      [](const carray<float>& diff, float threshold, int64_t half_window, int n_threads) {
        require_ndim(diff, 3, "difference");
        auto s = shape_of(diff);
        py::array_t<float> signed_mean(s[0]), abs_mean(s[0]);
        py::array_t<int64_t> peaks(std::vector<py::ssize_t>{static_cast<py::ssize_t>(s[0]), 2});
        const float* d = diff.data();
        float* a = signed_mean.mutable_data();
        float* b = abs_mean.mutable_data();
        int64_t* p = peaks.mutable_data();
        {
          py::gil_scoped_release release;
          anm_scores(d, s[0], s[1], s[2], threshold, half_window, a, b, p, n_threads);
        }
        return py::make_tuple(signed_mean, abs_mean, peaks);
      },
      py::arg("difference").noconvert(), py::arg("threshold"), py::arg("half_window"), py::arg("n_threads") = 0);
  m.def(
      "local_energy_scores",
      [](const carray<float>& diff, int64_t window, int n_threads) {
        require_ndim(diff, 3, "difference");
        auto s = shape_of(diff);
        py::array_t<float> scores(s[0]);
        py::array_t<int64_t> peaks(std::vector<py::ssize_t>{static_cast<py::ssize_t>(s[0]), 2});
        const float* d = diff.data();
        float* o = scores.mutable_data();
        int64_t* p = peaks.mutable_data();
        {
          py::gil_scoped_release release;
          local_energy_scores(d, s[0], s[1], s[2], window, o, p, n_threads);
        }
        return py::make_tuple(scores, peaks);
      },
      py::arg("difference").noconvert(), py::arg("window"), py::arg("n_threads") = 0);
  m.def(
      "local_energy_maps",
      [](const carray<float>& diff, int64_t window, int n_threads) {
        require_ndim(diff, 3, "difference");
        auto s = shape_of(diff);
        py::array_t<float> out(std::vector<py::ssize_t>(s.begin(), s.end()));
        const float* d = diff.data();
        float* o = out.mutable_data();
        {
          py::gil_scoped_release release;
          local_energy_maps(d, s[0], s[1], s[2], window, o, n_threads);
        }
        return out;
      },
      py::arg("difference").noconvert(), py::arg("window"), py::arg("n_threads") = 0);
}

}  // namespace stemroi::bind
