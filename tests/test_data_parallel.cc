// Data-parallel runs through the CLI: two ranks on 127.0.0.1 (Gloo) train one tiny synthparts
// model, write one result and keep identical replicas; a rank killed mid-epoch stops the other
// with a one-line error naming it, and the run resumes. Plus the sharding arithmetic.
#include <cmath>
#include <cstdlib>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include "protoquant/launcher.h"
#include "protoquant/process_group.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

size_t results_files_under(const fs::path& root) {
  size_t n = 0;
  for (const auto& entry : fs::recursive_directory_iterator(root)) n += entry.path().filename() == "results.json";
  return n;
}

std::string two_ranks(const testing::TempDir& dir, const fs::path& manifest) {
  // A short collective timeout, so a broken test fails in seconds rather than minutes.
  return "run " + manifest.string() + " --out " + (dir / "out").string() + " --store " + (dir / "store").string() +
         " --db " + (dir / "results.db").string() + " --nproc-per-node 2 --dist-timeout 60 --set experiment.threads=1";
}

TEST(DataParallelCli, TwoRanksTrainOneModelWithIdenticalReplicasAndWriteOneResult) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "dp_ema");
  // EMA-VQ: its codebook moves in the forward pass, so without the allreduce of its counts and
  // sums each rank would drift to its own codebook and the per-epoch replica check would fail.
  const auto run = testing::run_cli(two_ranks(dir, manifest) +
                                    " --set quantizer.type=ema_vq --set stages.codebook.epochs=2 --set stages.head.epochs=2");
  ASSERT_EQ(run.exit_code, 0) << run.output;
  EXPECT_EQ(results_files_under(dir.path()), 1u);
  const nlohmann::json results = testing::results_of(dir / "out");
  EXPECT_EQ(results["environment"]["world_size"], 2);
  for (const auto& [stage, epochs] : {std::pair{"blackbox", 1}, {"codebook", 2}, {"head", 2}}) {
    const auto record = nlohmann::json::parse(testing::read_text(dir / "out" / "stages" / (std::string(stage) + ".json")));
    EXPECT_EQ(record["world_size"], 2) << stage;
    EXPECT_EQ(record["replica_checks"], epochs) << stage;  // one passed check per epoch
    // Where the time went: in the ranks' collectives, a part of the training's time.
    EXPECT_GT(record["sync_seconds"].get<double>(), 0.0) << stage;
    EXPECT_LT(record["sync_seconds"].get<double>(), record["train_seconds"].get<double>()) << stage;
  }
  // Rank 0 alone speaks: one progress report per stage, not one per rank.
  size_t done = 0;
  for (size_t at = run.output.find("[head] done"); at != std::string::npos; at = run.output.find("[head] done", at + 1)) ++done;
  EXPECT_EQ(done, 1u) << run.output;
}

// torchrun's default launch: its agent serves the store on the master port, and every rank joins
// it as a client (TORCHELASTIC_USE_AGENT_STORE); rank 0 serving it too would fail to bind.
TEST(DataParallelCli, TorchrunsAgentStoreLaunchesTheRanks) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "dp_torchrun");
  const auto port = free_local_port();
  ASSERT_TRUE(port.has_value());
  const std::string launch = fmt::format("timeout 180 /usr/bin/python3 {}/tests/python/torchrun_static.py 2 {} {} ",
                                         PQ_SOURCE_DIR, *port, PQ_CLI);
  const std::string run = fmt::format("run {} --out {} --store {} --db {} --dist-timeout 60 --set experiment.threads=1",
                                      manifest.string(), (dir / "out").string(), (dir / "store").string(),
                                      (dir / "results.db").string());
  const auto result = testing::run_command(launch + run);
  ASSERT_EQ(result.exit_code, 0) << result.output;
  EXPECT_EQ(results_files_under(dir.path()), 1u);
  EXPECT_EQ(testing::results_of(dir / "out")["environment"]["world_size"], 2);
}

// The first step's loss and gradients that a run dumped (PROTOQUANT_DUMP_FIRST_STEP) for `label`
// on `rank`: loss first, then one gradient per parameter.
std::vector<torch::Tensor> first_step(const fs::path& folder, const std::string& label, int rank) {
  std::vector<torch::Tensor> tensors;
  torch::load(tensors, (folder / fmt::format("{}.rank{}.pt", label, rank)).string());
  return tensors;
}

