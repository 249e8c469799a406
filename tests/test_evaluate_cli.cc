// `protoquant evaluate` and the free-prototype baseline through the CLI, on a tiny synthparts
// slice of the shipped experiments: a finished run gains metrics without training anything, bad
// --metric options and unfiled stages give one-line errors, and the free_prototypes twin runs
// without a codebook stage on the same black box, reused from the store.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <fstream>
#include <regex>

#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

using testing::tiny_manifest;

using testing::results_of;

// A NumPy .npy file read back by hand from its documented format (magic, header dict, data).
torch::Tensor read_npy(const fs::path& path) {
  const std::string bytes = testing::read_text(path);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8)) << path;
  const size_t length = static_cast<unsigned char>(bytes[8]) | (static_cast<unsigned char>(bytes[9]) << 8);
  const std::string header = bytes.substr(10, length);
  EXPECT_EQ((10 + length) % 64, 0u) << path;
  std::smatch descr, shape;
  EXPECT_TRUE(std::regex_search(header, descr, std::regex("'descr': '([<|][a-z][0-9])'"))) << header;
  EXPECT_TRUE(std::regex_search(header, shape, std::regex("'shape': \\(([0-9, ]*)\\)"))) << header;
  std::vector<int64_t> sizes;
  std::stringstream dims(shape[1].str());
  for (std::string d; std::getline(dims, d, ',');) {
    if (d.find_first_not_of(' ') != std::string::npos) sizes.push_back(std::stoll(d));
  }
  const std::map<std::string, torch::Dtype> types = {{"<f4", torch::kFloat32}, {"<i8", torch::kInt64},
                                                     {"|u1", torch::kUInt8}, {"|b1", torch::kBool}};
  const torch::Dtype dtype = types.at(descr[1].str());
  std::string data = bytes.substr(10 + length);
  return torch::from_blob(data.data(), sizes, dtype).clone();
}

