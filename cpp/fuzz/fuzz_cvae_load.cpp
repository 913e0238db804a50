// libFuzzer target: the whole path from model-file bytes to a LibTorch module,
// as load_cvae takes it: parse, CVAE config JSON from the metadata, tensors to
// LibTorch (torch_io), names and shapes matched against the module. Contract:
// IOError or ValueError for a bad file, nothing else.
#include <torch/torch.h>

#include <cstddef>
#include <cstdint>
#include <vector>

#include "stemroi/cvae.hpp"
#include "stemroi/errors.hpp"
#include "stemroi/model_file.hpp"
#include "stemroi/torch_io.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  torch::set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  try {
    stemroi::ModelFile f = stemroi::parse_model_file(bytes, "fuzz");
    stemroi::StateDict state = stemroi::state_from_model_file(f);
    auto cfg = f.metadata.find("config");
    if (cfg == f.metadata.end()) return 0;
    stemroi::CVAE model(stemroi::CVAEConfig::from_json(cfg->second), 0);
    stemroi::load_module_state(*model, state, /*strict=*/true, "fuzz");
  } catch (const stemroi::IOError&) {
  } catch (const stemroi::ValueError&) {
  }
  return 0;
}