// How far a dumped first step is from the reference: the larger of the losses' relative
// difference and the gradients' largest difference relative to the largest gradient. (Relative to
// the whole step, not tensor by tensor: a bias followed by batch norm gets a gradient that nearly
// cancels to zero, and float rounding is large against it but not against the step.)
double relative_difference(const std::vector<torch::Tensor>& reference, const std::vector<torch::Tensor>& other) {
  EXPECT_EQ(reference.size(), other.size());
  if (reference.size() != other.size() || reference.empty()) return INFINITY;
  const double loss = reference[0].item<double>();
  double worst_loss = std::abs(loss - other[0].item<double>()) / std::max(1.0, std::abs(loss));
  double largest = 0.0, worst = 0.0;
  for (size_t i = 1; i < reference.size(); ++i) {
    EXPECT_EQ(reference[i].sizes(), other[i].sizes()) << "tensor " << i;
    if (reference[i].sizes() != other[i].sizes()) return INFINITY;
    largest = std::max(largest, reference[i].abs().max().item<double>());
    worst = std::max(worst, (reference[i].to(torch::kFloat64) - other[i].to(torch::kFloat64)).abs().max().item<double>());
  }
  return std::max(worst_loss, worst / std::max(largest, 1e-30));
}

// Runs `arguments` with the first step of every trained stage dumped into `folder`.
testing::CommandResult run_dumping_first_steps(const std::string& arguments, const fs::path& folder) {
  fs::create_directories(folder);
  setenv("PROTOQUANT_DUMP_FIRST_STEP", folder.c_str(), 1);
  auto result = testing::run_cli(arguments);
  unsetenv("PROTOQUANT_DUMP_FIRST_STEP");
  return result;
}

// From the same black box, two ranks take the steps one process takes on the same global batches:
// the codebook's and the head's losses equal the single process's to float summation order, and
// so do the metrics.
TEST(DataParallelCli, TwoRanksTakeTheStepsOneProcessTakesOnTheSameGlobalBatches) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "dp_equal");
  const auto base = testing::run_cli("run " + manifest.string() + " --out " + (dir / "base").string() + " --store " + (dir / "store-base").string() +
                                     " --set experiment.threads=1 --set stages.codebook.epochs=2 --set stages.head.epochs=2");
  ASSERT_EQ(base.exit_code, 0) << base.output;
  // Batch norm sees per-rank batches in stage 0, so both runs start from the base run's black box.
  const std::string same = " --set stages.blackbox.weights=" + (dir / "base" / "model" / "backbone.pt").string() +
                           " --set stages.codebook.epochs=2 --set stages.head.epochs=2";
  const auto one = run_dumping_first_steps("run " + manifest.string() + " --out " + (dir / "one").string() + " --store " +
                                               (dir / "store-one").string() + " --set experiment.threads=1" + same,
                                           dir / "steps-one");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const auto two = run_dumping_first_steps(two_ranks(dir, manifest) + same, dir / "steps-two");
  ASSERT_EQ(two.exit_code, 0) << two.output;
  // The first step's global loss and the gradients each rank applies: the single process's.
  for (const char* stage : {"codebook", "head"}) {
    const auto reference = first_step(dir / "steps-one", stage, 0);
    ASSERT_GE(reference.size(), 2u) << stage;  // the loss and at least one gradient
    EXPECT_GT(reference[1].abs().max().item<double>(), 0.0) << stage;
    for (const int rank : {0, 1}) {
      EXPECT_LT(relative_difference(reference, first_step(dir / "steps-two", stage, rank)), 1e-5) << stage << " rank " << rank;
    }
  }
  const nlohmann::json a = testing::results_of(dir / "one"), b = testing::results_of(dir / "out");
  EXPECT_EQ(b["environment"]["world_size"], 2);
  for (const char* stage : {"codebook", "head"}) {
    const auto& la = a["stages"][stage]["epoch_losses"];
    const auto& lb = b["stages"][stage]["epoch_losses"];
    ASSERT_EQ(la.size(), 2u) << stage;
    ASSERT_EQ(lb.size(), 2u) << stage;
    for (size_t e = 0; e < la.size(); ++e) {
      EXPECT_NEAR(la[e].get<double>(), lb[e].get<double>(), 1e-5 * std::max(1.0, std::abs(la[e].get<double>())))
          << stage << " epoch " << e + 1;
    }
  }
  EXPECT_NEAR(a["metrics"]["accuracy"]["accuracy"].get<double>(), b["metrics"]["accuracy"]["accuracy"].get<double>(), 1e-9);
}

