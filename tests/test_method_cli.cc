// The method's stages through the CLI, as a user runs them on a slice of Fashion-MNIST: codebook
// pruning (stage 2), resume after a crash, editing (stage 4) and the Python export.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "protoquant/model_export.h"
#include "protoquant/registry.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

const std::string kMethodManifest = std::string(PQ_SOURCE_DIR) + "/experiments/quickstart.toml";

std::string slice_run(const fs::path& out, const std::string& extra = "") {
  return "run " + kMethodManifest + " --out " + out.string() +
         " --set dataset.limit=1000 --set backbone.width=8 --set quantizer.codes=32"
         " --set stages.blackbox.epochs=2 --set stages.codebook.epochs=2 --set stages.head.epochs=2"
         " --set experiment.threads=2 " + extra;
}

using testing::results_of;

torch::Tensor exported(const fs::path& file, const std::string& key) {
  std::ifstream in(file, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), {});
  return torch::pickle_load(bytes).toGenericDict().at(key).toTensor();
}

// CTest runs every test in its own process; the reference run they share is made once per build
// (keyed by the newest modification time of the CLI, core library and plugins) under a lock, and
// reused by the other processes.
class MethodCli : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    ASSERT_FALSE(testing::fashion_mnist_root().empty()) << "install dataset-fashion-mnist (tools/install-deps.sh)";
    dir_ = new testing::TempDir;
    // Newest of the CLI, the core library and the plugins: any rebuild makes a fresh reference.
    auto stamp = fs::last_write_time(PQ_CLI).time_since_epoch().count();
    for (const auto& file : fs::directory_iterator(fs::path(PQ_BUILTIN_PLUGIN_DIR))) {
      stamp = std::max(stamp, file.last_write_time().time_since_epoch().count());
    }
    for (const auto& file : fs::directory_iterator(fs::path(PQ_BUILTIN_PLUGIN_DIR).parent_path().parent_path())) {
      if (file.is_regular_file()) stamp = std::max(stamp, file.last_write_time().time_since_epoch().count());
    }
    reference_ = fs::path(PQ_TEST_WORK_DIR) / ("method-cli-reference-" + std::to_string(stamp));
    fs::create_directories(reference_.parent_path());
    const int lock = ::open((reference_.string() + ".lock").c_str(), O_CREAT | O_RDWR, 0644);
    ASSERT_GE(lock, 0);
    ::flock(lock, LOCK_EX);
    if (!fs::exists(reference_ / "results.json")) {
      const auto result = testing::run_cli(slice_run(reference_));
      EXPECT_EQ(result.exit_code, 0) << result.output;
    }
    ::flock(lock, LOCK_UN);
    ::close(lock);
    ASSERT_TRUE(fs::exists(reference_ / "results.json"));
  }
  static void TearDownTestSuite() { delete dir_; }
  static fs::path reference() { return reference_; }
  static testing::TempDir* dir_;
  static fs::path reference_;
};
fs::path MethodCli::reference_;
testing::TempDir* MethodCli::dir_ = nullptr;

// The checkpoint of a stage in progress, under its key in the run's store.
std::vector<fs::path> work_checkpoints(const fs::path& store, const std::string& stage) {
  std::vector<fs::path> found;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(store / stage, ec)) {
    if (entry.path().extension() == ".work" && fs::exists(entry.path() / "checkpoint.pt")) found.push_back(entry.path());
  }
  return found;
}

