// `protoquant bench head|quantizer|backbone|loader`: micro-benchmarks beside their references (bench/).
// The benchmark code is the executable's, not the core library's (core/src/bench/).
#include <functional>
#include <memory>

#include "bench/bench.h"
#include "command.h"
#include "data_tools.h"

namespace protoquant {
namespace {

// One object holds the three, since they share the `bench` parent command.
class BenchCommands {
 public:
  explicit BenchCommands(CLI::App& app) {
    CLI::App* bench_cmd = app.add_subcommand("bench", "micro-benchmarks (see bench/ for the reference scripts)");
    bench_cmd->require_subcommand(1);
    bench_quantizer_cmd = bench_cmd->add_subcommand("quantizer", "nearest-code assignment throughput");
    bench_quantizer_cmd->add_option("--kind", quantizer_.kind, "quantizer: vq, pq, ...")->capture_default_str();
    bench_quantizer_cmd->add_option("--vectors", quantizer_.vectors, "vectors to encode")->capture_default_str()->check(positive_number());
    bench_quantizer_cmd->add_option("--dim", quantizer_.dim, "dimension D")->capture_default_str()->check(positive_number());
    bench_quantizer_cmd->add_option("--codes", quantizer_.codes, "codes K (per sub-space)")->capture_default_str()->check(positive_number());
    bench_quantizer_cmd->add_option("--subspaces", quantizer_.subspaces, "M for pq")->capture_default_str()->check(positive_number());
    bench_quantizer_cmd->add_option("--dtype", quantizer_.dtype, "fp32 (exact) or bf16 (candidates + fp32 re-rank)")
        ->capture_default_str()->check(CLI::IsMember({"fp32", "bf16"}));
    bench_quantizer_cmd->add_option("--metric", quantizer_.metric, "euclidean or cosine")
        ->capture_default_str()->check(CLI::IsMember({"euclidean", "cosine"}));
    bench_quantizer_cmd->add_option("--candidates", quantizer_.candidates, "bf16: candidates re-ranked in fp32 per vector")
        ->capture_default_str()->check(positive_number());
    bench_quantizer_cmd->add_option("--repeat", quantizer_.repeat, "timed repetitions (best kept)")->capture_default_str();
    bench_quantizer_cmd->add_option("--threads", quantizer_.threads, "CPU threads (0 = all)")->capture_default_str();
    bench_quantizer_cmd->add_option("--train-iterations", quantizer_.train_iterations, "also k-means-train and report MSE");
    bench_quantizer_cmd->add_option("--data", quantizer_.data_dir, "folder with vectors.f32 and codebook.f32");
    bench_quantizer_cmd->add_option("--codes-out", quantizer_.codes_out, "write the codes (int64, raw) here");

    head_.reference = std::string(PROTOQUANT_SOURCE_DIR) + "/bench/head_step_reference.py";
    bench_head_cmd = bench_cmd->add_subcommand("head", "stage-3 training steps per second, beside eager PyTorch");
    bench_head_cmd->add_option("--batch", head_.batch, "images per step")->capture_default_str()->check(positive_number());
    bench_head_cmd->add_option("--dim", head_.dim, "feature channels D")->capture_default_str()->check(positive_number());
    bench_head_cmd->add_option("--grid", head_.grid, "feature map side")->capture_default_str()->check(positive_number());
    bench_head_cmd->add_option("--prototypes", head_.prototypes, "prototypes P")->capture_default_str()->check(positive_number());
    bench_head_cmd->add_option("--classes", head_.classes, "classes C")->capture_default_str()->check(positive_number());
    bench_head_cmd->add_option("--dtype", head_.dtype, "head compute dtype")->capture_default_str()->check(CLI::IsMember({"fp32", "bf16"}));
    bench_head_cmd->add_option("--steps", head_.steps, "timed steps")->capture_default_str()->check(positive_number());
    bench_head_cmd->add_option("--threads", head_.threads, "CPU threads (0 = all)")->capture_default_str();
    bench_head_cmd->add_option("--reference", head_.reference, "eager-PyTorch script run beside it ('' = none)")->capture_default_str();
    backbone_.reference = std::string(PROTOQUANT_SOURCE_DIR) + "/bench/backbone_reference.py";
    bench_backbone_cmd = bench_cmd->add_subcommand(
        "backbone", "stage-0 training or feature extraction throughput and GFLOP/s, beside eager PyTorch");
    bench_backbone_cmd->add_option("--arch", backbone_.arch, "a backbone: small_cnn, resnet18, resnet50, convnext_tiny")
        ->capture_default_str();
    bench_backbone_cmd->add_option("--mode", backbone_.mode, "extract (frozen, inference) or train (stage 0's step)")
        ->capture_default_str()->check(CLI::IsMember({"train", "extract"}));
    bench_backbone_cmd->add_option("--dtype", backbone_.dtype, "fp32, or bf16 (autocast, as experiment.backbone_precision)")
        ->capture_default_str()->check(CLI::IsMember({"fp32", "bf16"}));
    bench_backbone_cmd->add_option("--batch", backbone_.batch, "images per step (0: 128 for small_cnn, 32 otherwise)")
        ->capture_default_str()->check(CLI::NonNegativeNumber);
    bench_backbone_cmd->add_option("--image-size", backbone_.image_size, "image side (0: 28 for small_cnn, 224 otherwise)")
        ->capture_default_str()->check(CLI::NonNegativeNumber);
    bench_backbone_cmd->add_option("--threads", backbone_.threads, "CPU threads (0 = all)")->capture_default_str();
    bench_backbone_cmd->add_option("--seconds", backbone_.seconds, "time each side for at least this long")
        ->capture_default_str()->check(CLI::PositiveNumber);
    bench_backbone_cmd->add_option("--reference", backbone_.reference, "eager-PyTorch script run beside it ('' = none)")
        ->capture_default_str();
    bench_loader_cmd = bench_cmd->add_subcommand("loader", "decode + random-resized-crop throughput of every image under a folder");
    bench_loader_cmd->add_option("--root", loader_.root, "folder of .jpg/.png files (searched recursively)")->required();
    bench_loader_cmd->add_option("--threads", loader_.threads, "decoding threads (0 = all)")->capture_default_str();
    bench_loader_cmd->add_option("--batch-size", loader_.batch_size, "images per batch")->capture_default_str()->check(positive_number());
    bench_loader_cmd->add_option("--size", loader_.size, "crop size")->capture_default_str()->check(positive_number());
    bench_loader_cmd->add_option("--repeat", loader_.repeat, "passes (fastest kept)")->capture_default_str()->check(positive_number());
  }

