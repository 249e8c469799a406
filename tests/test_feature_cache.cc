// The feature cache: round trip, sharing, and every way an entry can be unusable (corrupted,
// truncated, another key's) being detected and rebuilt rather than used.
#include <cstring>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "protoquant/feature_cache.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

struct Entry {
  torch::Tensor features = torch::randn({5, 6, 3, 2}).contiguous(torch::MemoryFormat::ChannelsLast);
  torch::Tensor labels = torch::arange(5, torch::kInt64) * 3;
};

// Every test runs with entries read into memory (the default for those that fit) and used in
// place through the file mapping (the path of entries too large for memory).
class FeatureCacheModes : public ::testing::TestWithParam<bool> {
 protected:
  FeatureCache make_cache(const fs::path& dir) const {
    return GetParam() ? FeatureCache(dir) : FeatureCache(dir, /*in_memory_limit=*/0);
  }
};
INSTANTIATE_TEST_SUITE_P(FeatureCache, FeatureCacheModes, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "InMemory" : "Mapped"; });

TEST_P(FeatureCacheModes, StoresAndLoadsEveryDtypeExactly) {
  testing::TempDir dir;
  const FeatureCache cache = make_cache(dir.path());
  Entry entry;
  for (const char* name : {"fp32", "fp16", "bf16"}) {
    const auto stored = entry.features.to(feature_dtype(name));
    const std::string key = std::string("key-") + name;
    EXPECT_FALSE(cache.load(key).has_value());
    ASSERT_TRUE(cache.store(key, stored, entry.labels).ok());
    const auto loaded = cache.load(key);
    ASSERT_TRUE(loaded.has_value()) << name;
    EXPECT_EQ(loaded->features.scalar_type(), stored.scalar_type());
    EXPECT_EQ(loaded->features.sizes(), stored.sizes());
    EXPECT_TRUE(torch::equal(loaded->features, stored)) << name;
    EXPECT_TRUE(torch::equal(loaded->labels, entry.labels));
  }
  // Different keys never share a file.
  EXPECT_NE(cache.path_for("key-fp16"), cache.path_for("key-bf16"));
}

void flip_byte(const fs::path& path, int64_t offset_from_end) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekg(offset_from_end, std::ios::end);
  char c = 0;
  file.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  file.seekp(offset_from_end, std::ios::end);
  file.write(&c, 1);
}

TEST_P(FeatureCacheModes, CorruptedTruncatedAndForeignEntriesAreRejectedAndRemoved) {
  testing::TempDir dir;
  const FeatureCache cache = make_cache(dir.path());
  Entry entry;
  ASSERT_TRUE(cache.store("a", entry.features, entry.labels).ok());
  const fs::path file = cache.path_for("a");

  flip_byte(file, -7);  // one feature byte
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(cache.load("a").has_value());
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("fails its checksum"), std::string::npos);
  EXPECT_FALSE(fs::exists(file));  // removed, so the next run rebuilds it

  ASSERT_TRUE(cache.store("a", entry.features, entry.labels).ok());
  fs::resize_file(file, fs::file_size(file) - 10);
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(cache.load("a").has_value());
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("truncated"), std::string::npos);

  ASSERT_TRUE(cache.store("a", entry.features, entry.labels).ok());
  fs::copy_file(file, cache.path_for("b"));  // an entry under another key's name
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(cache.load("b").has_value());
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("another key"), std::string::npos);
  EXPECT_TRUE(cache.load("a").has_value());

  // A well-formed header that lacks fields (the checksum covers the payload only).
  const std::string header = R"({"version":1,"key":"d","shape":"x"})";
  std::string bytes = "PQFCACHE";
  const uint64_t length = header.size();
  bytes.append(reinterpret_cast<const char*>(&length), sizeof length);
  bytes += header;
  testing::write_text(cache.path_for("d"), bytes);
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(cache.load("d").has_value());
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("unreadable header"), std::string::npos);

  testing::write_text(cache.path_for("c"), "not a cache file at all");
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(cache.load("c").has_value());
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("not a feature cache file"), std::string::npos);
}

