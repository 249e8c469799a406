// Sweeps: expansion order and assignments of grid, zip and seeds, the precedence of --set,
// member names, and errors reported per member with the position inside the sweep list.
#include <chrono>
#include <set>

#include <gtest/gtest.h>

#include "protoquant/manifest.h"
#include "protoquant/sweep.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

// A valid single-run manifest of 15 lines; each test appends its [sweep].
std::string single_run_manifest() {
  return "[experiment]\n"            // 1
         "name = \"abl\"\n"          // 2
         "[dataset]\n"               // 3
         "type = \"idx\"\n"          // 4
         "root = \"data\"\n"         // 5
         "[backbone]\n"              // 6
         "type = \"small_cnn\"\n"    // 7
         "width = 8\n"               // 8
         "[quantizer]\n"             // 9
         "type = \"vq\"\n"           // 10
         "codes = 64\n"              // 11
         "[head]\n"                  // 12
         "type = \"protoquant\"\n"   // 13
         "[stages.head]\n"           // 14
         "epochs = 1\n";             // 15
}

class SweepTest : public ::testing::Test {
 protected:
  absl::StatusOr<std::vector<SweepMember>> sweep(const std::string& text, const std::vector<std::string>& overrides = {}) {
    testing::write_text(path_, text);
    return load_sweep(path_, overrides, testing::builtin_registry());
  }
  // The error message, which must be exactly `lines`.
  void expect_errors(const absl::StatusOr<std::vector<SweepMember>>& result, const std::vector<std::string>& lines) {
    ASSERT_FALSE(result.ok());
    std::string expected;
    for (const auto& line : lines) expected += (expected.empty() ? "" : "\n") + line;
    EXPECT_EQ(std::string(result.status().message()), expected);
  }
  std::string at(int line, int column) const {
    return path_.string() + ":" + std::to_string(line) + ":" + std::to_string(column);
  }
  testing::TempDir dir_;
  fs::path path_ = dir_ / "sweep.toml";
};

TEST_F(SweepTest, GridIsACartesianProductInWrittenOrder) {
  // "quantizer.type" is written first, so it is the outer dimension although it sorts last.
  auto members = sweep(single_run_manifest() +
                       "[sweep.grid]\n"
                       "\"quantizer.type\" = [\"vq\", \"ema_vq\"]\n"
                       "\"head.temperature\" = [0.05, 0.1, 0.2]\n");
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 6u);
  const std::vector<std::pair<std::string, double>> expected = {
      {"vq", 0.05}, {"vq", 0.1}, {"vq", 0.2}, {"ema_vq", 0.05}, {"ema_vq", 0.1}, {"ema_vq", 0.2}};
  for (size_t i = 0; i < expected.size(); ++i) {
    const SweepMember& member = (*members)[i];
    EXPECT_EQ(member.index, static_cast<int>(i));
    EXPECT_EQ(member.assignment, (nlohmann::json{{"quantizer.type", expected[i].first},
                                                 {"head.temperature", expected[i].second}}));
    EXPECT_EQ(member.spec.quantizer.type, expected[i].first);
    EXPECT_DOUBLE_EQ(member.spec.head.params.get_float("temperature"), expected[i].second);
    EXPECT_EQ(member.spec.quantizer.params.get_int("codes"), 64);  // from the manifest
  }
  EXPECT_EQ((*members)[4].name, "abl-quantizer.type=ema_vq-head.temperature=0.1");
}

TEST_F(SweepTest, ZipPairsTheListsElementwise) {
  auto members = sweep(single_run_manifest() +
                       "[sweep.zip]\n"
                       "\"quantizer.codes\" = [16, 32, 128]\n"
                       "\"head.temperature\" = [0.3, 0.2, 0.1]\n");
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 3u);
  const std::vector<std::pair<int64_t, double>> expected = {{16, 0.3}, {32, 0.2}, {128, 0.1}};
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ((*members)[i].spec.quantizer.params.get_int("codes"), expected[i].first);
    EXPECT_DOUBLE_EQ((*members)[i].spec.head.params.get_float("temperature"), expected[i].second);
    EXPECT_EQ((*members)[i].assignment.size(), 2u);
  }
  EXPECT_EQ((*members)[2].name, "abl-quantizer.codes=128-head.temperature=0.1");
}

