// Manifest validation: one test per class of error, each checking the reported file:line:column.
#include <algorithm>

#include <gtest/gtest.h>

#include "protoquant/manifest.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

// A valid manifest; tests replace one line to introduce one error.
std::string valid_manifest(const std::string& root) {
  return "[experiment]\n"                                  // 1
         "seed = 3\n"                                      // 2
         "[dataset]\n"                                     // 3
         "type = \"idx\"\n"                                // 4
         "root = \"" + root + "\"\n"                       // 5
         "[backbone]\n"                                    // 6
         "type = \"small_cnn\"\n"                          // 7
         "width = 8\n"                                     // 8
         "[quantizer]\n"                                   // 9
         "type = \"vq\"\n"                                 // 10
         "codes = 64\n"                                    // 11
         "[head]\n"                                        // 12
         "type = \"protoquant\"\n"                         // 13
         "[stages.head]\n"                                 // 14
         "epochs = 1\n";                                   // 15
}

std::string replace_line(const std::string& text, int line, const std::string& replacement) {
  std::string out;
  int current = 1;
  size_t start = 0;
  while (start < text.size()) {
    const size_t end = text.find('\n', start);
    out += (current == line ? replacement : text.substr(start, end - start)) + "\n";
    start = end + 1;
    ++current;
  }
  return out;
}

class ManifestTest : public ::testing::Test {
 protected:
  absl::StatusOr<ExperimentSpec> load(const std::string& text, const std::vector<std::string>& overrides = {}) {
    testing::write_text(path_, text);
    return load_experiment(path_, overrides, testing::builtin_registry());
  }
  // Expects exactly one error line, at line:column, containing `fragment`.
  void expect_error(const absl::StatusOr<ExperimentSpec>& result, int line, int column, const std::string& fragment) {
    ASSERT_FALSE(result.ok());
    const std::string message(result.status().message());
    EXPECT_EQ(message.find('\n'), std::string::npos) << "more than one error: " << message;
    const std::string prefix = path_.string() + ":" + std::to_string(line) + ":" + std::to_string(column) + ": ";
    EXPECT_EQ(message.rfind(prefix, 0), 0u) << message;
    EXPECT_NE(message.find(fragment), std::string::npos) << message;
  }
  testing::TempDir dir_;
  fs::path path_ = dir_ / "experiment.toml";
};

TEST_F(ManifestTest, ValidManifestResolvesDefaultsAndPaths) {
  auto spec = load(valid_manifest("data"));
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->experiment.get_int("seed"), 3);
  EXPECT_EQ(spec->experiment.get_string("name"), "experiment");  // from the file name
  EXPECT_EQ(spec->quantizer.params.get_int("codes"), 64);
  EXPECT_EQ(spec->quantizer.params.get_string("metric"), "cosine");  // default filled in
  EXPECT_EQ(spec->stages.at("head").get_int("epochs"), 1);
  EXPECT_EQ(spec->stages.at("codebook").get_float("lr"), 5e-3);  // the stage's own default
  // A relative path resolves against the manifest's folder.
  EXPECT_EQ(spec->dataset.params.get_string("root"), (dir_.path() / "data").string());
  EXPECT_EQ(spec->resolved["quantizer"]["type"], "vq");
  ASSERT_EQ(spec->metrics.size(), 1u);
  EXPECT_EQ(spec->metrics[0].type, "accuracy");
}

TEST_F(ManifestTest, MalformedToml) {
  expect_error(load(replace_line(valid_manifest("d"), 11, "codes = = 64")), 11, 9, "");
}

TEST_F(ManifestTest, UnknownKeySuggestsTheClosest) {
  expect_error(load(replace_line(valid_manifest("d"), 11, "cods = 64")), 11, 1,
               "unknown key 'cods' in [quantizer] (did you mean 'codes'?)");
}

TEST_F(ManifestTest, UnknownTable) {
  expect_error(load(valid_manifest("d") + "[quantiser]\ncodes = 1\n"), 16, 2, "did you mean 'quantizer'");
}