// Stage 0 trains the small CNN, whose batch norm normalises with the batch's moments. Per-rank
// moments (the default, as DDP's) make two ranks' step differ from one process's; with
// stages.blackbox.sync_batchnorm the moments are the global batch's and the step is the same.
TEST(DataParallelCli, SyncBatchnormMakesTheBlackBoxStepOneProcesssStep) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "dp_syncbn");
  const std::string sync = " --set stages.blackbox.sync_batchnorm=true";
  const auto one = run_dumping_first_steps("run " + manifest.string() + " --out " + (dir / "one").string() + " --store " +
                                               (dir / "store-one").string() + " --set experiment.threads=1" + sync,
                                           dir / "steps-one");
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const auto synced = run_dumping_first_steps(two_ranks(dir, manifest) + sync, dir / "steps-synced");
  ASSERT_EQ(synced.exit_code, 0) << synced.output;
  const auto per_rank = run_dumping_first_steps(
      "run " + manifest.string() + " --out " + (dir / "per-rank").string() + " --store " + (dir / "store-per-rank").string() +
          " --nproc-per-node 2 --dist-timeout 60 --set experiment.threads=1",
      dir / "steps-per-rank");
  ASSERT_EQ(per_rank.exit_code, 0) << per_rank.output;

  // The loss is continuous in the moments and equals one process's to float rounding. The
  // gradients go through ReLU kinks that float rounding can flip (one process on 1 and on 2
  // threads already differs by 4e-3 of the largest gradient in this step, in the layers before
  // the first pooling), so they are compared at a tolerance above that; per-rank moments are
  // two orders of magnitude further. The batch norm's own step is compared to 1e-5 in
  // test_sync_batch_norm.cc.
  const auto reference = first_step(dir / "steps-one", "blackbox", 0);
  ASSERT_GE(reference.size(), 2u);
  for (const int rank : {0, 1}) {
    const auto synced_step = first_step(dir / "steps-synced", "blackbox", rank);
    EXPECT_NEAR(reference[0].item<double>(), synced_step[0].item<double>(), 1e-5 * std::abs(reference[0].item<double>()));
    EXPECT_LT(relative_difference(reference, synced_step), 2e-2) << "rank " << rank;
  }
  EXPECT_GT(relative_difference(reference, first_step(dir / "steps-per-rank", "blackbox", 0)), 0.2);
  // The whole epoch: the same mean loss, and the running statistics stayed identical on both ranks.
  const auto la = testing::results_of(dir / "one")["stages"]["blackbox"]["epoch_losses"];
  const auto lb = testing::results_of(dir / "out")["stages"]["blackbox"]["epoch_losses"];
  ASSERT_EQ(la.size(), 1u);
  ASSERT_EQ(lb.size(), 1u);
  EXPECT_NEAR(la[0].get<double>(), lb[0].get<double>(), 1e-5 * std::max(1.0, std::abs(la[0].get<double>())));
  const auto record = nlohmann::json::parse(testing::read_text(dir / "out" / "stages" / "blackbox.json"));
  EXPECT_EQ(record["replica_checks"], 1);
}

// Every number in `a` equals the one at the same place in `b` to `tolerance`; returns how many.
int expect_same_numbers(const nlohmann::json& a, const nlohmann::json& b, double tolerance, const std::string& where) {
  if (a.is_number()) {
    EXPECT_TRUE(b.is_number()) << where;
    if (b.is_number()) EXPECT_NEAR(a.get<double>(), b.get<double>(), tolerance) << where;
    return 1;
  }
  int compared = 0;
  if (a.is_object()) {
    for (const auto& [key, value] : a.items()) {
      EXPECT_TRUE(b.contains(key)) << where << "." << key;
      if (b.contains(key)) compared += expect_same_numbers(value, b[key], tolerance, where + "." + key);
    }
  }
  return compared;
}

