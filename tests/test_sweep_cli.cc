// Sweeps through the CLI on a small slice of Fashion-MNIST: the plan, stage reuse counted across
// members and reruns, a killed member that resumes, --jobs, and one results-store row per
// finished run.
#include <cstdlib>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "protoquant/results_store.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

// The quickstart, cut down to seconds; `sweep` is the [sweep] part of the member manifest.
void write_sweep(const fs::path& file, const std::string& sweep) {
  testing::write_text(file, "extends = \"" + std::string(PQ_SOURCE_DIR) + "/experiments/quickstart.toml\"\n" +
                                R"(
[experiment]
name = "slice"
threads = 2
[dataset]
limit = 600
[backbone]
width = 8
[quantizer]
codes = 16
[stages.blackbox]
epochs = 1
[stages.codebook]
epochs = 1
[stages.head]
epochs = 2
)" + sweep);
}

using testing::results_of;

// How many members computed (did not reuse) each stage.
std::map<std::string, int> computed_counts(const fs::path& sweep_dir, const std::vector<std::string>& members) {
  std::map<std::string, int> counts;
  for (const auto& member : members) {
    const auto results = results_of(sweep_dir / member);
    for (const char* stage : {"blackbox", "codebook", "head", "metric.accuracy"}) {
      if (results["stages"][stage]["reused"] == false) ++counts[stage];
    }
  }
  return counts;
}

std::vector<std::string> member_folders(const fs::path& sweep_dir) {
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(sweep_dir)) {
    if (fs::exists(entry.path() / "results.json")) names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

size_t rows_in(const fs::path& db) {
  auto store = ResultsStore::open(db);
  EXPECT_TRUE(store.ok()) << store.status();
  auto runs = store->runs();
  EXPECT_TRUE(runs.ok()) << runs.status();
  return runs->size();
}

TEST(SweepCli, MembersShareUpstreamStagesAndAFinishedSweepRerunsNothing) {
  ASSERT_FALSE(testing::fashion_mnist_root().empty()) << "install dataset-fashion-mnist (tools/install-deps.sh)";
  testing::TempDir dir;
  write_sweep(dir / "sweep.toml", "[sweep.grid]\n\"head.temperature\" = [0.1, 0.2]\n\"stages.head.lr\" = [0.005, 0.01]\n");
  const std::string run = "run " + (dir / "sweep.toml").string() + " --out " + (dir / "out").string();

  // The plan alone: four members, nothing run, nothing written.
  const auto plan = testing::run_cli(run + " --dry-run");
  ASSERT_EQ(plan.exit_code, 0) << plan.output;
  EXPECT_NE(plan.output.find("plan: 4 members"), std::string::npos) << plan.output;
  EXPECT_NE(plan.output.find("blackbox shared"), std::string::npos) << plan.output;
  EXPECT_NE(plan.output.find("plan: 10 stages to compute"), std::string::npos) << plan.output;  // 1 + 1 + 4 + 4
  EXPECT_FALSE(fs::exists(dir / "out" / "results.db"));

  const auto first = testing::run_cli(run);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto members = member_folders(dir / "out");
  ASSERT_EQ(members.size(), 4u);
  // The temperature and the head's lr enter the head only: stage 0 and the codebook once.
  const auto counts = computed_counts(dir / "out", members);
  EXPECT_EQ(counts.at("blackbox"), 1);
  EXPECT_EQ(counts.at("codebook"), 1);
  EXPECT_EQ(counts.at("head"), 4);
  EXPECT_EQ(counts.at("metric.accuracy"), 4);
  EXPECT_EQ(rows_in(dir / "out" / "results.db"), 4u);
  std::set<std::string> head_keys;
  for (const auto& m : members) head_keys.insert(results_of(dir / "out" / m)["artifacts"]["head"].get<std::string>());
  EXPECT_EQ(head_keys.size(), 4u);

  // Again: every stage of every member reused, nothing trained; four more rows.
  const auto again = testing::run_cli(run);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("plan: 0 stages to compute"), std::string::npos) << again.output;
  EXPECT_EQ(again.output.find("epoch"), std::string::npos) << again.output;
  EXPECT_TRUE(computed_counts(dir / "out", members).empty());
  EXPECT_EQ(rows_in(dir / "out" / "results.db"), 8u);

  // --force head: every member's head is recomputed (once per key), nothing upstream.
  const auto forced = testing::run_cli(run + " --force head");
  ASSERT_EQ(forced.exit_code, 0) << forced.output;
  const auto forced_counts = computed_counts(dir / "out", members);
  EXPECT_EQ(forced_counts.count("blackbox"), 0u);
  EXPECT_EQ(forced_counts.count("codebook"), 0u);
  EXPECT_EQ(forced_counts.at("head"), 4);
  EXPECT_EQ(forced_counts.at("metric.accuracy"), 4);

  // Another sweep that differs only in the head shares everything upstream (same store).
  write_sweep(dir / "other.toml", "[sweep.grid]\n\"head.temperature\" = [0.3]\n");
  const auto other = testing::run_cli("run " + (dir / "other.toml").string() + " --out " + (dir / "other").string() +
                                      " --store " + (dir / "out" / "store").string());
  ASSERT_EQ(other.exit_code, 0) << other.output;
  const auto other_counts = computed_counts(dir / "other", member_folders(dir / "other"));
  EXPECT_EQ(other_counts.count("blackbox"), 0u);
  EXPECT_EQ(other_counts.count("codebook"), 0u);
  EXPECT_EQ(other_counts.at("head"), 1);
}

