#include <zlib.h>

#include <gtest/gtest.h>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include "datasets/idx_file.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

std::string idx_bytes(const std::vector<int32_t>& dims, const std::vector<uint8_t>& payload, uint8_t type = 0x08) {
  std::string out = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (int32_t d : dims) {
    for (int shift : {24, 16, 8, 0}) out.push_back(static_cast<char>((d >> shift) & 0xff));
  }
  out.append(payload.begin(), payload.end());
  return out;
}

void write_gz(const fs::path& path, const std::string& bytes) {
  gzFile f = gzopen(path.c_str(), "wb");
  gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
  gzclose(f);
}

std::vector<uint8_t> iota_bytes(size_t n) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i * 7 % 251);
  return v;
}

TEST(IdxReader, ReadsRawAndGzipIdentically) {
  testing::TempDir dir;
  const auto payload = iota_bytes(3 * 4 * 5);
  testing::write_text(dir / "raw-idx3-ubyte", idx_bytes({3, 4, 5}, payload));
  write_gz(dir / "gz-idx3-ubyte.gz", idx_bytes({3, 4, 5}, payload));
  for (const char* name : {"raw-idx3-ubyte", "gz-idx3-ubyte.gz"}) {
    auto tensor = datasets::read_idx(dir / name);
    ASSERT_TRUE(tensor.ok()) << tensor.status();
    EXPECT_EQ(tensor->sizes(), (std::vector<int64_t>{3, 4, 5}));
    // Element (i, j, k) is payload[i*20 + j*5 + k]: row-major, as the format specifies.
    EXPECT_EQ((*tensor)[2][3][4].item<int>(), payload[2 * 20 + 3 * 5 + 4]);
    EXPECT_EQ((*tensor)[1][0][2].item<int>(), payload[1 * 20 + 2]);
  }
}

TEST(IdxReader, CorruptFilesNameTheFileAndTheProblem) {
  testing::TempDir dir;
  struct Case { std::string name, bytes, fragment; };
  const auto payload = iota_bytes(12);
  std::string bad_magic = idx_bytes({12}, payload);
  bad_magic[0] = 0x1f;
  const std::vector<Case> cases = {
      {"magic", bad_magic, "not an IDX file (magic 1f00"},
      {"truncated", idx_bytes({4, 3}, iota_bytes(10)), "truncated: expected 12 bytes of data for 4x3, found 10"},
      {"header", std::string("\0\0\x08\x02\0\0", 6), "header ends inside the dimensions"},
      {"empty", "", "no IDX header"},
      {"trailing", idx_bytes({12}, iota_bytes(13)), "trailing bytes"},
      {"float", idx_bytes({12}, payload, 0x0d), "element type 0x0d is not supported"},
  };
  for (const auto& c : cases) {
    const fs::path path = dir / c.name;
    testing::write_text(path, c.bytes);
    auto result = datasets::read_idx(path);
    ASSERT_FALSE(result.ok()) << c.name;
    const std::string message(result.status().message());
    EXPECT_EQ(message.rfind(path.string() + ": ", 0), 0u) << message;
    EXPECT_NE(message.find(c.fragment), std::string::npos) << c.name << ": " << message;
  }
  // A gzip stream cut in the middle is reported, not read as a short file silently.
  std::string gz;
  {
    write_gz(dir / "whole.gz", idx_bytes({1000}, iota_bytes(1000)));
    gz = testing::read_text(dir / "whole.gz");
  }
  testing::write_text(dir / "cut.gz", gz.substr(0, gz.size() / 2));
  auto cut = datasets::read_idx(dir / "cut.gz");
  ASSERT_FALSE(cut.ok());
  EXPECT_NE(cut.status().message().find("cut.gz: corrupt or truncated gzip stream"), std::string::npos) << cut.status();
  EXPECT_FALSE(datasets::read_idx(dir / "absent").ok());

  // A header declaring far more than the file can hold is refused before anything is allocated.
  write_gz(dir / "bomb.gz", idx_bytes({10, 65535, 65535}, iota_bytes(100)));
  auto bomb = datasets::read_idx(dir / "bomb.gz");
  ASSERT_FALSE(bomb.ok());
  EXPECT_NE(bomb.status().message().find("bomb.gz: the header declares 10x65535x65535 (42948362250 bytes), more than "
                                         "a gzip file of"),
            std::string::npos)
      << bomb.status();
  testing::write_text(dir / "bomb-raw", idx_bytes({10, 65535, 65535}, iota_bytes(100)));
  auto raw = datasets::read_idx(dir / "bomb-raw");
  ASSERT_FALSE(raw.ok());
  EXPECT_NE(raw.status().message().find("bomb-raw: truncated: expected 42948362250 bytes"), std::string::npos)
      << raw.status();
}

