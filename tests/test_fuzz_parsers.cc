// Fuzzing of the parsers that read files users hand over: manifests, IDX files, image headers
// and decoders, feature-cache entries, artifact records and checkpoints. A seeded random mutator
// (bit flips, interesting bytes, inserted, deleted and repeated ranges, truncation, splices of two
// corpus files) starts from the corpus in tests/fuzz/corpus/<parser>/ and feeds each parser for a
// bounded time. The oracle: no crash (the sanitizer build makes memory errors crashes), and every
// rejection is one status whose message names the file.
//
//   PROTOQUANT_FUZZ_SECONDS  time per parser (default 2)
//   PROTOQUANT_FUZZ_SEED     the first iteration's seed (default 1); iteration i uses seed + i
//
// Before each call the input is written to <work>/fuzz-<parser>-current, so an input that crashes
// the process is left there. tests/fuzz/README.md says how the corpus was made.
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>
#include <zlib.h>

#include "datasets/idx_file.h"
#include "datasets/image/decode.h"
#include "protoquant/artifact_store.h"
#include "protoquant/checkpoint.h"
#include "protoquant/feature_cache.h"
#include "protoquant/manifest.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;
using Bytes = std::string;

const fs::path kCorpus = fs::path(PQ_SOURCE_DIR) / "tests" / "fuzz" / "corpus";

std::vector<Bytes> corpus_of(const std::string& parser) {
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(kCorpus / parser)) files.push_back(entry.path());
  std::sort(files.begin(), files.end());
  std::vector<Bytes> seeds;
  for (const auto& file : files) seeds.push_back(testing::read_text(file));
  return seeds;
}

Bytes mutate(Bytes data, const std::vector<Bytes>& corpus, std::mt19937_64& rng) {
  auto below = [&](size_t n) { return n == 0 ? size_t{0} : static_cast<size_t>(rng() % n); };
  const int edits = 1 + static_cast<int>(below(4));
  for (int e = 0; e < edits; ++e) {
    switch (below(7)) {
      case 0:  // flip one bit
        if (!data.empty()) data[below(data.size())] ^= static_cast<char>(1 << below(8));
        break;
      case 1: {  // an interesting byte: boundaries of signed and unsigned fields
        static const char kInteresting[] = {0, 1, 0x7f, static_cast<char>(0x80), static_cast<char>(0xff), '=', '[', '"'};
        if (!data.empty()) data[below(data.size())] = kInteresting[below(sizeof kInteresting)];
        break;
      }
      case 2: {  // insert random bytes
        Bytes inserted(1 + below(16), '\0');
        for (char& c : inserted) c = static_cast<char>(rng());
        data.insert(below(data.size() + 1), inserted);
        break;
      }
      case 3:  // delete a range
        if (!data.empty()) {
          const size_t at = below(data.size());
          data.erase(at, 1 + below(std::min<size_t>(64, data.size() - at)));
        }
        break;
      case 4:  // repeat a range
        if (!data.empty()) {
          const size_t at = below(data.size());
          data.insert(below(data.size() + 1), data.substr(at, 1 + below(32)));
        }
        break;
      case 5:  // truncate
        data.resize(below(data.size() + 1));
        break;
      default: {  // splice: this file's head, another's tail
        const Bytes& other = corpus[below(corpus.size())];
        data = data.substr(0, below(data.size() + 1)) + other.substr(below(other.size() + 1));
      }
    }
  }
  return data;
}

double fuzz_seconds() {
  const char* value = std::getenv("PROTOQUANT_FUZZ_SECONDS");
  return value != nullptr ? std::atof(value) : 2.0;
}

// Feeds mutations of the corpus to `parse` until the time is up; `parse` returns the status of
// one input written to `file` (OK, or an error that must name the file).
void fuzz(const std::string& parser, const fs::path& file, const std::function<absl::Status(const Bytes&)>& parse) {
  const std::vector<Bytes> corpus = corpus_of(parser);
  ASSERT_FALSE(corpus.empty()) << "no corpus in " << (kCorpus / parser);
  const char* seed_text = std::getenv("PROTOQUANT_FUZZ_SEED");
  const uint64_t first_seed = seed_text != nullptr ? std::strtoull(seed_text, nullptr, 10) : 1;
  const fs::path current = fs::path(PQ_TEST_WORK_DIR) / ("fuzz-" + parser + "-current");
  fs::create_directories(current.parent_path());
  // Each seed file unchanged must parse: the corpus is valid input.
  for (const Bytes& seed : corpus) {
    const absl::Status status = parse(seed);
    EXPECT_TRUE(status.ok()) << parser << " corpus file rejected: " << status;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(fuzz_seconds());
  uint64_t iteration = 0, accepted = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    std::mt19937_64 rng(first_seed + iteration);
    const Bytes input = mutate(corpus[rng() % corpus.size()], corpus, rng);
    testing::write_text(current, input);
    const absl::Status status = parse(input);
    if (status.ok()) {
      ++accepted;
    } else {
      ASSERT_NE(status.message().find(file.filename().string()), std::string::npos)
          << parser << ", seed " << first_seed + iteration << ": the error does not name the file: " << status;
    }
    ++iteration;
  }
  fs::remove(current);
  ::testing::Test::RecordProperty("iterations", static_cast<int>(iteration));
  std::printf("%s: %llu inputs, %llu accepted\n", parser.c_str(), static_cast<unsigned long long>(iteration),
              static_cast<unsigned long long>(accepted));
  EXPECT_GT(iteration, 0u);
}