TEST_F(SweepTest, SeedsSetTheExperimentSeed) {
  auto members = sweep(single_run_manifest() + "[sweep]\nseeds = [7, 0, 3]\n");
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 3u);
  const std::vector<int64_t> seeds = {7, 0, 3};
  for (size_t i = 0; i < seeds.size(); ++i) {
    EXPECT_EQ((*members)[i].spec.experiment.get_int("seed"), seeds[i]);
    EXPECT_EQ((*members)[i].assignment, (nlohmann::json{{"experiment.seed", seeds[i]}}));
    EXPECT_EQ((*members)[i].name, "abl-seed=" + std::to_string(seeds[i]));
  }
}

TEST_F(SweepTest, GridTimesZipTimesSeedsWithTheSeedsInnermost) {
  auto members = sweep(single_run_manifest() +
                       "[sweep]\n"
                       "seeds = [0, 1, 2]\n"
                       "[sweep.grid]\n"
                       "\"quantizer.type\" = [\"vq\", \"ema_vq\"]\n"
                       "[sweep.zip]\n"
                       "\"quantizer.codes\" = [16, 32]\n"
                       "\"head.temperature\" = [0.5, 0.25]\n");
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 12u);  // 2 x 2 x 3
  for (size_t i = 0; i < members->size(); ++i) {
    const ExperimentSpec& spec = (*members)[i].spec;
    EXPECT_EQ(spec.quantizer.type, i < 6 ? "vq" : "ema_vq") << i;
    EXPECT_EQ(spec.quantizer.params.get_int("codes"), (i / 3) % 2 == 0 ? 16 : 32) << i;
    EXPECT_DOUBLE_EQ(spec.head.params.get_float("temperature"), (i / 3) % 2 == 0 ? 0.5 : 0.25) << i;
    EXPECT_EQ(spec.experiment.get_int("seed"), static_cast<int64_t>(i % 3)) << i;
  }
  EXPECT_EQ((*members)[7].name, "abl-quantizer.type=ema_vq-quantizer.codes=16-head.temperature=0.5-seed=1");
  EXPECT_EQ((*members)[7].assignment, (nlohmann::json{{"quantizer.type", "ema_vq"}, {"quantizer.codes", 16},
                                                      {"head.temperature", 0.5}, {"experiment.seed", 1}}));
}

TEST_F(SweepTest, UnequalZipListsAreAnErrorAtTheList) {
  auto members = sweep(single_run_manifest() +
                       "[sweep.zip]\n"                             // 16
                       "\"quantizer.codes\" = [16, 32, 64]\n"      // 17
                       "\"head.temperature\" = [0.5, 0.25]\n");    // 18
  expect_errors(members, {at(18, 22) + ": sweep.zip.\"head.temperature\" has 2 values but \"quantizer.codes\" "
                                       "has 3: zip lists must have the same length"});
}

TEST_F(SweepTest, AnInvalidMemberIsReportedWithItsPrefixAndTheSweepPosition) {
  // Members 0-6 are valid; member 7 takes the last value, 0, at column 46.
  auto members = sweep(single_run_manifest() +
                       "[sweep.grid]\n"                                          // 16
                       "\"quantizer.codes\" = [64, 32, 16, 8, 4, 2, 1, 0]\n");   // 17
  expect_errors(members, {"member 7 (quantizer.codes=0): " + at(17, 46) +
                          ": quantizer.codes = 0 is below the minimum 1"});

  // Every bad member is listed, its seed in the prefix too.
  members = sweep(single_run_manifest() +
                  "[sweep]\n"                                   // 16
                  "seeds = [0, 1]\n"                            // 17
                  "[sweep.grid]\n"                              // 18
                  "\"quantizer.codes\" = [64, 0]\n");           // 19
  expect_errors(members, {"member 2 (quantizer.codes=0, seed=0): " + at(19, 26) + ": quantizer.codes = 0 is below the minimum 1",
                          "member 3 (quantizer.codes=0, seed=1): " + at(19, 26) + ": quantizer.codes = 0 is below the minimum 1"});
}

