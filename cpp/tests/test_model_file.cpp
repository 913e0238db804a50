// SHA-256 against the FIPS 180-4 / NIST example vectors, and the tamper
// evidence of model files: every single-byte change is refused on read.
#include <gtest/gtest.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "stemroi/errors.hpp"
#include "stemroi/model_file.hpp"
#include "stemroi/sha256.hpp"

using namespace stemroi;

namespace {
// A model file's bytes: the header's length (8 bytes, little-endian), the header, the payload.
// Sized once and filled with memcpy: GCC 12 warns -Wstringop-overread (a false positive) on
// vector::insert of a string's bytes at -O3.
std::vector<uint8_t> framed(const std::string& header, const std::vector<uint8_t>& payload) {
  std::vector<uint8_t> bytes(8 + header.size() + payload.size());
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<uint8_t>((header.size() >> (8 * i)) & 0xff);
  if (!header.empty()) std::memcpy(bytes.data() + 8, header.data(), header.size());
  if (!payload.empty()) std::memcpy(bytes.data() + 8 + header.size(), payload.data(), payload.size());
  return bytes;
}
}  // namespace

TEST(Sha256, NistVectors) {
  EXPECT_EQ(sha256_hex(std::string("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex(std::string("")), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(sha256_hex(std::string("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq")),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  EXPECT_EQ(sha256_hex(std::string("abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqr"
                                   "lmnopqrsmnopqrstnopqrstu")),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  EXPECT_EQ(sha256_hex(std::string(1000000, 'a')), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

TEST(Sha256, IncrementalEqualsOneShotAtEverySplit) {
  std::string msg;
  for (int i = 0; i < 200; ++i) msg.push_back(static_cast<char>(i * 37 + 11));
  const std::string whole = sha256_hex(msg);
  for (size_t a = 0; a <= msg.size(); a += 7) {
    for (size_t b = a; b <= msg.size(); b += 13) {
      Sha256 h;
      h.update(msg.data(), a);
      h.update(msg.data() + a, b - a);
      h.update(msg.data() + b, msg.size() - b);
      ASSERT_EQ(h.hexdigest(), whole) << "split at " << a << ", " << b;
    }
  }
  // An empty update with a null pointer (an empty tensor's data()) is a no-op
  // (UBSan flagged the memcpy from null).
  Sha256 h;
  h.update(nullptr, 0);
  h.update("abc", 3);
  h.update(nullptr, 0);
  EXPECT_EQ(h.hexdigest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  // Lengths around the 55/56/64-byte padding boundaries (values from Python's hashlib).
  EXPECT_EQ(sha256_hex(std::string(55, 'x')), "d5e285683cd4efc02d021a5c62014694958901005d6f71e89e0989fac77e4072");
  EXPECT_EQ(sha256_hex(std::string(56, 'x')), "04c26261370ee7541549d16dee320c723e3fd14671e66a099afe0a377c16888e");
  EXPECT_EQ(sha256_hex(std::string(63, 'x')), "75220b47218278e656f2013bb8f0c455a25eaf01e86c64924e9d48d89776d6f2");
  EXPECT_EQ(sha256_hex(std::string(64, 'x')), "7ce100971f64e7001e8fe5a51973ecdfe1ced42befe7ee8d5fd6219506b5393c");
  EXPECT_EQ(sha256_hex(std::string(65, 'x')), "9537c5fdf120482f7d58d25e9ed583f52c02b4e304ea814db1633ad565aed7e9");
}

namespace {
ModelFile small_model() {
  ModelFile f;
  f.metadata["architecture"] = "toy";
  f.metadata["config"] = "{\"k\": 3}";
  NamedTensor w;
  w.name = "w";
  w.dtype = DType::F32;
  w.shape = {2, 3};
  for (int i = 0; i < 24; ++i) w.data.push_back(static_cast<uint8_t>(i * 11 + 1));
  NamedTensor b;
  b.name = "b";
  b.dtype = DType::I64;
  b.shape = {2};
  b.data.assign(16, 7);
  f.tensors = {w, b};
  return f;
}

std::vector<uint8_t> file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

uint64_t header_length(const std::vector<uint8_t>& bytes) {
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(bytes[i]) << (8 * i);
  return n;
}
}  // namespace

TEST(ModelFile, WriterStoresBothHashesAndReaderVerifiesThem) {
  const std::string path = testing::TempDir() + "/stemroi_hash_test.bin";
  write_model_file(path, small_model());
  ModelFile g = read_model_file(path);
  EXPECT_TRUE(g.hash_verified);
  EXPECT_EQ(g.metadata.at("format_version"), "2");
  const auto bytes = file_bytes(path);
  const uint64_t n = header_length(bytes);
  EXPECT_EQ(g.metadata.at("tensor_sha256"), sha256_hex(bytes.data() + 8 + n, bytes.size() - 8 - n));
  EXPECT_EQ(g.metadata.at("header_sha256").size(), 64u);
  // Re-writing what was read replaces the stored hashes instead of keeping stale ones.
  write_model_file(path, g);
  EXPECT_TRUE(read_model_file(path).hash_verified);
  std::remove(path.c_str());
}

TEST(ModelFile, EverySingleByteChangeIsRefused) {
  const std::string path = testing::TempDir() + "/stemroi_flip_test.bin";
  write_model_file(path, small_model());
  const auto bytes = file_bytes(path);
  std::remove(path.c_str());
  const uint64_t n = header_length(bytes);
  int data_mismatch = 0, header_mismatch = 0;
  for (size_t i = 0; i < bytes.size(); ++i) {
    for (uint8_t mask : {uint8_t(0x01), uint8_t(0x80), uint8_t(0xff)}) {
      auto bad = bytes;
      bad[i] ^= mask;
      try {
        parse_model_file(bad, "flipped");
        ADD_FAILURE() << "byte " << i << " ^ " << int(mask) << " was not detected";
      } catch (const IOError& e) {
        const std::string what = e.what();
        data_mismatch += what.find("tensor data SHA-256 mismatch") != std::string::npos;
        header_mismatch += what.find("header SHA-256 mismatch") != std::string::npos;
        if (i >= 8 + n) {
          EXPECT_NE(what.find("model file 'flipped': tensor data SHA-256 mismatch (file corrupted or modified)"),
                    std::string::npos) << what;
        }
      }
    }
  }
  EXPECT_GE(data_mismatch, 3 * static_cast<int>(bytes.size() - 8 - n));  // and flips of the stored hash itself
  EXPECT_GT(header_mismatch, 0);
}

TEST(ModelFile, PinnedHash) {
  const std::string path = testing::TempDir() + "/stemroi_pin_test.bin";
  write_model_file(path, small_model());
  const auto bytes = file_bytes(path);
  const std::string actual = sha256_hex(bytes.data(), bytes.size());
  std::string upper = actual;
  for (auto& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_EQ(read_model_file(path, upper).tensors.size(), 2u);
  const std::string other(64, 'a');
  try {
    read_model_file(path, other);
    ADD_FAILURE() << "a wrong pinned hash was accepted";
  } catch (const IOError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(actual), std::string::npos) << what;
    EXPECT_NE(what.find(other), std::string::npos) << what;
  }
  EXPECT_THROW(read_model_file(path, "abc"), ValueError);
  std::remove(path.c_str());
}

TEST(ModelFile, VersionOneFileWithoutHashLoadsUnverified) {
  const std::string header = R"({"__metadata__":{"format":"stemroi-model","format_version":"1"},)"
                             R"("w":{"dtype":"U8","shape":[3],"data_offsets":[0,3]}})";
  const std::vector<uint8_t> bytes = framed(header, {1, 2, 3});
  ModelFile f = parse_model_file(bytes, "v1");
  EXPECT_FALSE(f.hash_verified);
  ASSERT_EQ(f.tensors.size(), 1u);
  EXPECT_EQ(f.tensors[0].data, (std::vector<uint8_t>{1, 2, 3}));
  // The same file claiming version 2 without hashes is refused.
  std::string v2 = header;
  v2.replace(v2.find("\"1\""), 3, "\"2\"");
  EXPECT_THROW(parse_model_file(framed(v2, {1, 2, 3}), "v2"), IOError);
}

TEST(ModelFile, NonIntegerShapesAndOffsetsAreRefused) {
  // 1.1e55 reached an undefined float-to-int64 conversion inside nlohmann::json
  // (found by fuzz_model_file under UBSan); 2.5 was silently truncated to 2.
  for (const std::string bad : {R"("shape":[1.1e55],"data_offsets":[0,1])", R"("shape":[2.5],"data_offsets":[0,2])",
                                R"("shape":[18446744073709551615],"data_offsets":[0,1])",
                                R"("shape":[1],"data_offsets":[0,1e3])", R"("shape":[1],"data_offsets":[-1,0])"}) {
    const std::string header = R"({"__metadata__":{"format":"stemroi-model","format_version":"1"},)"
                               R"("w":{"dtype":"U8",)" + bad + "}}";
    EXPECT_THROW(parse_model_file(framed(header, std::vector<uint8_t>(4, 0)), "bad"), IOError) << bad;
  }
}