// A stored entry's file: its bytes and its parsed header (after the 8-byte magic and the 8-byte
// header length).
struct EntryFile {
  explicit EntryFile(const fs::path& path) {
    std::ifstream in(path, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
    uint64_t length = 0;
    std::memcpy(&length, bytes.data() + 8, sizeof length);
    header = nlohmann::json::parse(bytes.substr(16, length));
  }
  // Magic, length and the header's text, zero-padded to the 64-byte aligned start of a payload.
  std::string forged_prefix(const std::string& text) const {
    const uint64_t length = text.size();
    std::string prefix = bytes.substr(0, 8);
    prefix.append(reinterpret_cast<const char*>(&length), sizeof length);
    prefix += text;
    prefix.resize((prefix.size() + 63) / 64 * 64, '\0');
    return prefix;
  }
  std::string bytes;
  nlohmann::json header;
};

void expect_rejected_as_wrong_size(const FeatureCache& cache, const std::string& key) {
  ::testing::internal::CaptureStderr();
  EXPECT_FALSE(cache.load(key).has_value());
  EXPECT_NE(::testing::internal::GetCapturedStderr().find("wrong size"), std::string::npos);
}

// A forged header whose shape multiplies out, modulo 2^64, to the payload's real size: rejected,
// not mapped as a tensor of 2^62 elements over 760 bytes.
TEST_P(FeatureCacheModes, AShapeThatWrapsAroundTheSizeIsRejected) {
  testing::TempDir dir;
  const FeatureCache cache = make_cache(dir.path());
  Entry entry;  // 5 x 6 x 3 x 2 fp32: 720 feature bytes and 40 label bytes
  ASSERT_TRUE(cache.store("w", entry.features, entry.labels).ok());
  EntryFile file(cache.path_for("w"));
  const uint64_t payload = file.header["payload_bytes"].get<uint64_t>();
  ASSERT_EQ(payload, 760u);
  // 5 * 4 * (2^60 + 9) * 1 elements of 4 bytes = 5 * 2^64 + 720 bytes, which is 720 modulo 2^64.
  file.header["shape"] = {5, 4, (int64_t{1} << 60) + 9, 1};
  testing::write_text(cache.path_for("w"),
                      file.forged_prefix(file.header.dump()) + file.bytes.substr(file.bytes.size() - payload));
  expect_rejected_as_wrong_size(cache, "w");
}

// A forged header whose payload size plus its start wraps around to a file that ends inside the
// header's padding: rejected, not checksummed past the end of the mapping.
TEST_P(FeatureCacheModes, APayloadThatWrapsPastTheFileIsRejected) {
  testing::TempDir dir;
  const FeatureCache cache = make_cache(dir.path());
  Entry entry;
  ASSERT_TRUE(cache.store("p", entry.features, entry.labels).ok());
  EntryFile file(cache.path_for("p"));
  // One image of 2^62 - 3 fp32 values and its label: 2^64 - 4 bytes, so start + payload wraps to
  // start - 4, which the file's size is made to be.
  file.header["shape"] = {1, (int64_t{1} << 62) - 3, 1, 1};
  file.header["payload_bytes"] = ~uint64_t{0} - 3;
  std::string text = file.header.dump();
  while ((16 + text.size()) % 64 == 0 || (16 + text.size()) % 64 > 60) text += ' ';  // padding of 4+ bytes
  std::string forged = file.forged_prefix(text);
  forged.resize(forged.size() - 4);
  testing::write_text(cache.path_for("p"), forged);
  expect_rejected_as_wrong_size(cache, "p");
}

TEST(FeatureCache, WeightsChecksumChangesWithAnyWeight) {
  torch::manual_seed(0);
  torch::nn::Linear a(3, 2);
  const uint32_t before = weights_checksum(*a);
  EXPECT_EQ(before, weights_checksum(*a));
  {
    torch::NoGradGuard no_grad;
    a->bias[1] += 1e-3;
  }
  EXPECT_NE(before, weights_checksum(*a));
}

}  // namespace
}  // namespace protoquant
