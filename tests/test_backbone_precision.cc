// experiment.backbone_precision (precision.h): bf16 is refused on a CPU without bf16 kernels with
// the flags it read; AutocastScope runs convolutions in bf16 and restores fp32 on exit; every
// built-in backbone's bf16 features agree with its fp32 ones to bf16's rounding; and a run at
// bf16 keys, records and extracts at it.
#include <filesystem>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "protoquant/batch_norm.h"
#include "protoquant/cpu_info.h"
#include "protoquant/precision.h"
#include "test_support.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

bool cpu_has_bf16() { return check_bf16_cpu(cpu_info()).ok(); }

// A built-in backbone with its default parameters and random weights (seeded), for 3 x 64 x 64.
absl::StatusOr<std::shared_ptr<Backbone>> build_builtin(const std::string& arch, uint64_t seed) {
  const auto* entry = testing::builtin_registry().backbones.find(arch);
  if (entry == nullptr) return absl::NotFoundError("no backbone " + arch);
  BuildContext context;
  context.num_classes = 5;
  context.image_channels = 3;
  context.image_height = 64;
  context.image_width = 64;
  torch::manual_seed(seed);
  return testing::builtin_registry().backbones.build(arch, Params::defaults(entry->schema), context);
}

TEST(BackbonePrecision, Bf16IsRefusedOnACpuWithoutBf16KernelsNamingTheFlagsRead) {
  CpuInfo epyc_zen3;
  epyc_zen3.model = "AMD EPYC 7B13";
  epyc_zen3.features = {"avx2"};
  const auto refused = check_bf16_cpu(epyc_zen3);
  ASSERT_FALSE(refused.ok());
  const std::string message(refused.message());
  for (const char* part : {"AMD EPYC 7B13", "avx512_bf16", "amx_bf16", "it has: avx2", "fp32"}) {
    EXPECT_NE(message.find(part), std::string::npos) << part << " in " << message;
  }
  EXPECT_EQ(message.find('\n'), std::string::npos);
  CpuInfo zen4 = epyc_zen3;
  zen4.features = {"avx2", "avx512f", "avx512_bf16"};
  EXPECT_TRUE(check_bf16_cpu(zen4).ok());
  CpuInfo sapphire_rapids = epyc_zen3;
  sapphire_rapids.features = {"avx2", "avx512f", "amx_bf16"};
  EXPECT_TRUE(check_bf16_cpu(sapphire_rapids).ok());

  EXPECT_EQ(parse_backbone_precision("fp32", torch::kCPU).value(), Precision::kFp32);
  // auto: this CPU's answer, never an error.
  EXPECT_EQ(parse_backbone_precision("auto", torch::kCPU).value(),
            check_bf16_cpu(cpu_info()).ok() ? Precision::kBf16 : Precision::kFp32);
  EXPECT_FALSE(parse_backbone_precision("fp16", torch::kCPU).ok());
}

TEST(BackbonePrecision, AutocastScopeRunsConvolutionsInBf16AndRestoresFp32) {
  const auto x = torch::randn({2, 3, 8, 8});
  const auto w = torch::randn({4, 3, 3, 3});
  {
    AutocastScope bf16(Precision::kBf16, torch::kCPU);
    EXPECT_EQ(torch::conv2d(x, w).scalar_type(), torch::kBFloat16);
    {
      AutocastScope inner(Precision::kBf16, torch::kCPU);
      EXPECT_EQ(torch::mm(x.view({2, -1}), torch::randn({192, 5})).scalar_type(), torch::kBFloat16);
    }
    // The inner scope's end leaves the outer one in force.
    EXPECT_EQ(torch::conv2d(x, w).scalar_type(), torch::kBFloat16);
  }
  EXPECT_EQ(torch::conv2d(x, w).scalar_type(), torch::kFloat32);
  AutocastScope fp32(Precision::kFp32, torch::kCPU);
  EXPECT_EQ(torch::conv2d(x, w).scalar_type(), torch::kFloat32);
}