TEST(EvaluateCli, AddsMetricsToAFinishedRunWithoutTraining) {
  testing::TempDir dir;
  const fs::path manifest = tiny_manifest(dir, "synthparts.toml", "tiny");
  const fs::path run = dir / "runs" / "tiny";
  const auto trained = testing::run_cli("run " + manifest.string() + " --out " + run.string());
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const json before = results_of(run);
  ASSERT_FALSE(before["metrics"].contains("purity"));

  const auto evaluated = testing::run_cli("evaluate " + run.string() +
                                          " --metric purity:patch_size=8,top_k=5 --metric consistency:half_size=6"
                                          " --metric spatial_misalignment:iterations=2");
  ASSERT_EQ(evaluated.exit_code, 0) << evaluated.output;
  const json after = results_of(run);
  for (const char* stage : {"blackbox", "codebook", "head", "metric.accuracy", "metric.grounding"}) {
    EXPECT_TRUE(after["stages"][stage]["reused"].get<bool>()) << stage;
  }
  for (const char* stage : {"metric.purity", "metric.consistency", "metric.spatial_misalignment"}) {
    EXPECT_FALSE(after["stages"][stage]["reused"].get<bool>()) << stage;
    EXPECT_TRUE(fs::exists(run / "stages" / (std::string(stage) + ".json"))) << stage;
  }
  EXPECT_EQ(after["metric_settings"]["purity"]["top_k"], 5);
  EXPECT_EQ(after["metric_settings"]["purity"]["patch_size"], 8);
  EXPECT_EQ(after["metrics"]["accuracy"], before["metrics"]["accuracy"]);
  EXPECT_GE(after["metrics"]["purity"]["purity"].get<double>(), 0.0);
  EXPECT_LE(after["metrics"]["purity"]["purity"].get<double>(), 1.0);
  // The results store has the new values, and the leaderboard counts the run once.
  const auto board = testing::run_cli("leaderboard --db " + (dir / "runs" / "results.db").string() +
                                      " --metrics purity,accuracy --format csv");
  ASSERT_EQ(board.exit_code, 0) << board.output;
  EXPECT_NE(board.output.find("purity"), std::string::npos) << board.output;
  EXPECT_EQ(board.output.find("(n=2)"), std::string::npos) << board.output;

  // --dump: the inputs of every metric, from which other code recomputes the numbers. Here:
  // consistency, with OpenCV's resize, a row-major argmax and the inclusive 13-px box by hand.
  const fs::path dump = dir / "dump";
  const auto dumped =
      testing::run_cli("evaluate " + run.string() + " --metric stability:half_size=6 --dump " + dump.string());
  ASSERT_EQ(dumped.exit_code, 0) << dumped.output;
  const json index = json::parse(testing::read_text(dump / "dump.json"));
  for (const char* name : {"similarity", "labels", "parts", "class_weights", "stability/noise", "purity/top_images",
                           "spatial_misalignment/protected", "spatial_misalignment/map_after"}) {
    ASSERT_TRUE(index["arrays"].contains(name)) << name << "\n" << index.dump(1);
    EXPECT_FALSE(index["arrays"][name]["description"].get<std::string>().empty()) << name;
  }
  const torch::Tensor similarity = read_npy(dump / "similarity.npy");
  const torch::Tensor labels = read_npy(dump / "labels.npy");
  const torch::Tensor parts = read_npy(dump / "parts.npy");
  const torch::Tensor weights = read_npy(dump / "class_weights.npy");
  EXPECT_EQ(similarity.size(0), 32);  // 4 classes x 8 test images
  EXPECT_EQ(index["arrays"]["similarity"]["shape"], json(similarity.sizes().vec()));
  const int64_t n = similarity.size(0), p = similarity.size(1), k = parts.size(1), half = 6, size = 32;
  int64_t consistent = 0, counted = 0;
  for (int64_t q = 0; q < p; ++q) {
    std::vector<double> hits(static_cast<size_t>(k), 0), visible(static_cast<size_t>(k), 0);
    bool any_class = false;
    for (int64_t i = 0; i < n; ++i) {
      if (weights[labels[i].item<int64_t>()][q].item<float>() <= 0.1F) continue;
      any_class = true;
      cv::Mat map(static_cast<int>(similarity.size(2)), static_cast<int>(similarity.size(3)), CV_32F,
                  similarity[i][q].contiguous().data_ptr<float>()), up;
      cv::resize(map, up, cv::Size(size, size), 0, 0, cv::INTER_CUBIC);
      int py = 0, px = 0;
      for (int y = 0; y < size; ++y)
        for (int x = 0; x < size; ++x)
          if (up.at<float>(y, x) > up.at<float>(py, px)) py = y, px = x;
      for (int64_t j = 0; j < k; ++j) {
        if (parts[i][j][2].item<float>() < 0.5F) continue;
        visible[static_cast<size_t>(j)] += 1;
        const auto kx = static_cast<int64_t>(parts[i][j][0].item<float>()), ky = static_cast<int64_t>(parts[i][j][1].item<float>());
        if (ky >= std::max<int64_t>(0, py - half) && ky <= std::min(size, py + half) && kx >= std::max<int64_t>(0, px - half) &&
            kx <= std::min(size, px + half)) {
          hits[static_cast<size_t>(j)] += 1;
        }
      }
    }
    if (!any_class) continue;
    ++counted;
    bool ok = false;
    for (int64_t j = 0; j < k; ++j) ok |= hits[static_cast<size_t>(j)] / std::max(1.0, visible[static_cast<size_t>(j)]) >= 0.8;
    consistent += ok ? 1 : 0;
  }
  EXPECT_EQ(after["metrics"]["consistency"]["evaluated_prototypes"], counted);
  EXPECT_NEAR(after["metrics"]["consistency"]["consistency"].get<double>(), 100.0 * consistent / counted, 1e-9);

  // Evaluating again computes nothing.
  const auto again = testing::run_cli("evaluate " + run.string() + " --metric purity:patch_size=8,top_k=5");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_TRUE(results_of(run)["stages"]["metric.purity"]["reused"].get<bool>());

  // Bad options: one line each, exit 1, the run untouched.
  const std::string results_text = testing::read_text(run / "results.json");
  const auto typo = testing::run_cli("evaluate " + run.string() + " --metric purity:patch_sise=8");
  EXPECT_EQ(typo.exit_code, 1);
  EXPECT_NE(typo.output.find("--metric purity:patch_sise=8: metric 'purity' has no parameter 'patch_sise' (did you "
                             "mean 'patch_size'?)"),
            std::string::npos)
      << typo.output;
  const auto range = testing::run_cli("evaluate " + run.string() + " --metric purity:top_k=0");
  EXPECT_EQ(range.exit_code, 1);
  EXPECT_NE(range.output.find("--metric purity:top_k=0: top_k:"), std::string::npos) << range.output;
  const auto unknown = testing::run_cli("evaluate " + run.string() + " --metric purty");
  EXPECT_NE(unknown.output.find("no metric 'purty' (did you mean 'purity'?)"), std::string::npos) << unknown.output;
  EXPECT_EQ(testing::read_text(run / "results.json"), results_text);
  const auto nowhere = testing::run_cli("evaluate " + (dir / "nothing").string());
  EXPECT_EQ(nowhere.exit_code, 1);
  EXPECT_NE(nowhere.output.find("not a finished run"), std::string::npos) << nowhere.output;

  // Without its store, a run cannot be evaluated: evaluate trains nothing.
  fs::remove_all(dir / "runs" / "store");
  const auto lost = testing::run_cli("evaluate " + run.string() + " --metric sizes");
  EXPECT_EQ(lost.exit_code, 1);
  EXPECT_NE(lost.output.find("stage 'blackbox'"), std::string::npos) << lost.output;
  EXPECT_NE(lost.output.find("is not in the store"), std::string::npos) << lost.output;
}

