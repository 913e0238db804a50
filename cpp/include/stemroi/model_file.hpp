// The project's model file: safe to load (no pickle, nothing executed),
// versioned, self-describing. The layout is the safetensors layout, so other
// tools can read the tensors:
//   u64 little-endian N | N bytes of JSON header | raw little-endian tensor data
// The header maps tensor names to {"dtype", "shape", "data_offsets"} and holds
// "__metadata__" (string -> string): format, format_version, architecture,
// config (JSON), model_card (JSON), preprocessing (JSON), ...
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace stemroi {

enum class DType { F32, F64, F16, BF16, I64, I32, I16, I8, U8, BOOL };

const char* dtype_name(DType d);       // "F32", ... (safetensors spelling)
DType dtype_from_name(const std::string& name);  // throws IOError on unknown
size_t dtype_size(DType d);

struct NamedTensor {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;  // raw little-endian bytes, C order
  int64_t numel() const;
};

struct ModelFile {
  std::map<std::string, std::string> metadata;
  std::vector<NamedTensor> tensors;  // kept in file order
  const NamedTensor* find(const std::string& name) const;
};

constexpr const char* kModelFileFormat = "stemroi-model";
constexpr int kModelFileVersion = 1;

// Writes atomically: a temporary file in the same folder, fsync, rename.
// Adds metadata "format" and "format_version".
void write_model_file(const std::string& path, const ModelFile& file);

// Validates everything before trusting it (header length against file size,
// JSON, dtypes, shapes against byte extents, overlapping or out-of-range
// offsets, format name and version) and throws IOError naming the file and
// the problem.
ModelFile read_model_file(const std::string& path);

// Same checks on bytes already in memory (used by the file reader and fuzzing).
ModelFile parse_model_file(const std::vector<uint8_t>& bytes, const std::string& origin);

// Atomic write of any bytes (temporary file + fsync + rename).
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace stemroi