TEST_F(MethodCli, AnInterruptedRunResumesToTheSameResult) {
  const fs::path run = *dir_ / "interrupted";
  // Killed right after the codebook's last epoch was checkpointed: the codebook resumes with nothing
  // left to train, and the head built after it must start exactly as in the uninterrupted run.
  setenv("PROTOQUANT_ABORT_AFTER", "codebook:2", 1);
  const auto crashed = testing::run_cli(slice_run(run));
  unsetenv("PROTOQUANT_ABORT_AFTER");
  EXPECT_EQ(crashed.exit_code, 1);
  EXPECT_FALSE(fs::exists(run / "results.json"));
  EXPECT_EQ(work_checkpoints(*dir_ / "store", "codebook").size(), 1u);
  EXPECT_TRUE(fs::exists(*dir_ / "store" / "blackbox"));

  const auto resumed = testing::run_cli(slice_run(run, "--resume"));
  ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
  EXPECT_NE(resumed.output.find("[blackbox] reused"), std::string::npos) << resumed.output;
  EXPECT_NE(resumed.output.find("[codebook] resumed after epoch 2"), std::string::npos) << resumed.output;
  EXPECT_TRUE(work_checkpoints(*dir_ / "store", "codebook").empty()) << "a filed stage drops its work folder";

  const auto a = results_of(reference()), b = results_of(run);
  EXPECT_EQ(a["metrics"]["accuracy"], b["metrics"]["accuracy"]);
  EXPECT_EQ(a["artifacts"], b["artifacts"]);
  EXPECT_EQ(a["stages"]["codebook"]["loss"], b["stages"]["codebook"]["loss"]);
  EXPECT_EQ(a["stages"]["head"]["loss"], b["stages"]["head"]["loss"]);
  EXPECT_TRUE(torch::equal(exported(reference() / "model" / "protoquant.pt", "head.weight"),
                           exported(run / "model" / "protoquant.pt", "head.weight")));

  const auto nothing = testing::run_cli(slice_run(*dir_ / "never-ran", "--resume"));
  EXPECT_EQ(nothing.exit_code, 1);
  EXPECT_NE(nothing.output.find("nothing to resume"), std::string::npos) << nothing.output;
}

// A checkpoint damaged after a kill (bytes flipped in the middle, or cut short) is never resumed
// from: it is set aside with a warning and the stage starts again, to the uninterrupted result.
TEST_F(MethodCli, ADamagedCheckpointIsSetAsideAndTheStageStartsAgain) {
  const std::vector<std::pair<std::string, std::function<void(const fs::path&)>>> damages = {
      {"flipped", [](const fs::path& file) {
         std::fstream f(file, std::ios::in | std::ios::out | std::ios::binary);
         const auto middle = static_cast<std::streamoff>(fs::file_size(file) / 2);
         f.seekg(middle);
         char c = 0;
         f.read(&c, 1);
         f.seekp(middle);
         c = static_cast<char>(c ^ 0x5a);
         f.write(&c, 1);
       }},
      {"truncated", [](const fs::path& file) { fs::resize_file(file, fs::file_size(file) * 2 / 3); }},
  };
  for (const auto& [damage, apply] : damages) {
    SCOPED_TRACE(damage);
    const fs::path store = *dir_ / ("store-" + damage);
    const fs::path run = *dir_ / ("damaged-" + damage);
    setenv("PROTOQUANT_ABORT_AFTER", "codebook:1", 1);
    const auto crashed = testing::run_cli(slice_run(run, "--store " + store.string()));
    unsetenv("PROTOQUANT_ABORT_AFTER");
    ASSERT_EQ(crashed.exit_code, 1) << crashed.output;
    const auto checkpoints = work_checkpoints(store, "codebook");
    ASSERT_EQ(checkpoints.size(), 1u);
    apply(checkpoints[0] / "checkpoint.pt");

    const auto resumed = testing::run_cli(slice_run(run, "--resume --store " + store.string()));
    ASSERT_EQ(resumed.exit_code, 0) << resumed.output;
    EXPECT_NE(resumed.output.find("set aside as checkpoint.pt.bad, the stage starts again"), std::string::npos)
        << resumed.output;
    EXPECT_EQ(resumed.output.find("[codebook] resumed"), std::string::npos) << resumed.output;
    const auto a = results_of(reference()), b = results_of(run);
    EXPECT_EQ(a["stages"]["codebook"]["loss"], b["stages"]["codebook"]["loss"]);
    EXPECT_EQ(a["artifacts"]["head"], b["artifacts"]["head"]);
  }
}