class IdxDatasetTest : public ::testing::Test {
 protected:
  void write_split(const std::string& prefix, int n, const std::vector<uint8_t>& labels) {
    write_gz(dir_ / (prefix + "-images-idx3-ubyte.gz"), idx_bytes({n, 2, 2}, iota_bytes(static_cast<size_t>(n * 4))));
    write_gz(dir_ / (prefix + "-labels-idx1-ubyte.gz"), idx_bytes({static_cast<int32_t>(labels.size())}, labels));
  }
  absl::StatusOr<std::shared_ptr<Dataset>> open() {
    Registry& registry = testing::builtin_registry();
    Params params = Params::defaults(registry.datasets.find("idx")->schema);
    params.set("root", dir_.path().string());
    return registry.datasets.build("idx", params, {});
  }
  testing::TempDir dir_;
};

TEST_F(IdxDatasetTest, ClassCountComesFromTheLabelsAndBatchesAreNormalised) {
  write_split("train", 4, {0, 1, 4, 2});
  write_split("t10k", 2, {3, 0});
  auto dataset = open();
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  EXPECT_EQ((*dataset)->info().num_classes, 5);
  EXPECT_EQ((*dataset)->size("train"), 4);
  EXPECT_EQ((*dataset)->size("test"), 2);
  auto batch = (*dataset)->get_batch("train", torch::arange(4, torch::kInt64));
  ASSERT_TRUE(batch.ok());
  EXPECT_EQ(batch->images.sizes(), (std::vector<int64_t>{4, 1, 2, 2}));
  // Standardised with the training split's own statistics: mean 0, std 1 over the split.
  EXPECT_NEAR(batch->images.mean().item<double>(), 0.0, 1e-5);
  EXPECT_NEAR(batch->images.std().item<double>(), 1.0, 1e-5);
  EXPECT_EQ(batch->labels[2].item<int64_t>(), 4);
  EXPECT_FALSE((*dataset)->get_batch("train", torch::tensor({7}, torch::kInt64)).ok());
}

TEST_F(IdxDatasetTest, MissingFolderAndMismatchedCountsAreErrors) {
  Registry& registry = testing::builtin_registry();
  Params params = Params::defaults(registry.datasets.find("idx")->schema);
  params.set("root", (dir_ / "nowhere").string());
  auto missing = registry.datasets.build("idx", params, {});
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("nowhere: dataset folder not found"), std::string::npos);

  write_split("train", 4, {0, 1, 2});  // 3 labels for 4 images
  write_split("t10k", 2, {0, 1});
  auto mismatch = open();
  ASSERT_FALSE(mismatch.ok());
  EXPECT_NE(mismatch.status().message().find("3 labels for 4 images"), std::string::npos) << mismatch.status();
}

TEST_F(IdxDatasetTest, AnImageFileBecomesASampleNormalisedLikeTheBatches) {
  write_split("train", 4, {0, 1, 4, 2});
  write_split("t10k", 2, {3, 0});
  auto dataset = open();
  ASSERT_TRUE(dataset.ok()) << dataset.status();
  // Training image 3 written as a 2 x 2 grey PNG reads back as exactly that training sample.
  auto batch = (*dataset)->get_batch("train", torch::tensor({3}, torch::kInt64));
  ASSERT_TRUE(batch.ok());
  const std::vector<uint8_t> pixels = iota_bytes(16);
  cv::Mat grey(2, 2, CV_8U);
  for (int i = 0; i < 4; ++i) grey.data[i] = pixels[static_cast<size_t>(12 + i)];
  ASSERT_TRUE(cv::imwrite((dir_ / "three.png").string(), grey));
  auto loaded = (*dataset)->load_image(dir_ / "three.png");
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->images.sizes(), batch->images.sizes());
  EXPECT_TRUE(torch::allclose(loaded->images, batch->images, 1e-5, 1e-5)) << loaded->images << batch->images;
  EXPECT_EQ(loaded->labels.item<int64_t>(), -1);
  // A bigger picture is resized to the images' size; a missing or undecodable file names itself.
  ASSERT_TRUE(cv::imwrite((dir_ / "big.png").string(), cv::Mat(20, 30, CV_8U, cv::Scalar(7))));
  auto big = (*dataset)->load_image(dir_ / "big.png");
  ASSERT_TRUE(big.ok()) << big.status();
  EXPECT_EQ(big->images.sizes(), batch->images.sizes());
  const auto missing = (*dataset)->load_image(dir_ / "gone.png");
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("gone.png"), std::string::npos) << missing.status();
  testing::write_text(dir_ / "text.png", "not a picture");
  const auto text = (*dataset)->load_image(dir_ / "text.png");
  ASSERT_FALSE(text.ok());
  EXPECT_NE(text.status().message().find("text.png"), std::string::npos) << text.status();
}

}  // namespace
}  // namespace protoquant