TEST(FuzzParsers, Manifests) {
  testing::TempDir dir;
  const fs::path file = dir / "fuzzed.toml";
  fs::create_directories(dir / "fm");
  fuzz("manifest", file, [&](const Bytes& input) {
    testing::write_text(file, input);
    return load_experiment(file, {}, testing::builtin_registry()).status();
  });
}

TEST(FuzzParsers, IdxFiles) {
  testing::TempDir dir;
  const fs::path file = dir / "fuzzed-idx3-ubyte";
  fuzz("idx", file, [&](const Bytes& input) {
    testing::write_text(file, input);
    return datasets::read_idx(file).status();
  });
}

TEST(FuzzParsers, GzipIdxFiles) {
  testing::TempDir dir;
  const fs::path file = dir / "fuzzed-idx3-ubyte.gz";
  const std::vector<Bytes> corpus = corpus_of("idx");
  fuzz("idx", file, [&](const Bytes& input) {
    const bool seed = std::find(corpus.begin(), corpus.end(), input) != corpus.end();
    // The mutated IDX bytes, gzip-compressed, and about every fourth one's compressed stream
    // mutated too (not the corpus files', which must read).
    gzFile out = gzopen(file.c_str(), "wb");
    gzwrite(out, input.data(), static_cast<unsigned>(input.size()));
    gzclose(out);
    if (!seed && input.size() % 4 == 0) {
      Bytes compressed = testing::read_text(file);
      if (compressed.size() > 20) compressed[10 + input.size() % (compressed.size() - 10)] ^= 0x20;
      testing::write_text(file, compressed);
    }
    return datasets::read_idx(file).status();
  });
}

TEST(FuzzParsers, ImageHeadersAndDecoders) {
  testing::TempDir dir;
  const fs::path file = dir / "fuzzed.png";
  fuzz("image", file, [&](const Bytes& input) -> absl::Status {
    testing::write_text(file, input);
    PQ_ASSIGN_OR_RETURN(const datasets::ImageHeader header, datasets::probe_file(file));
    const std::vector<uint8_t> bytes(input.begin(), input.end());
    for (const int reduction : {1, 2}) {
      const auto decoded = datasets::decode_bgr(bytes, header.format, reduction);
      if (!decoded.ok()) return absl::DataLossError(file.string() + ": " + std::string(decoded.status().message()));
      EXPECT_EQ(decoded->type(), CV_8UC3);
    }
    return absl::OkStatus();
  });
}

TEST(FuzzParsers, FeatureCacheEntries) {
  testing::TempDir dir;
  const FeatureCache cache(dir / "features", /*in_memory_limit=*/uint64_t{1} << 20);
  const fs::path file = cache.path_for("fuzz");
  fs::create_directories(file.parent_path());
  fuzz("feature_cache", file, [&](const Bytes& input) -> absl::Status {
    testing::write_text(file, input);
    const auto loaded = cache.load("fuzz");
    if (!loaded) {
      // Rejected entries are removed (and rebuilt by the caller), never used.
      EXPECT_FALSE(fs::exists(file));
      return absl::DataLossError(file.string() + ": rejected");
    }
    EXPECT_EQ(loaded->features.size(0), loaded->labels.size(0));
    return absl::OkStatus();
  });
}

TEST(FuzzParsers, ArtifactRecords) {
  testing::TempDir dir;
  const ArtifactStore store(dir / "store");
  const std::string key(64, 'a');
  const fs::path folder = store.folder("head", key);
  const fs::path file = folder / "artifact.json";
  fuzz("artifact_record", file, [&](const Bytes& input) -> absl::Status {
    fs::remove_all(dir / "store");
    fs::create_directories(folder);
    testing::write_text(folder / "head.pt", "the head's weights\n");
    testing::write_text(file, input);
    const auto found = store.find("head", key);
    if (!found) return absl::DataLossError(file.string() + ": rejected");
    EXPECT_TRUE(found->is_object());
    return absl::OkStatus();
  });
}

// Only the checksum and the trailer are fuzzed here. Archives with a valid checksum over mutated
// bytes were fuzzed too, and LibTorch 1.13's own reader crashed on one (SIGSEGV in
// torch::jit::ScriptTypeParser::parseClassConstant, from InputArchive::load_from): that is why a
// checkpoint is checksum-verified before LibTorch sees a byte of it (docs/RELIABILITY.md).
TEST(FuzzParsers, CheckpointsAreVerifiedBeforeLibTorchReadsThem) {
  testing::TempDir dir;
  const fs::path file = dir / "checkpoint.pt";
  auto model = std::make_shared<torch::nn::LinearImpl>(3, 2);
  const std::vector<Bytes> corpus = corpus_of("checkpoint");
  fuzz("checkpoint", file, [&](const Bytes& input) {
    testing::write_text(file, input);
    TrainingProgress progress;
    const absl::Status status = load_checkpoint(file, progress, {model}, nullptr);
    // A changed file never loads: the checksum says so first.
    if (std::find(corpus.begin(), corpus.end(), input) == corpus.end()) EXPECT_FALSE(status.ok());
    return status;
  });
}

}  // namespace
}  // namespace protoquant
