#include <gtest/gtest.h>

#include <new>

#include <fmt/format.h>

#include "protoquant/plugin.h"
#include "protoquant/plugin_loader.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;
const fs::path kTestPlugins = PQ_TEST_PLUGIN_DIR;

TEST(PluginLoading, BuiltinsRegisterEveryKind) {
  Registry& registry = testing::builtin_registry();
  EXPECT_NE(registry.backbones.find("small_cnn"), nullptr);
  EXPECT_NE(registry.quantizers.find("vq"), nullptr);
  EXPECT_NE(registry.heads.find("protoquant"), nullptr);
  EXPECT_NE(registry.datasets.find("idx"), nullptr);
  EXPECT_NE(registry.metrics.find("accuracy"), nullptr);
  // Each entry knows the library it came from.
  EXPECT_NE(registry.quantizers.find("vq")->library.find("protoquant_quantizers.so"), std::string::npos);
}

TEST(PluginLoading, WrongAbiVersionIsRefusedWithTheFileName) {
  Registry registry;
  const fs::path library = kTestPlugins / "wrong_abi.so";
  const absl::Status status = load_plugin(library, registry);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_NE(status.message().find(library.string()), std::string::npos) << status;
  // tests/plugins/wrong_abi.cc declares kPluginAbiVersion + 41.
  EXPECT_NE(status.message().find("ABI version " + std::to_string(kPluginAbiVersion + 41)), std::string::npos) << status;
}

TEST(PluginLoading, ABuildAgainstAnotherLibTorchIsRefusedNamingBoth) {
  Registry registry;
  const fs::path library = kTestPlugins / "wrong_torch.so";
  const absl::Status status = load_plugin(library, registry);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  const std::string message(status.message());
  EXPECT_NE(message.find(library.string()), std::string::npos) << status;
  EXPECT_NE(message.find("built against torch 0.0.1"), std::string::npos) << status;
  EXPECT_NE(message.find(fmt::format("uses torch {}.{}.{}", TORCH_VERSION_MAJOR, TORCH_VERSION_MINOR, TORCH_VERSION_PATCH)),
            std::string::npos)
      << status;
  EXPECT_EQ(message.find('\n'), std::string::npos) << "one line";
}

TEST(PluginLoading, BuildRecordsAreComparedFieldByField) {
  const std::string ours = PROTOQUANT_BUILD_RECORD;
  EXPECT_FALSE(build_record_mismatch(ours, ours).has_value());
  EXPECT_NE(ours.find("sdk=" + std::to_string(kPluginAbiVersion)), std::string::npos) << ours;
  const auto compiler = build_record_mismatch("sdk=8 torch=1.13.0 compiler=clang-99 cxx11_abi=1",
                                              "sdk=8 torch=1.13.0 compiler=gcc-12 cxx11_abi=1");
  ASSERT_TRUE(compiler.has_value());
  EXPECT_EQ(compiler->first, "compiler clang-99");
  EXPECT_EQ(compiler->second, "uses compiler gcc-12");
  const auto abi = build_record_mismatch("sdk=8 torch=1.13.0 compiler=gcc-12 cxx11_abi=0",
                                         "sdk=8 torch=1.13.0 compiler=gcc-12 cxx11_abi=1");
  ASSERT_TRUE(abi.has_value());
  EXPECT_EQ(abi->first, "cxx11_abi 0");
  const auto missing = build_record_mismatch("sdk=8", "sdk=8 torch=1.13.0");
  ASSERT_TRUE(missing.has_value());
  EXPECT_EQ(missing->first, "torch (none)");
}

TEST(PluginLoading, LibraryWithoutEntryPointsIsRefused) {
  Registry registry;
  const fs::path library = kTestPlugins / "no_symbols.so";
  const absl::Status status = load_plugin(library, registry);
  EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(status.message().find("missing symbol 'protoquant_abi_version'"), std::string::npos) << status;
  EXPECT_NE(status.message().find("no_symbols.so"), std::string::npos) << status;
}

TEST(PluginLoading, MissingFileAndNonLibraryAreClearErrors) {
  Registry registry;
  EXPECT_EQ(load_plugin(kTestPlugins / "absent.so", registry).code(), absl::StatusCode::kNotFound);
  testing::TempDir dir;
  testing::write_text(dir / "fake.so", "this is not an ELF file");
  const absl::Status status = load_plugin(dir / "fake.so", registry);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message().find("fake.so: cannot load plugin"), std::string::npos) << status;
  EXPECT_EQ(status.message().find("Bad file descriptor"), std::string::npos) << status;
  EXPECT_NE(status.message().find("file too short"), std::string::npos) << status;  // dlopen's own words
  // An executable is an ELF file but no library: the dynamic loader's own reason is shown.
  const absl::Status program = load_plugin("/bin/ls", registry);
  EXPECT_NE(program.message().find("cannot load plugin: "), std::string::npos) << program;
  EXPECT_EQ(program.message().find("Bad file descriptor"), std::string::npos) << program;
}

TEST(PluginLoading, NameRegisteredTwiceNamesBothLibraries) {
  Registry registry;
  ASSERT_TRUE(load_plugin(fs::path(PQ_BUILTIN_PLUGIN_DIR) / "protoquant_backbones.so", registry).ok());
  const absl::Status status = load_plugin(kTestPlugins / "duplicate_name.so", registry);
  EXPECT_EQ(status.code(), absl::StatusCode::kAlreadyExists);
  EXPECT_NE(status.message().find("protoquant_backbones.so"), std::string::npos) << status;
  EXPECT_NE(status.message().find("duplicate_name.so"), std::string::npos) << status;
}

TEST(PluginLoading, LoadingTheSameLibraryTwiceIsHarmless) {
  Registry registry;
  const fs::path library = kTestPlugins / "extra_metric.so";
  ASSERT_TRUE(load_plugin(library, registry).ok());
  ASSERT_TRUE(load_plugin(library, registry).ok());
  EXPECT_EQ(registry.metrics.names(), std::vector<std::string>{"class_share"});
}

TEST(PluginLoading, ANewRegistryAtAFreedOnesAddressLoadsItsPlugins) {
  // Placement-new puts the second registry exactly where the first was: a loader that remembered
  // (registry address, library) pairs would skip the library for the second one.
  alignas(Registry) unsigned char storage[sizeof(Registry)];
  const fs::path library = kTestPlugins / "extra_metric.so";
  auto* first = new (storage) Registry();
  ASSERT_TRUE(load_plugin(library, *first).ok());
  ASSERT_EQ(first->metrics.names(), std::vector<std::string>{"class_share"});
  first->~Registry();
  auto* second = new (storage) Registry();
  ASSERT_EQ(static_cast<void*>(second), static_cast<void*>(first));
  ASSERT_TRUE(load_plugin(library, *second).ok());
  EXPECT_EQ(second->metrics.names(), std::vector<std::string>{"class_share"});
  second->~Registry();
}

TEST(Registry, BuildUnknownNameSuggestsAndBuildErrorsBecomeStatus) {
  Registry& registry = testing::builtin_registry();
  auto missing = registry.quantizers.build("vqq", {}, {});
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("did you mean 'vq'"), std::string::npos);
  // The factory refuses a context without the backbone's channel count.
  auto built = registry.quantizers.build("vq", Params::defaults(registry.quantizers.find("vq")->schema), {});
  EXPECT_FALSE(built.ok());
  EXPECT_NE(built.status().message().find("channel"), std::string::npos) << built.status();
}

}  // namespace
}  // namespace protoquant
