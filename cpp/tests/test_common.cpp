#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <stdexcept>

#include "stemroi/errors.hpp"
#include "stemroi/filters.hpp"
#include "stemroi/model_file.hpp"
#include "stemroi/parallel.hpp"

using namespace stemroi;

TEST(Errors, CheckMessageCarriesValues) {
  try {
    int k = 0;
    STEMROI_CHECK(k > 1, "n_clusters must be >= 2, got ", k);
    FAIL();
  } catch (const ValueError& e) {
    EXPECT_STREQ(e.what(), "n_clusters must be >= 2, got 0");
  }
  EXPECT_EQ(shape_str({3, 64, 64}), "(3, 64, 64)");
  EXPECT_EQ(shape_str({5}), "(5,)");
}

TEST(Parallel, ExceptionInsideOpenMPIsRethrownAfterRegion) {
  OmpExceptionCapture capture;
#pragma omp parallel for num_threads(2)
  for (int i = 0; i < 100; ++i) {
    capture.run([&] {
      if (i == 57) throw ValueError("bad item 57");
    });
  }
  EXPECT_TRUE(capture.failed());
  EXPECT_THROW(capture.rethrow(), ValueError);
}

TEST(Parallel, ResolveThreads) {
  EXPECT_EQ(resolve_n_threads(3), 3);
  EXPECT_GE(resolve_n_threads(0), 1);
}

TEST(Filters, ReflectIndexIsHalfSampleSymmetric) {
  // d c b a | a b c d | d c b a
  EXPECT_EQ(reflect_index(-1, 4), 0);
  EXPECT_EQ(reflect_index(-4, 4), 3);
  EXPECT_EQ(reflect_index(4, 4), 3);
  EXPECT_EQ(reflect_index(7, 4), 0);
  EXPECT_EQ(reflect_index(8, 4), 0);
  EXPECT_EQ(reflect_index(-5, 4), 3);
  EXPECT_EQ(reflect_index(5, 1), 0);
}

TEST(Filters, GaussianPreservesMassOnConstantImage) {
  std::vector<float> img(5 * 7, 2.0f), out(img.size());
  gaussian_filter_batch<float>(img.data(), out.data(), 1, 5, 7, 1.7);
  for (float v : out) EXPECT_NEAR(v, 2.0f, 1e-6);
}

TEST(ModelFile, RoundTripAndTruncation) {
  ModelFile f;
  f.metadata["architecture"] = "toy";
  NamedTensor t;
  t.name = "w";
  t.dtype = DType::F32;
  t.shape = {2, 2};
  float vals[4] = {1, 2, 3, 4};
  t.data.assign(reinterpret_cast<uint8_t*>(vals), reinterpret_cast<uint8_t*>(vals) + 16);
  f.tensors.push_back(t);
  std::string path = testing::TempDir() + "/stemroi_model_file_test.bin";
  write_model_file(path, f);
  ModelFile g = read_model_file(path);
  ASSERT_EQ(g.tensors.size(), 1u);
  EXPECT_EQ(g.tensors[0].data, t.data);
  EXPECT_EQ(g.metadata.at("architecture"), "toy");
  EXPECT_EQ(g.metadata.at("format"), "stemroi-model");

  std::ifstream in(path, std::ios::binary);
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  bytes.resize(bytes.size() - 3);
  EXPECT_THROW(parse_model_file(bytes, "cut"), IOError);
  std::remove(path.c_str());
}

TEST(ModelFile, WriterRejectsInconsistentTensor) {
  ModelFile f;
  NamedTensor t;
  t.name = "w";
  t.shape = {3};
  t.data.resize(8);
  f.tensors.push_back(t);
  EXPECT_THROW(write_model_file(testing::TempDir() + "/x.bin", f), ValueError);
}