// The interpretability suite evaluated on two ranks (a sharded pass, the metrics' partial states
// merged on rank 0) gives the values one process gives on the same model, to 1e-6.
TEST(DataParallelCli, EvaluateOnTwoRanksGivesTheSingleProcessMetrics) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "dp_metrics");
  const auto trained = testing::run_cli("run " + manifest.string() + " --out " + (dir / "one").string() + " --store " +
                                        (dir / "store-one").string() + " --set experiment.threads=1");
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  // A second copy of the finished run and its store, so both evaluations compute the metrics.
  fs::copy(dir / "one", dir / "two", fs::copy_options::recursive);
  fs::copy(dir / "store-one", dir / "store-two", fs::copy_options::recursive);
  const std::string metrics =
      " --metric consistency:half_size=6 --metric stability:half_size=6 --metric purity:patch_size=8,top_k=5"
      " --metric sizes --metric codebook_usage";
  const auto one = testing::run_cli("evaluate " + (dir / "one").string() + " --store " + (dir / "store-one").string() +
                                    " --db " + (dir / "one.db").string() + metrics);
  ASSERT_EQ(one.exit_code, 0) << one.output;
  const auto two = testing::run_cli("evaluate " + (dir / "two").string() + " --store " + (dir / "store-two").string() +
                                    " --db " + (dir / "two.db").string() + metrics + " --nproc-per-node 2 --dist-timeout 60");
  ASSERT_EQ(two.exit_code, 0) << two.output;
  const nlohmann::json a = testing::results_of(dir / "one"), b = testing::results_of(dir / "two");
  EXPECT_EQ(b["environment"]["world_size"], 2);
  for (const char* stage : {"metric.consistency", "metric.stability", "metric.purity", "metric.sizes"}) {
    EXPECT_EQ(b["stages"][stage]["reused"], false) << stage;  // computed on the two ranks
  }
  EXPECT_GE(expect_same_numbers(a["metrics"], b["metrics"], 1e-6, "metrics"), 20);
}

TEST(DataParallelCli, AKilledRankStopsTheOtherCleanlyAndTheRunResumes) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "dp_fault");
  const std::string run = two_ranks(dir, manifest) + " --set stages.head.epochs=2";
  setenv("PROTOQUANT_KILL_AT", "1:head:1:1", 1);  // rank 1 dies at the first step of the head's first epoch
  const auto killed = testing::run_cli(run);
  unsetenv("PROTOQUANT_KILL_AT");
  ASSERT_NE(killed.exit_code, 0) << killed.output;
  EXPECT_NE(killed.output.find("data-parallel run failed: rank 1 was killed by signal 9"), std::string::npos)
      << killed.output;
  EXPECT_EQ(results_files_under(dir.path()), 0u);
  EXPECT_TRUE(fs::exists(dir / "out" / "stages" / "codebook.json"));  // the finished stages stay filed

  const auto resumed = testing::run_cli(run + " --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("[codebook] reused"), std::string::npos) << resumed.output;
  EXPECT_EQ(testing::results_of(dir / "out")["environment"]["world_size"], 2);
}

// Killed inside the codebook stage, after its first epoch was checkpointed: the rerun continues
// the codebook from that checkpoint (on the same two ranks), it does not start it again.
TEST(DataParallelCli, ARankKilledInTheCodebookStageResumesItFromItsCheckpoint) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "dp_codebook");
  const std::string run = two_ranks(dir, manifest) + " --set stages.codebook.epochs=2";
  setenv("PROTOQUANT_KILL_AT", "1:codebook:2:1", 1);  // rank 1 dies as the codebook's second epoch begins
  const auto killed = testing::run_cli(run);
  unsetenv("PROTOQUANT_KILL_AT");
  ASSERT_NE(killed.exit_code, 0) << killed.output;
  EXPECT_NE(killed.output.find("rank 1 was killed by signal 9"), std::string::npos) << killed.output;
  EXPECT_FALSE(fs::exists(dir / "out" / "stages" / "codebook.json"));

  const auto resumed = testing::run_cli(run + " --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("[blackbox] reused"), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("[codebook] resumed after epoch 1"), std::string::npos) << resumed.output;
  EXPECT_EQ(testing::results_of(dir / "out")["stages"]["codebook"]["epoch_losses"].size(), 2u);
}