TEST(SweepCli, ABadMemberStopsTheSweepBeforeAnythingRuns) {
  testing::TempDir dir;
  write_sweep(dir / "sweep.toml", "[sweep.grid]\n\"quantizer.codes\" = [16, 8, 0]\n");
  const auto result = testing::run_cli("run " + (dir / "sweep.toml").string() + " --out " + (dir / "out").string());
  EXPECT_EQ(result.exit_code, 1);
  EXPECT_NE(result.output.find("member 2 (quantizer.codes=0)"), std::string::npos) << result.output;
  EXPECT_FALSE(fs::exists(dir / "out" / "store"));
  EXPECT_FALSE(fs::exists(dir / "out" / "results.db"));
}

TEST(SweepCli, AKilledMemberResumesAndJobsRunMembersSideBySide) {
  ASSERT_FALSE(testing::fashion_mnist_root().empty());
  testing::TempDir dir;
  write_sweep(dir / "sweep.toml", "[sweep]\nseeds = [0, 1]\n");
  const std::string run = "run " + (dir / "sweep.toml").string() + " --out " + (dir / "out").string() +
                          " --set experiment.threads=1 --jobs 2";
  // Every member's head is killed after its first epoch: both members fail, no row is written.
  setenv("PROTOQUANT_ABORT_AFTER", "head:1", 1);
  const auto killed = testing::run_cli(run);
  unsetenv("PROTOQUANT_ABORT_AFTER");
  EXPECT_EQ(killed.exit_code, 1);
  EXPECT_NE(killed.output.find("2 of 2 members failed"), std::string::npos) << killed.output;
  EXPECT_TRUE(member_folders(dir / "out").empty());
  EXPECT_EQ(rows_in(dir / "out" / "results.db"), 0u);

  const auto resumed = testing::run_cli(run);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("[head] resumed after epoch 1"), std::string::npos) << resumed.output;
  const auto members = member_folders(dir / "out");
  ASSERT_EQ(members.size(), 2u);
  const auto counts = computed_counts(dir / "out", members);
  EXPECT_EQ(counts.count("blackbox"), 0u);  // filed before the kill
  EXPECT_EQ(counts.at("head"), 2);
  EXPECT_EQ(rows_in(dir / "out" / "results.db"), 2u);
  // Two seeds are two different experiments.
  EXPECT_NE(results_of(dir / "out" / members[0])["artifacts"]["blackbox"],
            results_of(dir / "out" / members[1])["artifacts"]["blackbox"]);
}

}  // namespace
}  // namespace protoquant