// bf16 keeps 8 significant bits: each convolution's inputs and weights are rounded by up to 2^-9
// relative (0.2 %), the products accumulate in fp32, and normalisation runs in fp32. Through a
// network the roundings add up roughly in quadrature over its layers, so at these depths (6 to 53
// convolutions) the features differ from fp32 by about 1 % of their largest magnitude (measured
// 0.6-1.1 % on a Xeon with AMX); 4 % leaves room for other weights and still fails a backbone that ran a layer
// wrongly (an error of the order of the features themselves).
TEST(BackbonePrecision, EveryBuiltinBackbonesBf16FeaturesAgreeWithItsFp32Ones) {
  if (!cpu_has_bf16()) GTEST_SKIP() << "this CPU has no bf16 kernels: " << cpu_info().describe();
  for (const std::string arch : {"small_cnn", "resnet18", "resnet50", "convnext_tiny"}) {
    auto built = build_builtin(arch, 3);
    ASSERT_TRUE(built.ok()) << arch << ": " << built.status();
    auto backbone = *built;
    backbone->eval();
    torch::NoGradGuard no_grad;
    const auto images = torch::randn({2, 3, 64, 64});
    const auto fp32 = backbone->features(images);
    torch::Tensor bf16;
    {
      AutocastScope autocast(Precision::kBf16, torch::kCPU);
      bf16 = backbone->features(images);
    }
    const double error = testing::relative_error(bf16.to(torch::kFloat32), fp32);
    RecordProperty(arch + "_relative_error", std::to_string(error));
    EXPECT_LT(error, 4e-2) << arch;
    EXPECT_GT(error, 0.0) << arch << ": bitwise equal, so not bf16";
  }
}

TEST(BackbonePrecision, ARunAtBf16KeysRecordsAndExtractsAtIt) {
  if (!cpu_has_bf16()) GTEST_SKIP() << "this CPU has no bf16 kernels: " << cpu_info().describe();
  testing::TempDir dir;
  const fs::path manifest = testing::tiny_manifest(dir, "synthparts.toml", "bf16_run");
  const std::string store = " --store " + (dir / "store").string() + " --db " + (dir / "results.db").string();
  const auto fp32 = testing::run_cli("run " + manifest.string() + " --out " + (dir / "fp32").string() + store);
  ASSERT_EQ(fp32.exit_code, 0) << fp32.output;
  const auto bf16 = testing::run_cli("run " + manifest.string() + " --out " + (dir / "bf16").string() + store +
                                     " --set experiment.backbone_precision=bf16");
  ASSERT_EQ(bf16.exit_code, 0) << bf16.output;
  // Its own black box and features (nothing reused from the fp32 run), then the same stages.
  EXPECT_EQ(bf16.output.find("[blackbox] reused"), std::string::npos) << bf16.output;
  const nlohmann::json a = testing::results_of(dir / "fp32"), b = testing::results_of(dir / "bf16");
  EXPECT_EQ(a["environment"]["backbone_precision"], "fp32");
  EXPECT_EQ(b["environment"]["backbone_precision"], "bf16");
  EXPECT_EQ(b["stages"]["features"]["backbone_precision"], "bf16");
  // The small CNN's six conv-BN pairs were folded for extraction, in both runs.
  EXPECT_EQ(a["stages"]["features"]["batch_norm_folded"], 6);
  EXPECT_EQ(b["stages"]["features"]["batch_norm_folded"], 6);
  EXPECT_NE(a["stages"]["blackbox"]["key"], b["stages"]["blackbox"]["key"]);
  // The key inputs name the precision only when it is not fp32: fp32 keys are those of before.
  size_t with_precision = 0, without = 0;
  for (const auto& entry : fs::directory_iterator(dir / "store" / "blackbox")) {
    if (!entry.is_directory()) continue;
    const auto artifact = nlohmann::json::parse(testing::read_text(entry.path() / "artifact.json"));
    const nlohmann::json& inputs = artifact["inputs"];
    if (inputs.contains("precision")) {
      EXPECT_EQ(inputs["precision"], "bf16");
      ++with_precision;
    } else {
      ++without;
    }
  }
  EXPECT_EQ(with_precision, 1u);
  EXPECT_EQ(without, 1u);
  // A rerun at bf16 reuses every stage.
  const auto again = testing::run_cli("run " + manifest.string() + " --out " + (dir / "again").string() + store +
                                      " --set experiment.backbone_precision=bf16");
  ASSERT_EQ(again.exit_code, 0) << again.output;
  EXPECT_NE(again.output.find("[head] reused"), std::string::npos) << again.output;
}