// --force computes a stage from its start, even where an unfinished checkpoint of it is left.
TEST_F(MethodCli, ForceStartsAStageAfreshInsteadOfResumingItsCheckpoint) {
  const fs::path store = *dir_ / "store-force";
  const fs::path run = *dir_ / "forced";
  setenv("PROTOQUANT_ABORT_AFTER", "codebook:1", 1);
  const auto crashed = testing::run_cli(slice_run(run, "--store " + store.string()));
  unsetenv("PROTOQUANT_ABORT_AFTER");
  ASSERT_EQ(crashed.exit_code, 1) << crashed.output;
  ASSERT_EQ(work_checkpoints(store, "codebook").size(), 1u);
  const auto forced = testing::run_cli(slice_run(run, "--resume --force codebook --store " + store.string()));
  ASSERT_EQ(forced.exit_code, 0) << forced.output;
  EXPECT_EQ(forced.output.find("[codebook] resumed"), std::string::npos) << forced.output;
  EXPECT_EQ(results_of(reference())["stages"]["codebook"]["loss"], results_of(run)["stages"]["codebook"]["loss"]);
}

TEST_F(MethodCli, ACorruptArtifactIsDetectedAndComputedAgain) {
  const fs::path store = *dir_ / "store";
  const auto first = testing::run_cli(slice_run(*dir_ / "first", "--set stages.blackbox.epochs=1"));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  const auto results = results_of(*dir_ / "first");
  const fs::path head_file = store / "head" / results["artifacts"]["head"].get<std::string>() / "head.pt";
  ASSERT_TRUE(fs::exists(head_file));
  // One flipped byte, same size: only the checksum can tell.
  {
    std::fstream f(head_file, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(100);
    char c = 0;
    f.read(&c, 1);
    c = static_cast<char>(c ^ 0x5a);
    f.seekp(100);
    f.write(&c, 1);
  }
  const auto second = testing::run_cli(slice_run(*dir_ / "second", "--set stages.blackbox.epochs=1"));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  EXPECT_NE(second.output.find("does not match its SHA-256"), std::string::npos) << second.output;
  const auto again = results_of(*dir_ / "second");
  EXPECT_EQ(again["stages"]["codebook"]["reused"], true);
  EXPECT_EQ(again["stages"]["head"]["reused"], false);
  EXPECT_EQ(again["metrics"]["accuracy"], results["metrics"]["accuracy"]);
  EXPECT_TRUE(fs::exists(store / ".corrupt"));

  // --force recomputes the named stage and everything after it, and nothing upstream.
  const auto forced = testing::run_cli(slice_run(*dir_ / "forced", "--set stages.blackbox.epochs=1 --force codebook"));
  ASSERT_EQ(forced.exit_code, 0) << forced.output;
  const auto f = results_of(*dir_ / "forced");
  EXPECT_EQ(f["stages"]["blackbox"]["reused"], true);
  EXPECT_EQ(f["stages"]["codebook"]["reused"], false);
  EXPECT_EQ(f["stages"]["head"]["reused"], false);
  EXPECT_EQ(f["metrics"]["accuracy"], results["metrics"]["accuracy"]);
}

TEST_F(MethodCli, CodebookStageKeepsItsBestValidatedEpoch) {
  const auto results = results_of(reference());
  const auto& validation = results["stages"]["codebook"]["validation"];
  ASSERT_EQ(validation.size(), 2u);
  const int64_t best = results["stages"]["codebook"]["best_epoch"].get<int64_t>();
  const double best_score = validation[best - 1].get<double>();
  for (const auto& score : validation) EXPECT_LE(score.get<double>(), best_score);
  // The kept codebook is the one that scored best: measured again after the stage, the same.
  EXPECT_DOUBLE_EQ(results["metrics"]["codebook"]["quantized_blackbox_accuracy"].get<double>(), best_score);
}

TEST_F(MethodCli, PruningShrinksTheCodebookToTheTargetInSteps) {
  const fs::path run = *dir_ / "pruned";
  const auto result = testing::run_cli(slice_run(run, "--set stages.prune.target=20 --set stages.prune.steps=3"));
  ASSERT_EQ(result.exit_code, 0) << result.output;
  const auto results = results_of(run);
  const auto& steps = results["stages"]["prune"]["steps"];
  ASSERT_EQ(steps.size(), 3u);
  EXPECT_EQ(steps[0]["codes"], 28);  // 32 - 12 * 1/3
  EXPECT_EQ(steps[1]["codes"], 24);
  EXPECT_EQ(steps[2]["codes"], 20);
  EXPECT_EQ(results["metrics"]["codebook"]["codes_per_codebook"], 20);
  EXPECT_EQ(exported(run / "model" / "protoquant.pt", "head.prototypes").size(0), 20);
  EXPECT_EQ(exported(run / "model" / "protoquant.pt", "head.class_weights").size(1), 20);
  // The pruned codes are a subset of the stage-1 codebook's rows (before re-training moved them,
  // the pruned quantizer must have started from them): every usage count refers to 20 codes.
  EXPECT_EQ(results["codebook_counts"].size(), 20u);
}

TEST_F(MethodCli, LimitKKeepsExactlyKPerClassAndPruneInactiveKeepsPredictions) {
  const auto limited = testing::run_cli("edit " + reference().string() + " --limit-k 3 --name k3");
  ASSERT_EQ(limited.exit_code, 0) << limited.output;
  const auto w = exported(reference() / "edits" / "k3" / "protoquant.pt", "head.class_weights");
  const auto original = exported(reference() / "model" / "protoquant.pt", "head.class_weights");
  EXPECT_TRUE(torch::equal(w.gt(0).sum(1), torch::full({w.size(0)}, 3, torch::kInt64))) << w.gt(0).sum(1);
  // The survivors are each class's three largest original weights, unchanged.
  const auto top = std::get<0>(original.topk(3, 1));
  EXPECT_TRUE(torch::allclose(std::get<0>(w.topk(3, 1)), top));
  const auto record = nlohmann::json::parse(testing::read_text(reference() / "edits" / "k3" / "edit.json"));
  EXPECT_DOUBLE_EQ(record["after"]["local_size"].get<double>(), 3.0);

  // Removing the prototypes no class uses after limit-k: fewer prototypes, same predictions.
  const auto pruned = testing::run_cli("edit " + reference().string() + " --limit-k 3 --prune-inactive --name k3p");
  ASSERT_EQ(pruned.exit_code, 0) << pruned.output;
  const auto both = nlohmann::json::parse(testing::read_text(reference() / "edits" / "k3p" / "edit.json"));
  const int64_t used = w.gt(1e-3).any(0).sum().item<int64_t>();
  EXPECT_EQ(both["after"]["prototypes"], used);
  EXPECT_LT(used, original.size(1));
  EXPECT_EQ(both["after"]["accuracy"], record["after"]["accuracy"]);
  EXPECT_EQ(exported(reference() / "edits" / "k3p" / "protoquant.pt", "head.prototypes").size(0), used);
  EXPECT_TRUE(fs::exists(reference() / "model" / "head.pt"));  // the original is untouched
  EXPECT_TRUE(torch::equal(exported(reference() / "model" / "protoquant.pt", "head.class_weights"), original));

  const auto disabled = testing::run_cli("edit " + reference().string() + " --disable-prototype 4 --zero-weight 1:5");
  ASSERT_EQ(disabled.exit_code, 0) << disabled.output;
  const auto d = exported(reference() / "edits" / "disable-4_zero-1-5" / "protoquant.pt", "head.class_weights");
  EXPECT_EQ(d.select(1, 4).abs().sum().item<double>(), 0.0);
  EXPECT_EQ(d[1][5].item<double>(), 0.0);
  EXPECT_EQ(d[2][5].item<double>(), original[2][5].item<double>());

  const auto bad = testing::run_cli("edit " + reference().string() + " --zero-weight 1-5");
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.output.find("expected CLASS:PROTOTYPE"), std::string::npos) << bad.output;
  const auto range = testing::run_cli("edit " + reference().string() + " --disable-prototype 999");
  EXPECT_EQ(range.exit_code, 1);
  EXPECT_NE(range.output.find("--disable-prototype 999"), std::string::npos) << range.output;
  // An edit's name is its folder under edits/: it stays inside the run.
  const auto escaping = testing::run_cli("edit " + reference().string() + " --limit-k 3 --name ../../../x");
  EXPECT_EQ(escaping.exit_code, 1);
  EXPECT_NE(escaping.output.find("--name '../../../x' contains '/'"), std::string::npos) << escaping.output;
  EXPECT_FALSE(fs::exists(reference().parent_path().parent_path() / "x"));
  const auto not_run = testing::run_cli("edit " + (*dir_ / "absent").string() + " --limit-k 1");
  EXPECT_EQ(not_run.exit_code, 1);
  EXPECT_NE(not_run.output.find("not a run folder"), std::string::npos) << not_run.output;
}

