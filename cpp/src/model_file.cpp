#include "stemroi/model_file.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "stemroi/errors.hpp"
#include "stemroi/sha256.hpp"

namespace stemroi {

namespace {
using json = nlohmann::json;
constexpr uint64_t kMaxHeader = 100ull << 20;  // 100 MiB, as safetensors

struct DTypeInfo {
  DType dtype;
  const char* name;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {DType::F32, "F32", 4}, {DType::F64, "F64", 8}, {DType::F16, "F16", 2},
    {DType::BF16, "BF16", 2}, {DType::I64, "I64", 8}, {DType::I32, "I32", 4},
    {DType::I16, "I16", 2}, {DType::I8, "I8", 1}, {DType::U8, "U8", 1},
    {DType::BOOL, "BOOL", 1}};

// The bytes header_sha256 is computed over: the header without the two hash
// fields, serialised compactly with sorted keys (nlohmann::json objects are
// sorted maps), UTF-8 as is.
std::string canonical_header(json header) {
  auto meta = header.find("__metadata__");
  if (meta != header.end() && meta->is_object()) {
    meta->erase(kTensorSha256Key);
    meta->erase(kHeaderSha256Key);
  }
  return header.dump();
}

// JSON integers only: get<int64_t>() of a JSON float (1e55, 2.5) is undefined
// behaviour or silently truncates, and an unsigned value past INT64_MAX wraps.
bool int64_list(const json& v, std::vector<int64_t>& out, bool non_negative) {
  if (!v.is_array()) return false;
  out.clear();
  for (const auto& e : v) {
    if (e.is_number_unsigned()) {
      if (e.get<uint64_t>() > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) return false;
    } else if (!e.is_number_integer() || (non_negative && e.get<int64_t>() < 0)) {
      return false;
    }
    out.push_back(e.get<int64_t>());
  }
  return true;
}

bool is_sha256_hex(const std::string& s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}
}  // namespace

const char* dtype_name(DType d) {
  for (const auto& i : kDTypes)
    if (i.dtype == d) return i.name;
  return "?";
}
size_t dtype_size(DType d) {
  for (const auto& i : kDTypes)
    if (i.dtype == d) return i.size;
  return 0;
}
DType dtype_from_name(const std::string& name) {
  for (const auto& i : kDTypes)
    if (name == i.name) return i.dtype;
  throw IOError(concat("unknown tensor dtype '", name, "'"));
}

int64_t NamedTensor::numel() const {
  int64_t n = 1;
  for (auto s : shape) n *= s;
  return n;
}

const NamedTensor* ModelFile::find(const std::string& name) const {
  for (const auto& t : tensors)
    if (t.name == name) return &t;
  return nullptr;
}

void write_file_atomic(const std::string& path, const std::string& bytes) {
  std::random_device rd;
  std::string tmp = concat(path, ".tmp-", getpid(), "-", rd());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) throw IOError(concat("cannot write '", path, "': ", std::strerror(errno)));
  size_t done = 0;
  while (done < bytes.size()) {
    ssize_t w = ::write(fd, bytes.data() + done, bytes.size() - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      ::unlink(tmp.c_str());
      throw IOError(concat("cannot write '", path, "': ", std::strerror(e)));
    }
    done += static_cast<size_t>(w);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw IOError(concat("cannot write '", path, "': ", std::strerror(e)));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    throw IOError(concat("cannot move the finished file into place at '", path, "': ", std::strerror(e)));
  }
}

