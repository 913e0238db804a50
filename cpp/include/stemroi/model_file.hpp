// The project's model file: safe to load (no pickle, nothing executed),
// versioned, self-describing. The layout is the safetensors layout, so other
// tools can read the tensors:
//   u64 little-endian N | N bytes of JSON header | raw little-endian tensor data
// The header maps tensor names to {"dtype", "shape", "data_offsets"} and holds
// "__metadata__" (string -> string): format, format_version, architecture,
// config (JSON), model_card (JSON), preprocessing (JSON), ...
//
// Tamper evidence (format_version 2): "__metadata__" also holds
//   tensor_sha256  SHA-256 (lowercase hex) of the whole data region (every byte
//                  after the header)
//   header_sha256  SHA-256 of the canonical header: the header JSON with these
//                  two fields removed, keys sorted, no whitespace, UTF-8
//                  (Python: json.dumps(h, sort_keys=True, separators=(",", ":"),
//                  ensure_ascii=False)); it covers the metadata and every
//                  tensor's dtype, shape and offsets.
// Both are verified on every read. They detect corruption and edits by tools
// that do not recompute them; they are not a signature: to trust a file from
// elsewhere, pin the SHA-256 of the whole file (read_model_file's
// expected_sha256).
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
  // Set by the reader: the file carried tensor_sha256 and header_sha256 and both
  // matched. False for format_version 1 files, which carry no hash.
  bool hash_verified = false;
  const NamedTensor* find(const std::string& name) const;
};

constexpr const char* kModelFileFormat = "stemroi-model";
constexpr int kModelFileVersion = 2;
constexpr const char* kTensorSha256Key = "tensor_sha256";
constexpr const char* kHeaderSha256Key = "header_sha256";

// Writes atomically: a temporary file in the same folder, fsync, rename.
// Adds metadata "format", "format_version", "tensor_sha256" and
// "header_sha256" (replacing any such keys in file.metadata).
void write_model_file(const std::string& path, const ModelFile& file);

// Validates everything before trusting it (header length against file size,
// JSON, dtypes, shapes against byte extents, overlapping or out-of-range
// offsets, format name and version, the two SHA-256 fields) and throws IOError
// naming the file and the problem. With expected_sha256 (64 hex digits, any
// case) the SHA-256 of the whole file must equal it, or IOError names both
// hashes; a malformed expected_sha256 is a ValueError.
ModelFile read_model_file(const std::string& path, const std::string& expected_sha256 = "");

// Same checks on bytes already in memory (used by the file reader and fuzzing).
// `origin` names the bytes in error messages.
ModelFile parse_model_file(const std::vector<uint8_t>& bytes, const std::string& origin);

// Atomic write of any bytes (temporary file + fsync + rename).
void write_file_atomic(const std::string& path, const std::string& bytes);

}  // namespace stemroi
