// Sweeps through the CLI on a small slice of Fashion-MNIST: the plan, stage reuse counted across
// members and reruns, a killed member that resumes, --jobs, and one results-store row per
// finished run.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <optional>
#include <sstream>
#include <thread>

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
    for (const char* stage : {"blackbox", "codebook", "head", "metric.accuracy", "report"}) {
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
  // blackbox 1 + codebook 1 + head 4 + metric 4 + report 4
  EXPECT_NE(plan.output.find("plan: 14 stages to compute"), std::string::npos) << plan.output;
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
  EXPECT_EQ(counts.at("report"), 4);
  EXPECT_EQ(rows_in(dir / "out" / "results.db"), 4u);
  std::set<std::string> head_keys;
  for (const auto& m : members) head_keys.insert(results_of(dir / "out" / m)["artifacts"]["head"].get<std::string>());
  EXPECT_EQ(head_keys.size(), 4u);

  // Again: every stage of every member reused, nothing trained; four more rows.
  const auto again = testing::run_cli(run);
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("plan: 0 stages to compute"), std::string::npos) << again.output;
  EXPECT_EQ(again.output.find("epoch"), std::string::npos) << again.output;
  EXPECT_EQ(again.output.find("steps"), std::string::npos) << again.output;  // no feature pass, no report drawn
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
  EXPECT_EQ(forced_counts.at("report"), 4);

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

// The processes whose parent is `parent` (from /proc/<pid>/stat's fourth field).
std::vector<pid_t> children_of(pid_t parent) {
  std::vector<pid_t> found;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream stat(entry.path() / "stat");
    std::string line;
    if (!std::getline(stat, line) || line.rfind(')') == std::string::npos) continue;
    std::istringstream rest(line.substr(line.rfind(')') + 2));
    char state = 0;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) found.push_back(std::stoi(name));
  }
  return found;
}

// `protoquant run SWEEP --jobs 2 --set experiment.threads=1` started through `sh -c "PREFIX exec
// ..."` (the shell becomes the CLI: its pid is the sweep's), once both members are at work.
struct RunningSweep {
  pid_t pid = -1;
  std::vector<pid_t> members;
  std::string log;
};

RunningSweep start_sweep(const testing::TempDir& dir, const std::string& seeds, const std::string& prefix = "") {
  write_sweep(dir / "sweep.toml", "[sweep]\nseeds = " + seeds + "\n");
  RunningSweep sweep;
  sweep.log = (dir / "log.txt").string();
  const std::string shell = prefix + "exec " + std::string(PQ_CLI) + " run " + (dir / "sweep.toml").string() + " --out " +
                            (dir / "out").string() + " --set experiment.threads=1 --jobs 2 >" + sweep.log + " 2>&1";
  sweep.pid = ::fork();
  if (sweep.pid == 0) {
    ::execl("/bin/sh", "sh", "-c", shell.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (sweep.pid > 0 && sweep.members.size() < 2 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    sweep.members = children_of(sweep.pid);
  }
  std::this_thread::sleep_for(std::chrono::seconds(1));  // the members are at work
  return sweep;
}

// The sweep's exit status within `seconds`; on a timeout everything is killed and nullopt.
std::optional<int> wait_for(const RunningSweep& sweep, int seconds) {
  int status = 0;
  pid_t done = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
  while ((done = ::waitpid(sweep.pid, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (done != 0) return status;
  for (pid_t member : sweep.members) ::kill(member, SIGKILL);
  ::kill(sweep.pid, SIGKILL);
  ::waitpid(sweep.pid, &status, 0);
  return std::nullopt;
}

// SIGTERM to `protoquant run SWEEP --jobs 2` (what `timeout` sends, to the parent alone) reaches
// the members: they stop, the parent waits for them and says so, and no member keeps training.
TEST(SweepCli, ASignalToTheSweepStopsItsMembersToo) {
  ASSERT_FALSE(testing::fashion_mnist_root().empty());
  testing::TempDir dir;
  const RunningSweep sweep = start_sweep(dir, "[0, 1, 2]");
  ASSERT_GT(sweep.pid, 0);
  ASSERT_EQ(sweep.members.size(), 2u) << testing::read_text(sweep.log);
  ASSERT_EQ(::kill(sweep.pid, SIGTERM), 0);
  const std::optional<int> status = wait_for(sweep, 60);
  ASSERT_TRUE(status) << "the sweep did not stop within 60 s of SIGTERM\n" << testing::read_text(sweep.log);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) != 0) << *status;
  for (pid_t member : sweep.members) {
    EXPECT_NE(::kill(member, 0), 0) << "member " << member << " outlived the sweep";
    if (::kill(member, 0) == 0) ::kill(member, SIGKILL);
  }
  const std::string output = testing::read_text(sweep.log);
  EXPECT_NE(output.find("stopped by signal 15"), std::string::npos) << output;
  if (fs::exists(dir / "out")) EXPECT_TRUE(member_folders(dir / "out").empty()) << output;  // nothing half-finished
}

// A signal the sweep was started ignoring (`nohup`, a script's background job) stays ignored, by
// the sweep and by its members: closing the terminal does not stop the run.
TEST(SweepCli, AnIgnoredSignalStaysIgnoredByTheSweepAndItsMembers) {
  ASSERT_FALSE(testing::fashion_mnist_root().empty());
  testing::TempDir dir;
  const RunningSweep sweep = start_sweep(dir, "[0, 1]", "trap '' HUP; ");
  ASSERT_GT(sweep.pid, 0);
  ASSERT_EQ(sweep.members.size(), 2u) << testing::read_text(sweep.log);
  ASSERT_EQ(::kill(sweep.pid, SIGHUP), 0);
  for (pid_t member : sweep.members) ::kill(member, SIGHUP);
  const std::optional<int> status = wait_for(sweep, 120);
  ASSERT_TRUE(status) << testing::read_text(sweep.log);
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << *status << "\n" << testing::read_text(sweep.log);
  EXPECT_EQ(member_folders(dir / "out").size(), 2u) << testing::read_text(sweep.log);
}

}  // namespace
}  // namespace protoquant