void write_model_file(const std::string& path, const ModelFile& file) {
  json header = json::object();
  json meta = json::object();
  for (const auto& [k, v] : file.metadata)
    if (k != kTensorSha256Key && k != kHeaderSha256Key) meta[k] = v;
  meta["format"] = kModelFileFormat;
  meta["format_version"] = std::to_string(kModelFileVersion);
  header["__metadata__"] = meta;
  uint64_t offset = 0;
  for (const auto& t : file.tensors) {
    STEMROI_CHECK(!t.name.empty() && t.name != "__metadata__", "invalid tensor name '", t.name, "'");
    STEMROI_CHECK(!header.contains(t.name), "duplicate tensor name '", t.name, "'");
    for (auto s : t.shape) STEMROI_CHECK(s >= 0, "tensor '", t.name, "' has a negative dimension in shape ", shape_str(t.shape));
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype);
    STEMROI_CHECK(nbytes == t.data.size(), "tensor '", t.name, "': shape ", shape_str(t.shape), " of ",
                  dtype_name(t.dtype), " needs ", nbytes, " bytes, got ", t.data.size());
    header[t.name] = {{"dtype", dtype_name(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  Sha256 data_hash;
  for (const auto& t : file.tensors) data_hash.update(t.data.data(), t.data.size());
  header["__metadata__"][kHeaderSha256Key] = sha256_hex(canonical_header(header));
  header["__metadata__"][kTensorSha256Key] = data_hash.hexdigest();
  std::string h = header.dump();
  while (h.size() % 8) h.push_back(' ');  // keep tensor data 8-byte aligned
  std::string out;
  out.reserve(8 + h.size() + offset);
  uint64_t n = h.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  out += h;
  for (const auto& t : file.tensors) out.append(reinterpret_cast<const char*>(t.data.data()), t.data.size());
  write_file_atomic(path, out);
}

ModelFile parse_model_file(const std::vector<uint8_t>& bytes, const std::string& origin) {
  auto fail = [&](const std::string& what) -> IOError {
    return IOError(concat("'", origin, "' is not a valid stemroi model file: ", what));
  };
  if (bytes.size() < 8) throw fail(concat("file is ", bytes.size(), " bytes, shorter than the 8-byte header length"));
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  if (n > kMaxHeader) throw fail(concat("header length ", n, " exceeds the limit of ", kMaxHeader, " bytes"));
  if (8 + n > bytes.size()) throw fail(concat("header length ", n, " exceeds the file size ", bytes.size(), " (truncated file?)"));
  json header;
  try {
    header = json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const std::exception& e) {
    throw fail(concat("header is not valid JSON (", e.what(), ")"));
  }
  if (!header.is_object()) throw fail("header is not a JSON object");
  const uint64_t data_size = bytes.size() - 8 - n;
  const uint8_t* data = bytes.data() + 8 + n;

  ModelFile out;
  if (header.contains("__metadata__")) {
    const auto& meta = header["__metadata__"];
    if (!meta.is_object()) throw fail("__metadata__ is not an object");
    for (auto it = meta.begin(); it != meta.end(); ++it) {
      if (!it.value().is_string()) throw fail(concat("metadata value '", it.key(), "' is not a string"));
      out.metadata[it.key()] = it.value().get<std::string>();
    }
  }
  // Hashes first: a mismatch is the true diagnosis of a corrupted file, whatever
  // structural check the corruption would trip next. Present hashes are verified
  // whatever format_version says (a flipped version must not disable them).
  const auto stored_header = out.metadata.find(kHeaderSha256Key);
  const auto stored_tensor = out.metadata.find(kTensorSha256Key);
  const bool has_header = stored_header != out.metadata.end(), has_tensor = stored_tensor != out.metadata.end();
  if (has_header || has_tensor) {
    if (!has_header || !has_tensor)
      throw fail(concat("metadata has '", has_header ? kHeaderSha256Key : kTensorSha256Key, "' but not '",
                        has_header ? kTensorSha256Key : kHeaderSha256Key, "' (file corrupted or modified)"));
    std::string canonical;
    try {
      canonical = canonical_header(header);
    } catch (const std::exception& e) {
      throw fail(concat("header cannot be serialised (", e.what(), ")"));
    }
    const std::string header_hash = sha256_hex(canonical);
    if (header_hash != stored_header->second)
      throw IOError(concat("model file '", origin, "': header SHA-256 mismatch (file corrupted or modified): stored ",
                           stored_header->second, ", computed ", header_hash));
    const std::string tensor_hash = sha256_hex(data, data_size);
    if (tensor_hash != stored_tensor->second)
      throw IOError(concat("model file '", origin,
                           "': tensor data SHA-256 mismatch (file corrupted or modified): stored ",
                           stored_tensor->second, ", computed ", tensor_hash));
    out.hash_verified = true;
  }
  auto fmt = out.metadata.find("format");
  if (fmt == out.metadata.end() || fmt->second != kModelFileFormat)
    throw fail(concat("metadata 'format' is '", fmt == out.metadata.end() ? std::string("<missing>") : fmt->second,
                      "', expected '", kModelFileFormat, "'"));
  auto ver = out.metadata.find("format_version");
  int version = 0;
  try {
    version = ver == out.metadata.end() ? 0 : std::stoi(ver->second);
  } catch (...) {
    version = 0;
  }
  if (version < 1 || version > kModelFileVersion)
    throw fail(concat("format_version '", ver == out.metadata.end() ? std::string("<missing>") : ver->second,
                      "' is not supported (this stemroi reads versions 1..", kModelFileVersion, ")"));
  if (version >= 2 && !out.hash_verified)
    throw fail(concat("format_version ", version, " requires '", kTensorSha256Key, "' and '", kHeaderSha256Key,
                      "' (file corrupted or modified)"));

  struct Span { uint64_t b, e; std::string name; };
  std::vector<Span> spans;
  for (auto it = header.begin(); it != header.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const auto& v = it.value();
    if (!v.is_object() || !v.contains("dtype") || !v.contains("shape") || !v.contains("data_offsets"))
      throw fail(concat("tensor '", it.key(), "' needs dtype, shape and data_offsets"));
    NamedTensor t;
    t.name = it.key();
    if (!v["dtype"].is_string() || !int64_list(v["shape"], t.shape, /*non_negative=*/false))
      throw fail(concat("tensor '", t.name, "': dtype must be a string and shape a list of integers"));
    try {
      t.dtype = dtype_from_name(v["dtype"].get<std::string>());
    } catch (const IOError& e) {
      throw fail(concat("tensor '", t.name, "': ", e.what()));
    }
    uint64_t numel = 1;
    for (auto s : t.shape) {
      if (s < 0) throw fail(concat("tensor '", t.name, "' has negative dimension in shape ", shape_str(t.shape)));
      if (s > 0 && numel > std::numeric_limits<uint64_t>::max() / static_cast<uint64_t>(s))
        throw fail(concat("tensor '", t.name, "' shape ", shape_str(t.shape), " overflows"));
      numel *= static_cast<uint64_t>(s);
    }
    std::vector<int64_t> signed_off;
    if (!int64_list(v["data_offsets"], signed_off, /*non_negative=*/true) || signed_off.size() != 2)
      throw fail(concat("tensor '", t.name, "': data_offsets must be two non-negative integers"));
    const std::vector<uint64_t> off(signed_off.begin(), signed_off.end());
    if (off[0] > off[1]) throw fail(concat("tensor '", t.name, "': bad data_offsets"));
    if (off[1] > data_size)
      throw fail(concat("tensor '", t.name, "' ends at byte ", off[1], " but the data section has ", data_size,
                        " bytes (truncated file?)"));
    const uint64_t expect = numel * dtype_size(t.dtype);
    if (off[1] - off[0] != expect)
      throw fail(concat("tensor '", t.name, "': shape ", shape_str(t.shape), " of ", dtype_name(t.dtype), " needs ",
                        expect, " bytes, data_offsets give ", off[1] - off[0]));
    t.data.assign(data + off[0], data + off[1]);
    spans.push_back({off[0], off[1], t.name});
    out.tensors.push_back(std::move(t));
  }
  // Order tensors by offset (the writer's order) and refuse overlaps.
  std::vector<size_t> idx(spans.size());
  for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
  std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return spans[a].b < spans[b].b; });
  std::vector<NamedTensor> ordered;
  for (size_t k = 0; k < idx.size(); ++k) {
    if (k > 0 && spans[idx[k]].b < spans[idx[k - 1]].e)
      throw fail(concat("tensors '", spans[idx[k - 1]].name, "' and '", spans[idx[k]].name, "' overlap"));
    ordered.push_back(std::move(out.tensors[idx[k]]));
  }
  out.tensors = std::move(ordered);
  return out;
}

ModelFile read_model_file(const std::string& path, const std::string& expected_sha256) {
  std::string pinned = expected_sha256;
  for (auto& c : pinned) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!pinned.empty() && !is_sha256_hex(pinned))
    throw ValueError(concat("sha256 must be 64 hexadecimal digits, got '", expected_sha256, "' (", expected_sha256.size(),
                            " characters)"));
  // A folder opens as a stream whose size reads as 2**63 - 1: check the kind first.
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw IOError(concat("cannot open model file '", path, "': ", std::strerror(errno)));
  if (!S_ISREG(st.st_mode))
    throw IOError(concat("cannot read model file '", path, "': ",
                         S_ISDIR(st.st_mode) ? "it is a directory" : "not a regular file"));
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  if (!f) throw IOError(concat("cannot open model file '", path, "': ", std::strerror(errno)));
  const std::streamoff size = f.tellg();
  if (size < 0) throw IOError(concat("cannot read model file '", path, "': not a regular file"));
  std::vector<uint8_t> bytes(static_cast<size_t>(size));
  f.seekg(0);
  if (size > 0 && !f.read(reinterpret_cast<char*>(bytes.data()), size))
    throw IOError(concat("cannot read model file '", path, "': ", std::strerror(errno)));
  if (!pinned.empty()) {
    const std::string actual = sha256_hex(bytes.data(), bytes.size());
    if (actual != pinned)
      throw IOError(concat("model file '", path, "': SHA-256 ", actual, " does not match the pinned SHA-256 ", pinned,
                           " (wrong file, or corrupted or modified)"));
  }
  return parse_model_file(bytes, path);
}

}  // namespace stemroi
