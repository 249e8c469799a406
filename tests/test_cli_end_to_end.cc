// The `protoquant` executable as a user runs it: a small real run on a slice of Fashion-MNIST,
// and the error paths (one clear line, non-zero exit, no results.json).
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "protoquant/plugin.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

const std::string kQuickstart = std::string(PQ_SOURCE_DIR) + "/experiments/quickstart.toml";

// A slice small enough for CI: 2000 training and 2000 test images, a few epochs per stage.
std::string small_run(const fs::path& out, int seed = 0) {
  return "run " + kQuickstart + " --out " + out.string() +
         " --set dataset.limit=2000 --set backbone.width=16 --set quantizer.codes=64"
         " --set stages.blackbox.epochs=3 --set stages.codebook.epochs=1 --set stages.head.epochs=2"
         " --set stages.head.lr=0.02"  // two short head epochs on the slice need a larger step
         " --set experiment.threads=2 --set experiment.seed=" + std::to_string(seed);
}

TEST(CliEndToEnd, QuickstartSliceTrainsEvaluatesAndRecords) {
  ASSERT_FALSE(testing::fashion_mnist_root().empty()) << "install dataset-fashion-mnist (tools/install-deps.sh)";
  testing::TempDir dir;
  const auto first = testing::run_cli(small_run(dir / "a"));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto results = nlohmann::json::parse(testing::read_text(dir / "a" / "results.json"));
  const double accuracy = results["metrics"]["accuracy"]["accuracy"].get<double>();
  const double blackbox = results["metrics"]["accuracy"]["blackbox_accuracy"].get<double>();
  EXPECT_GT(blackbox, 0.6);  // 10 classes: chance is 0.1
  EXPECT_GT(accuracy, 0.5);
  EXPECT_LE(accuracy, 1.0);
  for (const char* stage : {"blackbox", "features", "codebook", "head", "metric.accuracy", "evaluate"}) {
    EXPECT_GE(results["stages"][stage]["seconds"].get<double>(), 0.0) << stage;
  }
  for (const char* stage : {"blackbox", "codebook", "head", "metric.accuracy"}) {
    EXPECT_EQ(results["stages"][stage]["reused"], false) << stage;
    EXPECT_EQ(results["stages"][stage]["key"], results["artifacts"][stage]) << stage;
    EXPECT_EQ(results["artifacts"][stage].get<std::string>().size(), 64u) << stage;
  }
  EXPECT_EQ(results["manifest_hash"].get<std::string>().size(), 64u);
  EXPECT_FALSE(results["run_id"].get<std::string>().empty());
  EXPECT_FALSE(results["toolkit"]["commit"].get<std::string>().empty());
  EXPECT_EQ(results["manifest"]["quantizer"]["codes"], 64);
  EXPECT_EQ(results["manifest"]["quantizer"]["metric"], "cosine");
  EXPECT_EQ(results["metrics"]["codebook"]["codes_per_codebook"], 64);
  EXPECT_GT(results["metrics"]["codebook"]["quantized_blackbox_accuracy"].get<double>(), 0.1);
  EXPECT_GE(results["metrics"]["model_size"]["global_size"].get<double>(), 1.0);
  for (const char* part : {"backbone.pt", "quantizer.pt", "head.pt"}) {
    EXPECT_TRUE(fs::exists(dir / "a" / "model" / part)) << part;
  }

  // Same seed, same threads, a store of its own (nothing to reuse): the same numbers.
  const auto second = testing::run_cli(small_run(dir / "b") + " --store " + (dir / "store-b").string());
  ASSERT_EQ(second.exit_code, 0) << second.output;
  const auto again = nlohmann::json::parse(testing::read_text(dir / "b" / "results.json"));
  EXPECT_EQ(again["metrics"]["accuracy"], results["metrics"]["accuracy"]);
  EXPECT_EQ(again["artifacts"], results["artifacts"]);  // keys: the same inputs, the same key
  EXPECT_EQ(again["stages"]["blackbox"]["reused"], false);

  // Run again against the first run's store: every stage is reused, nothing is trained.
  const auto third = testing::run_cli(small_run(dir / "c"));
  ASSERT_EQ(third.exit_code, 0) << third.output;
  const auto reused = nlohmann::json::parse(testing::read_text(dir / "c" / "results.json"));
  for (const char* stage : {"blackbox", "codebook", "head", "metric.accuracy"}) {
    EXPECT_EQ(reused["stages"][stage]["reused"], true) << stage;
  }
  EXPECT_FALSE(reused["stages"]["features"].contains("splits")) << "no feature pass when nothing is computed";
  // The report's figures (accuracy against k, gallery, explanations) are reused too: no pass at
  // all, not even for the report, and its files are placed in this run's folder.
  EXPECT_NE(third.output.find("[report] reused"), std::string::npos) << third.output;
  EXPECT_EQ(third.output.find("steps"), std::string::npos) << third.output;
  EXPECT_EQ(reused["stages"]["report"]["reused"], true);
  EXPECT_EQ(reused["artifacts"]["report"], results["artifacts"]["report"]);
  EXPECT_TRUE(fs::exists(dir / "c" / "report.html"));
  EXPECT_EQ(testing::read_text(dir / "c" / "explanations" / "test-0.png"),
            testing::read_text(dir / "a" / "explanations" / "test-0.png"));
  EXPECT_EQ(third.output.find("epoch"), std::string::npos) << third.output;
  EXPECT_EQ(reused["metrics"], results["metrics"]);
  EXPECT_NE(reused["run_id"], results["run_id"]);
}