// Folding each conv-BN pair into the convolution (frozen extraction) changes the features by
// fp32 rounding only: every built-in backbone with batch norm, with random running statistics
// and affine parameters so that no fold is trivial.
TEST(BatchNormFolding, EveryBuiltinBackboneGivesItsFeaturesToFp32RoundingFolded) {
  for (const auto& [arch, pairs] : {std::pair<std::string, int>{"small_cnn", 6}, {"resnet18", 20}, {"resnet50", 53}}) {
    auto built = build_builtin(arch, 4);
    ASSERT_TRUE(built.ok()) << arch << ": " << built.status();
    auto backbone = *built;
    torch::NoGradGuard no_grad;
    for (const auto& module : backbone->modules()) {
      if (auto* bn = dynamic_cast<BatchNorm2dImpl*>(module.get()); bn != nullptr) {
        bn->running_mean.normal_(0.0, 0.3);
        bn->running_var.uniform_(0.5, 2.0);
        bn->weight.uniform_(0.5, 1.5);
        bn->bias.normal_(0.0, 0.2);
      }
    }
    backbone->eval();
    const auto images = torch::randn({2, 3, 64, 64});
    const auto unfolded = backbone->features(images);
    EXPECT_EQ(foldable_batch_norms(*backbone), pairs) << arch;
    EXPECT_EQ(fold_batch_norm(*backbone), pairs) << arch;
    EXPECT_EQ(foldable_batch_norms(*backbone), 0) << arch << ": folded twice";
    const double error = testing::relative_error(backbone->features(images), unfolded);
    EXPECT_LT(error, 1e-5) << arch;
  }
  // Only a batch norm right after its convolution is folded.
  torch::nn::Sequential apart(torch::nn::Conv2d(3, 4, 3), torch::nn::ReLU(), BatchNorm2d(4));
  EXPECT_EQ(foldable_batch_norms(*apart), 0);
}

double printed(const std::string& output, const std::string& name) {
  const auto at = output.find(name + ": ");
  if (at == std::string::npos) return -1.0;
  return std::stod(output.substr(at + name.size() + 2));
}

// `protoquant bench backbone` counts FLOPs from the layers the profiler sees; for the small CNN
// they are written out here from its architecture: six 3x3 convolutions (1 -> w -> w at 28 px,
// w -> 2w -> 2w at 14 px, 2w -> 4w -> 4w at 7 px) and the 4w -> 10 linear head, 2 FLOPs per
// multiply-add; a training step counts three passes.
TEST(BenchBackbone, CountsTheSmallCnnsFlopsFromItsLayersAndTimesBothPrecisions) {
  const double w = 32;  // the small CNN's default width
  const double convolution_macs = 28 * 28 * 9 * (1 * w + w * w) + 14 * 14 * 9 * (w * 2 * w + 2 * w * 2 * w) +
                                  7 * 7 * 9 * (2 * w * 4 * w + 4 * w * 4 * w);
  const double extract = 2 * convolution_macs, train = 3 * (2 * convolution_macs + 2 * 4 * w * 10);
  for (const std::string mode : {"extract", "train"}) {
    const auto run = testing::run_cli("bench backbone --arch small_cnn --mode " + mode +
                                      " --batch 16 --threads 1 --seconds 0.2 --reference ''");
    ASSERT_EQ(run.exit_code, 0) << run.output;
    EXPECT_NEAR(printed(run.output, "gflop_per_image") * 1e9, mode == "train" ? train : extract, 1e5) << run.output;
    EXPECT_GT(printed(run.output, "images_per_s"), 0.0) << run.output;
  }
  if (!cpu_has_bf16()) return;
  const auto bf16 = testing::run_cli("bench backbone --arch small_cnn --mode extract --dtype bf16 --batch 16 --threads 1 "
                                     "--seconds 0.2 --reference ''");
  ASSERT_EQ(bf16.exit_code, 0) << bf16.output;
  EXPECT_NE(bf16.output.find("small_cnn extract bf16"), std::string::npos) << bf16.output;
  const auto unknown = testing::run_cli("bench backbone --arch vgg16 --seconds 0.2 --reference ''");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.output.find("unknown backbone 'vgg16'"), std::string::npos) << unknown.output;
}

}  // namespace
}  // namespace protoquant
