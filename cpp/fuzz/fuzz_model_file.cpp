// libFuzzer target: the model-file parser on arbitrary bytes. Contract: it
// returns a ModelFile whose tensors are consistent with their shapes, or
// throws IOError; anything else (another exception, a crash, a sanitizer
// report, a leak) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <vector>

#include "stemroi/errors.hpp"
#include "stemroi/model_file.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  try {
    stemroi::ModelFile f = stemroi::parse_model_file(bytes, "fuzz");
    for (const auto& t : f.tensors)
      if (static_cast<uint64_t>(t.numel()) * stemroi::dtype_size(t.dtype) != t.data.size()) std::abort();
    for (size_t i = 1; i < f.tensors.size(); ++i)
      if (f.tensors[i].name == f.tensors[i - 1].name) std::abort();
  } catch (const stemroi::IOError&) {
  }
  return 0;
}