TEST(CliEndToEnd, ManifestErrorsExitNonZeroWithPositionsAndWriteNothing) {
  testing::TempDir dir;
  std::string text = testing::read_text(kQuickstart);
  text.replace(text.find("codes = 256"), 11, "codes = -4");
  testing::write_text(dir / "bad.toml", text);
  const auto result = testing::run_cli("run " + (dir / "bad.toml").string() + " --out " + (dir / "run").string());
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.output.find("error: " + (dir / "bad.toml").string() + ":"), std::string::npos) << result.output;
  EXPECT_NE(result.output.find("quantizer.codes = -4 is below the minimum 1"), std::string::npos) << result.output;
  EXPECT_FALSE(fs::exists(dir / "run"));
  const auto validate = testing::run_cli("validate " + (dir / "bad.toml").string());
  EXPECT_EQ(validate.exit_code, 1);
}

TEST(CliEndToEnd, DataErrorsNameTheFileAndLeaveNoResults) {
  testing::TempDir dir;
  const auto missing = testing::run_cli("run " + kQuickstart + " --out " + (dir / "run1").string() +
                                        " --set dataset.root=" + (dir / "absent").string());
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_NE(missing.output.find((dir / "absent").string() + ": dataset folder not found"), std::string::npos)
      << missing.output;
  EXPECT_FALSE(fs::exists(dir / "run1" / "results.json"));

  fs::create_directories(dir / "corrupt");
  testing::write_text(dir / "corrupt" / "train-images-idx3-ubyte", std::string("\x1f\x8b\x08\x00garbage", 11));
  const auto corrupt = testing::run_cli("run " + kQuickstart + " --out " + (dir / "run2").string() +
                                        " --set dataset.root=" + (dir / "corrupt").string());
  EXPECT_EQ(corrupt.exit_code, 1);
  EXPECT_NE(corrupt.output.find("train-images-idx3-ubyte: corrupt or truncated gzip stream"), std::string::npos) << corrupt.output;
  EXPECT_FALSE(fs::exists(dir / "run2" / "results.json"));
}

// `cd DIR && protoquant validate m.toml` with a relative data path: a bare manifest name once
// aborted every command (std::filesystem::absolute("") throws).
TEST(CliEndToEnd, ABareManifestNameInItsFolderWorks) {
  testing::TempDir dir;
  ASSERT_FALSE(testing::fashion_mnist_root().empty());
  fs::create_directory_symlink(testing::fashion_mnist_root(), dir / "fm");
  std::string text = testing::read_text(kQuickstart);
  const size_t root = text.find("root = ");
  ASSERT_NE(root, std::string::npos);
  text.replace(root, text.find('\n', root) - root, "root = \"fm\"");
  testing::write_text(dir / "m.toml", text);
  const fs::path before = fs::current_path();
  fs::current_path(dir.path());
  const auto validate = testing::run_cli("validate m.toml");
  const auto data = testing::run_cli("data m.toml");
  fs::current_path(before);
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
  EXPECT_EQ(data.exit_code, 0) << data.output;
  EXPECT_EQ(data.output.find("terminate"), std::string::npos) << data.output;
}

// Out-of-range numbers on the command line say what is wanted, not the double's whole range.
TEST(CliEndToEnd, OutOfRangeNumbersArePlainOneLiners) {
  const auto zero = testing::run_cli("edit some-run --limit-k 0");
  EXPECT_NE(zero.exit_code, 0);
  EXPECT_NE(zero.output.find("must be above 0 (got 0)"), std::string::npos) << zero.output;
  EXPECT_EQ(zero.output.find("179769"), std::string::npos) << zero.output;
  const auto negative = testing::run_cli("explain some-run --test-index=-3");
  EXPECT_NE(negative.exit_code, 0);
  EXPECT_NE(negative.output.find("must be 0 or more (got -3)"), std::string::npos) << negative.output;
}