  QuantizerBenchOptions quantizer_;
  HeadBenchOptions head_;
  BackboneBenchOptions backbone_;
  LoaderBenchOptions loader_;
  CLI::App* bench_quantizer_cmd = nullptr;
  CLI::App* bench_head_cmd = nullptr;
  CLI::App* bench_backbone_cmd = nullptr;
  CLI::App* bench_loader_cmd = nullptr;
};

class BenchCommand : public Command {
 public:
  BenchCommand(CLI::App* subcommand, std::shared_ptr<BenchCommands> all,
               std::function<absl::Status(BenchCommands&, Registry&)> body)
      : Command(subcommand), all_(std::move(all)), body_(std::move(body)) {}
  absl::Status run(Registry& registry) override { return body_(*all_, registry); }

 private:
  std::shared_ptr<BenchCommands> all_;
  std::function<absl::Status(BenchCommands&, Registry&)> body_;
};

}  // namespace

std::vector<std::unique_ptr<Command>> make_bench_commands(CLI::App& app) {
  auto all = std::make_shared<BenchCommands>(app);
  std::vector<std::unique_ptr<Command>> commands;
  commands.push_back(std::make_unique<BenchCommand>(all->bench_quantizer_cmd, all, [](BenchCommands& b, Registry& r) {
    return bench_quantizer(r, b.quantizer_);
  }));
  commands.push_back(std::make_unique<BenchCommand>(all->bench_head_cmd, all, [](BenchCommands& b, Registry& r) {
    return bench_head(r, b.head_);
  }));
  commands.push_back(std::make_unique<BenchCommand>(all->bench_backbone_cmd, all, [](BenchCommands& b, Registry& r) {
    return bench_backbone(r, b.backbone_);
  }));
  commands.push_back(std::make_unique<BenchCommand>(all->bench_loader_cmd, all, [](BenchCommands& b, Registry& r) {
    return bench_loader(r, b.loader_);
  }));
  return commands;
}

}  // namespace protoquant