TEST_F(ManifestTest, WrongType) {
  expect_error(load(replace_line(valid_manifest("d"), 11, "codes = \"many\"")), 11, 9, "quantizer.codes must be int");
}

TEST_F(ManifestTest, OutOfRange) {
  expect_error(load(replace_line(valid_manifest("d"), 11, "codes = 0")), 11, 9, "below the minimum 1");
}

TEST_F(ManifestTest, BadChoice) {
  expect_error(load(replace_line(valid_manifest("d"), 11, "metric = \"cosin\"")), 11, 10,
               "did you mean \"cosine\"");
}

TEST_F(ManifestTest, UnknownPluginType) {
  expect_error(load(replace_line(valid_manifest("d"), 10, "type = \"vqq\"")), 10, 8,
               "unknown quantizer type 'vqq' (did you mean 'vq'?)");
}

TEST_F(ManifestTest, UnknownStage) {
  expect_error(load(valid_manifest("d") + "[stages.heads]\nepochs = 1\n"), 16, 9, "unknown stage 'heads'");
}

TEST_F(ManifestTest, MissingRequiredParameter) {
  auto result = load(replace_line(valid_manifest("d"), 5, ""));
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("[dataset] needs 'root'"), std::string::npos) << result.status();
}

TEST_F(ManifestTest, MissingTableNamesTheFile) {
  auto result = load(replace_line(replace_line(valid_manifest("d"), 12, ""), 13, ""));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(std::string(result.status().message()), path_.string() + ": missing [head] table");
}

TEST_F(ManifestTest, AllErrorsAreReportedTogether) {
  std::string text = replace_line(valid_manifest("d"), 8, "width = -1");
  text = replace_line(text, 11, "codes = \"x\"");
  auto result = load(text);
  ASSERT_FALSE(result.ok());
  const std::string message(result.status().message());
  EXPECT_NE(message.find(":8:9: backbone.width"), std::string::npos) << message;
  EXPECT_NE(message.find(":11:9: quantizer.codes must be int"), std::string::npos) << message;
}

TEST_F(ManifestTest, OverridesApplyAndCarryTheirOwnSource) {
  auto spec = load(valid_manifest("d"), {"quantizer.codes=128", "dataset.root=/tmp/elsewhere"});
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->quantizer.params.get_int("codes"), 128);
  EXPECT_EQ(spec->dataset.params.get_string("root"), "/tmp/elsewhere");  // bare word taken as a string

  auto bad = load(valid_manifest("d"), {"quantizer.codes=0"});
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(std::string(bad.status().message()).rfind("--set quantizer.codes=0:1:", 0), 0u) << bad.status();
  auto malformed = load(valid_manifest("d"), {"quantizer.codes"});
  EXPECT_NE(malformed.status().message().find("expected dotted.key=value"), std::string::npos);
}

TEST_F(ManifestTest, PluginsNamedInTheManifestAreLoaded) {
  const std::string plugin = std::string(PQ_TEST_PLUGIN_DIR) + "/extra_metric.so";
  auto spec = load("plugins = [\"" + plugin + "\"]\n" + valid_manifest("d") +
                   "[[metrics]]\ntype = \"class_share\"\nlabel = 2\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  ASSERT_EQ(spec->metrics.size(), 1u);
  EXPECT_EQ(spec->metrics[0].params.get_int("label"), 2);

  auto bad = load("plugins = [\"" + std::string(PQ_TEST_PLUGIN_DIR) + "/wrong_abi.so\"]\n" + valid_manifest("d"));
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find(":1:12: "), std::string::npos) << bad.status();
  EXPECT_NE(bad.status().message().find("ABI version"), std::string::npos) << bad.status();
}

TEST_F(ManifestTest, MissingManifestFile) {
  auto result = load_experiment(dir_ / "absent.toml", {}, testing::builtin_registry());
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("absent.toml: manifest not found"), std::string::npos);
}