TEST_F(SweepTest, ProblemsOfEveryMemberAreListedOnce) {
  // A swept key that no schema knows, and a typo outside the sweep: the same in every member.
  auto members = sweep(single_run_manifest() +
                       "epoch = 2\n"                                  // 16, in [stages.head]
                       "[sweep.grid]\n"                               // 17
                       "\"head.tempreature\" = [0.1, 0.2]\n");        // 18
  expect_errors(members, {at(18, 1) + ": unknown key 'tempreature' in [head] (did you mean 'temperature'?)",
                          at(16, 1) + ": unknown key 'epoch' in [stages.head] (did you mean 'epochs'?)"});
}

TEST_F(SweepTest, ASweptKeyInAnUnknownTableIsReportedAtTheKey) {
  auto members = sweep(single_run_manifest() +
                       "[sweep.grid]\n"                              // 16
                       "\"quantiser.codes\" = [16, 32]\n");         // 17
  expect_errors(members, {at(17, 1) + ": unknown table 'quantiser' (did you mean 'quantizer'?)"});
}

TEST_F(SweepTest, StructuralErrorsOfTheSweep) {
  auto members = sweep(single_run_manifest() +
                       "[sweep]\n"                                  // 16
                       "seeds = []\n"                               // 17
                       "gird = 1\n"                                 // 18
                       "[sweep.zip]\n"                              // 19
                       "\"quantizer.codes\" = [1]\n"                // 20
                       "\"quantizer\" = [{ type = \"vq\" }]\n");    // 21
  expect_errors(members, {at(18, 1) + ": unknown key 'gird' in [sweep] (did you mean 'grid'?); [sweep] takes grid, zip and seeds",
                          at(17, 9) + ": sweep.seeds must be a non-empty list of values, e.g. [1, 2]",
                          at(21, 1) + ": swept keys 'quantizer.codes' and 'quantizer' overlap: one is inside the other"});
}

TEST_F(SweepTest, SetAppliesToEveryMemberAndWinsOverTheSweep) {
  const std::string text = single_run_manifest() +
                           "[sweep]\n"
                           "seeds = [0, 1, 2]\n"
                           "[sweep.grid]\n"
                           "\"quantizer.codes\" = [16, 32]\n";
  auto members = sweep(text, {"quantizer.metric=euclidean"});
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 6u);
  for (const auto& member : *members) EXPECT_EQ(member.spec.quantizer.params.get_string("metric"), "euclidean");

  // A swept key given with --set leaves the sweep: every member takes the --set value.
  members = sweep(text, {"quantizer.codes=8"});
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 3u);
  for (const auto& member : *members) {
    EXPECT_EQ(member.spec.quantizer.params.get_int("codes"), 8);
    EXPECT_FALSE(member.assignment.contains("quantizer.codes"));
  }
  EXPECT_EQ((*members)[2].name, "abl-seed=2");

  // --set can edit the sweep itself.
  members = sweep(text, {"sweep.seeds=[5]", "sweep.grid.\"head.temperature\"=[0.5, 0.7]"});
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 4u);
  EXPECT_EQ((*members)[3].name, "abl-quantizer.codes=32-head.temperature=0.7-seed=5");

  // Replacing a table that holds a swept key would drop part of the sweep silently.
  members = sweep(text, {"quantizer=vq"});
  ASSERT_FALSE(members.ok());
  EXPECT_NE(members.status().message().find("--set quantizer=vq overlaps the swept key 'quantizer.codes'"),
            std::string::npos) << members.status();
}