// Stage 4, limit: each class's k strongest prototypes, the unused ones removed, the kept weights
// fine-tuned with the mask held fixed. The runs reuse the reference's stages up to the head.
TEST_F(MethodCli, TheLimitStageKeepsKPerClassPrunesTheUnusedAndHoldsItsMaskWhileFineTuning) {
  const std::string store = " --store " + (reference().parent_path() / "store").string();
  const std::string limit = store + " --set stages.limit.k=3";
  // Not fine-tuned: the head `edit --limit-k 3 --prune-inactive` makes by its own code.
  const fs::path still = *dir_ / "limit-still";
  const auto limited = testing::run_cli(slice_run(still, limit + " --set stages.limit.epochs=0"));
  ASSERT_EQ(limited.exit_code, 0) << limited.output;
  const auto edited = testing::run_cli("edit " + reference().string() + " --limit-k 3 --prune-inactive --name limit-stage");
  ASSERT_EQ(edited.exit_code, 0) << edited.output;
  const auto edit = nlohmann::json::parse(testing::read_text(reference() / "edits" / "limit-stage" / "edit.json"));
  const auto results = results_of(still);
  const auto& record = results["stages"]["limit"];
  EXPECT_TRUE(results["stages"]["head"]["reused"].get<bool>());
  EXPECT_EQ(record["accuracy_pruned"], record["accuracy_limited"]);  // removing the unused changes no prediction
  EXPECT_EQ(results["metrics"]["accuracy"]["accuracy"], edit["after"]["accuracy"]);
  const auto w = exported(still / "model" / "protoquant.pt", "head.class_weights");
  EXPECT_TRUE(torch::equal(w, exported(reference() / "edits" / "limit-stage" / "protoquant.pt", "head.class_weights")));
  EXPECT_EQ(w.size(1), edit["after"]["prototypes"].get<int64_t>());
  EXPECT_LT(w.size(1), exported(reference() / "model" / "protoquant.pt", "head.class_weights").size(1));
  EXPECT_TRUE(w.gt(0).sum(1).le(3).all().item<bool>()) << w.gt(0).sum(1);
  EXPECT_EQ(record["kept_prototypes"].size(), static_cast<size_t>(w.size(1)));
  // The codebook's codes are the head's prototypes here: the same ones went from it.
  EXPECT_EQ(exported(still / "model" / "protoquant.pt", "quantizer.codebook").size(0), w.size(1));
  EXPECT_LE(results["metrics"]["model_size"]["local_size"].get<double>(), 3.0);

  // Fine-tuned: the kept weights move, and no removed weight comes back.
  const fs::path tuned = *dir_ / "limit-tuned";
  const std::string tune = limit + " --set stages.limit.epochs=2 --set stages.limit.train_prototypes=false";
  const auto trained = testing::run_cli(slice_run(tuned, tune));
  ASSERT_EQ(trained.exit_code, 0) << trained.output;
  const auto t = exported(tuned / "model" / "protoquant.pt", "head.class_weights");
  ASSERT_TRUE(t.sizes().equals(w.sizes()));
  EXPECT_EQ(t.gt(0).logical_and(w.le(0)).sum().item<int64_t>(), 0);
  EXPECT_GT((t - w).abs().max().item<double>(), 0.0);
  EXPECT_TRUE(torch::equal(exported(tuned / "model" / "protoquant.pt", "head.prototypes"),
                           exported(still / "model" / "protoquant.pt", "head.prototypes")));  // train_prototypes off
  EXPECT_EQ(results_of(tuned)["stages"]["limit"]["steps"].get<int64_t>(), 2 * 8);  // 1000 images, batch 128
  // A rerun reuses the stage, loading the smaller head, with the same results.
  const auto first_metrics = results_of(tuned)["metrics"];
  const auto again = testing::run_cli(slice_run(tuned, tune));
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_TRUE(results_of(tuned)["stages"]["limit"]["reused"].get<bool>());
  EXPECT_EQ(results_of(tuned)["metrics"]["accuracy"], first_metrics["accuracy"]);
  EXPECT_TRUE(torch::equal(exported(tuned / "model" / "protoquant.pt", "head.class_weights"), t));
}