// extends: the base's keys under the child's, each error at the file that set the key.

TEST_F(ManifestTest, ExtendsChainsMergeTablesDeeplyAndReplaceArraysWhole) {
  testing::write_text(dir_ / "grand.toml", valid_manifest("data") +
                                               "[[metrics]]\ntype = \"accuracy\"\ntop_k = 3\n"
                                               "[[metrics]]\ntype = \"accuracy\"\ntop_k = 4\n");
  testing::write_text(dir_ / "base.toml", "extends = \"grand.toml\"\n[quantizer]\ncodes = 32\n[stages.head]\nlr = 0.01\n");
  auto spec = load("extends = \"base.toml\"\n[quantizer]\nmetric = \"euclidean\"\n"
                   "[[metrics]]\ntype = \"accuracy\"\ntop_k = 2\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->quantizer.type, "vq");                                     // grand
  EXPECT_EQ(spec->quantizer.params.get_int("codes"), 32);                    // base over grand
  EXPECT_EQ(spec->quantizer.params.get_string("metric"), "euclidean");       // child
  EXPECT_EQ(spec->stages.at("head").get_int("epochs"), 1);                   // grand, beside...
  EXPECT_DOUBLE_EQ(spec->stages.at("head").get_float("lr"), 0.01);           // ...base's key of the same table
  EXPECT_EQ(spec->experiment.get_int("seed"), 3);
  EXPECT_EQ(spec->experiment.get_string("name"), "experiment");              // the child's file name
  ASSERT_EQ(spec->metrics.size(), 1u);                                       // the child's array replaces grand's
  EXPECT_EQ(spec->metrics[0].params.get_int("top_k"), 2);
  EXPECT_FALSE(spec->resolved.contains("extends"));
}

TEST_F(ManifestTest, ExtendsErrorsPointAtTheFileThatSetTheKey) {
  const fs::path base = dir_ / "base.toml";
  testing::write_text(base, replace_line(valid_manifest("d"), 11, "codes = 0"));
  auto result = load("extends = \"base.toml\"\n[backbone]\nwidth = -1\n[head]\ntempreture = 1.0\n");
  ASSERT_FALSE(result.ok());
  const std::string message(result.status().message());
  EXPECT_EQ(std::count(message.begin(), message.end(), '\n'), 2) << message;
  EXPECT_NE(message.find(path_.string() + ":3:9: backbone.width"), std::string::npos) << message;
  EXPECT_NE(message.find(base.string() + ":11:9: quantizer.codes = 0 is below the minimum 1"), std::string::npos) << message;
  EXPECT_NE(message.find(path_.string() + ":5:1: unknown key 'tempreture' in [head]"), std::string::npos) << message;

  // The child's value replaces the base's bad one.
  EXPECT_TRUE(load("extends = \"base.toml\"\n[quantizer]\ncodes = 16\n").ok());
  // A key written in both files is reported at the child's key, not the base's.
  testing::write_text(base, replace_line(valid_manifest("d"), 11, "cods = 1"));
  expect_error(load("extends = \"base.toml\"\n[quantizer]\ncods = 2\n"), 3, 1, "unknown key 'cods' in [quantizer]");
  // A syntax error in a base names the base.
  testing::write_text(base, replace_line(valid_manifest("d"), 11, "codes = = 64"));
  result = load("extends = \"base.toml\"\n");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(std::string(result.status().message()).rfind(base.string() + ":11:9: ", 0), 0u) << result.status();
}

TEST_F(ManifestTest, ExtendsResolvesPathsAgainstTheFolderOfTheFileThatSetThem) {
  fs::create_directories(dir_ / "common");
  const fs::path plugin = fs::path(PQ_TEST_PLUGIN_DIR) / "extra_metric.so";
  const fs::path plugin_from_base = fs::relative(plugin, dir_ / "common");
  testing::write_text(dir_ / "common" / "base.toml", "plugins = [\"" + plugin_from_base.string() + "\"]\n" +
                                                         valid_manifest("data") +
                                                         "[[metrics]]\ntype = \"class_share\"\nlabel = 1\n");
  auto spec = load("extends = \"common/base.toml\"\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset.params.get_string("root"), (dir_.path() / "common" / "data").string());
  ASSERT_EQ(spec->plugins.size(), 1u);
  EXPECT_TRUE(fs::equivalent(spec->plugins[0], plugin)) << spec->plugins[0];
  ASSERT_EQ(spec->metrics.size(), 1u);
  EXPECT_EQ(spec->metrics[0].type, "class_share");
  EXPECT_EQ(spec->base_dir, dir_.path());  // the manifest's own folder

  spec = load("extends = \"common/base.toml\"\n[dataset]\nroot = \"mine\"\n");
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset.params.get_string("root"), (dir_.path() / "mine").string());
}

TEST_F(ManifestTest, ExtendsCycleIsOneLineNamingTheFiles) {
  const std::string a = (dir_ / "a.toml").string();
  const std::string b = (dir_ / "b.toml").string();
  testing::write_text(a, "extends = \"b.toml\"\n");
  testing::write_text(b, "extends = \"experiment.toml\"\n");
  auto result = load("extends = \"a.toml\"\n");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(std::string(result.status().message()),
            b + ":1:11: extends: cycle: " + path_.string() + " -> " + a + " -> " + b + " -> " + path_.string());

  result = load("extends = \"experiment.toml\"\n");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(std::string(result.status().message()),
            path_.string() + ":1:11: extends: cycle: " + path_.string() + " -> " + path_.string());
}

TEST_F(ManifestTest, ExtendsMissingOrMalformedBase) {
  auto result = load("extends = \"base.toml\"\n");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(std::string(result.status().message()), path_.string() + ":1:11: extends: base.toml: cannot open");

  result = load("extends = 3\n");
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(std::string(result.status().message()).rfind(path_.string() + ":1:11: extends must be the path", 0), 0u)
      << result.status();

  result = load(valid_manifest("d"), {"extends=base.toml"});
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.status().message().find("extends can only be given in a manifest file"), std::string::npos)
      << result.status();
}