// The checkpoint holds the whole state (every rank's replica is the same), and every epoch's
// permutation is global: a run killed on two ranks continues on one process, from the
// checkpoint, to the epochs it had left.
TEST(DataParallelCli, ARunKilledOnTwoRanksResumesOnOneProcess) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "dp_resize");
  const std::string settings = " --set stages.codebook.epochs=2";
  setenv("PROTOQUANT_KILL_AT", "1:codebook:2:1", 1);
  const auto killed = testing::run_cli(two_ranks(dir, manifest) + settings);
  unsetenv("PROTOQUANT_KILL_AT");
  ASSERT_NE(killed.exit_code, 0) << killed.output;
  EXPECT_FALSE(fs::exists(dir / "out" / "stages" / "codebook.json"));

  const auto resumed = testing::run_cli("run " + manifest.string() + " --out " + (dir / "out").string() + " --store " +
                                        (dir / "store").string() + " --db " + (dir / "results.db").string() +
                                        " --set experiment.threads=1 --resume" + settings);
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("[blackbox] reused"), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("[codebook] resumed after epoch 1"), std::string::npos) << resumed.output;
  const nlohmann::json results = testing::results_of(dir / "out");
  EXPECT_EQ(results["environment"]["world_size"], 1);
  EXPECT_EQ(results["stages"]["codebook"]["epoch_losses"].size(), 2u);
}

// A rank started by torchrun or srun whose master never answers stops within --dist-timeout with
// one line naming the address it tried, and writes nothing.
TEST(DataParallelCli, ARankThatCannotReachTheMasterSaysWhichAddressItTried) {
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "dp_unreachable");
  const std::vector<std::pair<const char*, const char*>> environment = {
      {"RANK", "1"}, {"WORLD_SIZE", "2"}, {"LOCAL_RANK", "1"}, {"LOCAL_WORLD_SIZE", "2"},
      {"MASTER_ADDR", "127.0.0.1"}, {"MASTER_PORT", "29977"}};  // no master listens there
  for (const auto& [name, value] : environment) setenv(name, value, 1);
  const auto run = testing::run_cli("run " + manifest.string() + " --out " + (dir / "out").string() + " --store " +
                                    (dir / "store").string() + " --dist-timeout 2");
  for (const auto& [name, value] : environment) unsetenv(name);
  EXPECT_NE(run.exit_code, 0) << run.output;
  EXPECT_NE(run.output.find("error: joining the data-parallel group at 127.0.0.1:29977 as rank 1 of 2"),
            std::string::npos)
      << run.output;
  EXPECT_EQ(results_files_under(dir.path()), 0u);
}

TEST(Sharding, SharesAreContiguousCoverEveryRowAndDifferByAtMostOne) {
  for (const int64_t n : {0, 1, 5, 64, 101}) {
    for (const int world : {1, 2, 3, 8}) {
      int64_t next = 0, smallest = n, largest = 0;
      for (int rank = 0; rank < world; ++rank) {
        const Shard s = shard_of(n, rank, world);
        EXPECT_EQ(s.begin, next) << n << " rows, rank " << rank << " of " << world;
        next = s.end;
        smallest = std::min(smallest, s.size());
        largest = std::max(largest, s.size());
      }
      EXPECT_EQ(next, n);
      EXPECT_LE(largest - smallest, 1);
    }
  }
}

TEST(Sharding, AProcessAloneHoldsEverythingAndIsTheWriter) {
  EXPECT_TRUE(is_writer());
  const Shard all = my_shard(7);
  EXPECT_EQ(all.begin, 0);
  EXPECT_EQ(all.end, 7);
  const torch::Tensor rows = torch::randn({7, 3});
  EXPECT_TRUE(torch::equal(gather_rows(rows, 7), rows));
  EXPECT_TRUE(check_replicas_identical({rows}, "alone").ok());
}

}  // namespace
}  // namespace protoquant