TEST_F(MethodCli, FeaturesFiledInTheStoreServeALaterRun) {
  const std::string shared = " --set stages.blackbox.weights=" + (reference() / "model" / "backbone.pt").string() +
                             " --set experiment.store_features=true --set experiment.feature_dtype=bf16";
  const auto first = testing::run_cli(slice_run(*dir_ / "cached1", shared));
  ASSERT_EQ(first.exit_code, 0) << first.output;
  // The codebook recomputed (--force) from the filed features: the same computation as from fresh ones.
  const auto second = testing::run_cli(slice_run(*dir_ / "cached2", shared + " --force codebook"));
  ASSERT_EQ(second.exit_code, 0) << second.output;
  const auto a = results_of(*dir_ / "cached1"), b = results_of(*dir_ / "cached2");
  EXPECT_EQ(a["stages"]["features"]["cache"]["train"]["hit"], false);
  EXPECT_EQ(b["stages"]["features"]["cache"]["train"]["hit"], true);
  EXPECT_EQ(b["stages"]["features"]["cache"]["test"]["hit"], true);
  EXPECT_EQ(a["stages"]["features"]["bytes_per_image"], 2 * 32 * 7 * 7);  // bf16, D = 4 * width
  EXPECT_EQ(b["stages"]["codebook"]["reused"], false);
  EXPECT_EQ(a["metrics"]["accuracy"], b["metrics"]["accuracy"]);
  EXPECT_EQ(a["metrics"]["codebook"]["quantized_blackbox_accuracy"], b["metrics"]["codebook"]["quantized_blackbox_accuracy"]);
}