// Output locations that cannot work are said before any stage trains, not after all of them.
TEST(CliEndToEnd, BadOutputLocationsFailBeforeTheWork) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "early");
  fs::create_directories(dir / "a-folder.db");
  const auto folder_db = testing::run_cli("run " + manifest.string() + " --out " + (dir / "run").string() + " --store " +
                                          (dir / "store").string() + " --db " + (dir / "a-folder.db").string());
  EXPECT_EQ(folder_db.exit_code, 1);
  EXPECT_NE(folder_db.output.find("a-folder.db: is a folder, not a results store"), std::string::npos) << folder_db.output;
  EXPECT_EQ(folder_db.output.find("[blackbox]"), std::string::npos) << folder_db.output;
  EXPECT_FALSE(fs::exists(dir / "store"));

  // More jobs than cores: refused by --dry-run already, as by the run itself.
  testing::write_text(dir / "seeds.toml", "extends = \"early.toml\"\n[sweep]\nseeds = [0, 1]\n");
  const std::string jobs = std::to_string(std::thread::hardware_concurrency() + 1);
  const auto dry = testing::run_cli("run " + (dir / "seeds.toml").string() + " --jobs " + jobs + " --dry-run");
  EXPECT_EQ(dry.exit_code, 1);
  EXPECT_NE(dry.output.find("is more than the"), std::string::npos) << dry.output;
}

// A run finishes whole (report, results.json, the results store's row) or leaves no results.json.
TEST(CliEndToEnd, ARunWhoseReportCannotBeWrittenLeavesNoResults) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "whole");
  fs::create_directories(dir / "run" / "report.html" / "blocked");  // a folder where the page goes
  const std::string run = "run " + manifest.string() + " --out " + (dir / "run").string() + " --db " +
                          (dir / "results.db").string();
  const auto failed = testing::run_cli(run);
  EXPECT_EQ(failed.exit_code, 1);
  EXPECT_NE(failed.output.find("report.html"), std::string::npos) << failed.output;
  EXPECT_FALSE(fs::exists(dir / "run" / "results.json"));
  const auto none = testing::run_cli("runs --db " + (dir / "results.db").string());
  EXPECT_EQ(none.output.find("whole"), std::string::npos) << none.output;

  fs::remove_all(dir / "run" / "report.html");
  const auto again = testing::run_cli(run + " --resume");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_TRUE(fs::exists(dir / "run" / "results.json"));
  const auto one = testing::run_cli("runs --db " + (dir / "results.db").string());
  EXPECT_NE(one.output.find("whole"), std::string::npos) << one.output;
}

TEST(CliEndToEnd, PluginsDescribeValidate) {
  const auto plugins = testing::run_cli("plugins");
  ASSERT_EQ(plugins.exit_code, 0) << plugins.output;
  for (const char* name : {"small_cnn", "vq", "protoquant", "idx", "accuracy"}) {
    EXPECT_NE(plugins.output.find(name), std::string::npos) << name;
  }
  const auto describe = testing::run_cli("describe vq");
  ASSERT_EQ(describe.exit_code, 0);
  EXPECT_NE(describe.output.find("codes"), std::string::npos);
  EXPECT_NE(describe.output.find("cosine|euclidean"), std::string::npos);
  const auto unknown = testing::run_cli("describe vqq");
  EXPECT_EQ(unknown.exit_code, 1);
  EXPECT_NE(unknown.output.find("did you mean 'vq'"), std::string::npos);
  const auto validate = testing::run_cli("validate " + kQuickstart);
  EXPECT_EQ(validate.exit_code, 0) << validate.output;
  const auto abi = testing::run_cli("--plugin " + std::string(PQ_TEST_PLUGIN_DIR) + "/wrong_abi.so plugins");
  EXPECT_EQ(abi.exit_code, 1);
  const std::string version = std::to_string(kPluginAbiVersion + 41);
  EXPECT_NE(abi.output.find("wrong_abi.so: plugin ABI version " + version), std::string::npos) << abi.output;
}

TEST(CliEndToEnd, EveryShippedManifestValidates) {
  int checked = 0;
  for (const auto& entry : fs::recursive_directory_iterator(std::string(PQ_SOURCE_DIR) + "/experiments")) {
    if (entry.path().extension() != ".toml") continue;
    // A *_base.toml is no experiment (it lacks a head): its children validate it.
    const std::string stem = entry.path().stem().string();
    if (stem.size() > 5 && stem.compare(stem.size() - 5, 5, "_base") == 0) continue;
    const auto result = testing::run_cli("validate " + entry.path().string());
    EXPECT_EQ(result.exit_code, 0) << entry.path() << "\n" << result.output;
    ++checked;
  }
  EXPECT_GE(checked, 9);  // quickstart, synthparts and its free-prototype twin, the ablation, two paper templates, four backbones
}

}  // namespace
}  // namespace protoquant