// --dump naming a file fails before the pass: results.json and the report stay as they were.
TEST(EvaluateCli, ABadDumpLocationFailsBeforeAnythingIsRewritten) {
  testing::TempDir dir;
  const fs::path manifest = tiny_manifest(dir, "synthparts.toml", "dumped");
  const fs::path run = dir / "runs" / "dumped";
  ASSERT_EQ(testing::run_cli("run " + manifest.string() + " --out " + run.string()).exit_code, 0);
  const auto results_time = fs::last_write_time(run / "results.json");
  const auto report_time = fs::last_write_time(run / "report.html");
  testing::write_text(dir / "a-file", "x");
  const auto bad = testing::run_cli("evaluate " + run.string() + " --metric purity --dump " + (dir / "a-file").string());
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("a-file: --dump needs a folder"), std::string::npos) << bad.output;
  EXPECT_EQ(fs::last_write_time(run / "results.json"), results_time);
  EXPECT_EQ(fs::last_write_time(run / "report.html"), report_time);
}

TEST(EvaluateCli, FreePrototypesRunWithoutACodebookOnTheSameBlackBox) {
  testing::TempDir dir;
  const fs::path protoquant = tiny_manifest(dir, "synthparts.toml", "tiny");
  const fs::path free = tiny_manifest(dir, "synthparts_free_prototypes.toml", "tiny_free");
  const auto first = testing::run_cli("run " + protoquant.string() + " --out " + (dir / "runs" / "pq").string());
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto second = testing::run_cli("run " + free.string() + " --out " + (dir / "runs" / "free").string());
  ASSERT_EQ(second.exit_code, 0) << second.output;
  const json pq = results_of(dir / "runs" / "pq"), baseline = results_of(dir / "runs" / "free");
  EXPECT_TRUE(baseline["stages"]["blackbox"]["reused"].get<bool>());
  EXPECT_EQ(baseline["artifacts"]["blackbox"], pq["artifacts"]["blackbox"]);
  EXPECT_FALSE(baseline["artifacts"].contains("codebook"));
  EXPECT_FALSE(baseline["metrics"].contains("codebook"));
  EXPECT_FALSE(baseline["manifest"].contains("quantizer"));
  EXPECT_EQ(baseline["manifest"]["head"]["type"], "free_prototypes");
  EXPECT_EQ(baseline["metrics"]["grounding"]["prototypes"], 128);
  // Codewords start as real feature vectors (k-means): they are nearer the data than free ones.
  EXPECT_GT(pq["metrics"]["grounding"]["grounding"].get<double>(),
            baseline["metrics"]["grounding"]["grounding"].get<double>());

  // The protoquant head without a quantizer says what is missing (after reusing the black box).
  const fs::path broken = tiny_manifest(dir, "synthparts_base.toml", "broken");
  testing::write_text(broken, testing::read_text(broken) + "\n[head]\ntype = \"protoquant\"\n");
  const auto refused = testing::run_cli("run " + broken.string() + " --out " + (dir / "runs" / "broken").string());
  EXPECT_EQ(refused.exit_code, 1) << refused.output;
  EXPECT_NE(refused.output.find("the protoquant head needs a [quantizer]"), std::string::npos) << refused.output;
}

}  // namespace
}  // namespace protoquant