// `cd DIR && protoquant validate m.toml`: a bare file name has an empty parent path, which once
// aborted the CLI (std::filesystem::absolute("") throws). Relative paths resolve against DIR.
TEST_F(ManifestTest, ABareFileNameResolvesPathsAgainstTheWorkingFolder) {
  testing::write_text(path_, valid_manifest("fm"));
  const fs::path before = fs::current_path();
  fs::current_path(dir_.path());
  const auto spec = load_experiment(path_.filename(), {}, testing::builtin_registry());
  fs::current_path(before);
  ASSERT_TRUE(spec.ok()) << spec.status();
  EXPECT_EQ(spec->dataset.params.get_string("root"), (dir_.path() / "fm").string());
  EXPECT_EQ(spec->manifest_path, path_);
}

// A run's name becomes its folder under the output: it cannot climb out or be absolute.
TEST_F(ManifestTest, TheRunNameIsASingleFolderName) {
  for (const std::string name : {"../../x", "/tmp/x", "a/b", ".."}) {
    SCOPED_TRACE(name);
    expect_error(load(replace_line(valid_manifest("d"), 2, "name = \"" + name + "\"")), 2, 8,
                 "experiment.name '" + name + "'");
  }
  const auto plain = load(replace_line(valid_manifest("d"), 2, "name = \"..x-1.2\""));
  ASSERT_TRUE(plain.ok()) << plain.status();
  // Through --set too, which names its own source.
  const auto set = load(valid_manifest("d"), {"experiment.name=../up"});
  ASSERT_FALSE(set.ok());
  EXPECT_NE(set.status().message().find("must be a single folder name"), std::string::npos) << set.status();
}

}  // namespace
}  // namespace protoquant