TEST_F(SweepTest, MemberNamesAreStableUniqueAndFileSystemSafe) {
  const std::string text = single_run_manifest() +
                           "[sweep.grid]\n"
                           "\"dataset.root\" = [\"x/y\", \"x_y\", \"plain dir\"]\n"
                           "\"head.temperature\" = [1e-3, 2.5]\n";
  auto first = sweep(text);
  ASSERT_TRUE(first.ok()) << first.status();
  auto second = sweep(text);
  ASSERT_TRUE(second.ok()) << second.status();
  std::set<std::string> names;
  for (size_t i = 0; i < first->size(); ++i) {
    const std::string& name = (*first)[i].name;
    EXPECT_EQ(name, (*second)[i].name);
    EXPECT_EQ(name.find_first_of("/\\:*?\"<>| "), std::string::npos) << name;
    EXPECT_EQ((*first)[i].spec.experiment.get_string("name"), name);
    names.insert(name);
  }
  EXPECT_EQ(names.size(), first->size());
  // "x/y" and "x_y" render alike: their index tells them apart.
  EXPECT_EQ((*first)[0].name, "abl-dataset.root=x_y-head.temperature=0.001-0");
  EXPECT_EQ((*first)[2].name, "abl-dataset.root=x_y-head.temperature=0.001-2");
  EXPECT_EQ((*first)[5].name, "abl-dataset.root=plain_dir-head.temperature=2.5");
  // A swept path resolves against the folder of the file that holds the sweep.
  EXPECT_EQ((*first)[0].spec.dataset.params.get_string("root"), (dir_.path() / "x/y").string());
}

TEST_F(SweepTest, ManifestWithoutSweepIsOneMember) {
  auto members = sweep(single_run_manifest());
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 1u);
  EXPECT_EQ((*members)[0].index, 0);
  EXPECT_EQ((*members)[0].name, "abl");
  EXPECT_EQ((*members)[0].assignment, nlohmann::json::object());
  EXPECT_EQ((*members)[0].spec.quantizer.params.get_int("codes"), 64);
}

TEST_F(SweepTest, MembersAreSingleRunManifests) {
  testing::write_text(dir_ / "base.toml", single_run_manifest());
  auto members = sweep("extends = \"base.toml\"\n[sweep]\nseeds = [0, 1]\n");
  ASSERT_TRUE(members.ok()) << members.status();
  ASSERT_EQ(members->size(), 2u);
  for (const auto& member : *members) {
    EXPECT_FALSE(member.spec.resolved.contains("sweep"));
    EXPECT_FALSE(member.spec.resolved.contains("extends"));
    EXPECT_EQ(member.spec.resolved["experiment"]["name"], member.name);
    EXPECT_EQ(member.spec.resolved["experiment"]["seed"], member.index);
  }
  // A single-run load refuses a sweep rather than silently running one of its members.
  auto single = load_experiment(path_, {}, testing::builtin_registry());
  ASSERT_FALSE(single.ok());
  EXPECT_EQ(std::string(single.status().message()).rfind(at(2, 2) + ": [sweep] makes this manifest a sweep", 0), 0u)
      << single.status();
}

TEST_F(SweepTest, ThirtySixMembersValidateWellUnderASecond) {
  const std::string text = single_run_manifest() +
                           "[sweep]\n"
                           "seeds = [0, 1, 2, 3]\n"
                           "[sweep.grid]\n"
                           "\"quantizer.codes\" = [16, 32, 64]\n"
                           "\"head.temperature\" = [0.05, 0.1, 0.2]\n";
  const auto start = std::chrono::steady_clock::now();
  auto members = sweep(text);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  ASSERT_TRUE(members.ok()) << members.status();
  EXPECT_EQ(members->size(), 36u);
  EXPECT_LT(seconds, 0.25);
}

}  // namespace
}  // namespace protoquant