TEST_F(MethodCli, PythonLoadsTheExportAndReproducesTheHead) {
  // The exported head of the reference run, evaluated by C++ on random feature maps...
  const fs::path export_file = reference() / "model" / "protoquant.pt";
  const auto prototypes = exported(export_file, "head.prototypes");
  const auto weights = exported(export_file, "head.weight");
  BuildContext context;
  context.num_classes = weights.size(0);
  context.prototypes = prototypes;
  auto head = testing::builtin_registry().heads.build("protoquant", Params::defaults(
                  testing::builtin_registry().heads.find("protoquant")->schema), context);
  ASSERT_TRUE(head.ok()) << head.status();
  ASSERT_TRUE((*head)->set_class_weights(torch::relu(weights)).ok());
  (*head)->eval();
  torch::manual_seed(3);
  const auto features = torch::randn({3, prototypes.size(1), 4, 4});
  const auto logits = (*head)->forward(features).logits.detach();
  c10::impl::GenericDict dict(c10::StringType::get(), c10::AnyType::get());
  dict.insert("features", features);
  dict.insert("logits", logits);
  const auto bytes = torch::pickle_save(dict);
  std::ofstream(*dir_ / "case.pt", std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  // ...and by Python from the export file alone, with the README's loading code.
  const std::string command = "/usr/bin/python3 " + std::string(PQ_SOURCE_DIR) + "/tests/python/check_export.py " +
                              export_file.string() + " " + (*dir_ / "case.pt").string() + " 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[512];
  while (fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  EXPECT_EQ(pclose(pipe), 0) << output;
  EXPECT_NE(output.find("max abs difference"), std::string::npos) << output;
}

}  // namespace
}  // namespace protoquant
