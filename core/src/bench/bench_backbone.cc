#include <chrono>

#include <c10/core/InferenceMode.h>
#include <fmt/format.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/torch.h>

#include "bench.h"
#include "protoquant/batch_norm.h"
#include "protoquant/cpu_info.h"
#include "protoquant/fused_adam.h"
#include "protoquant/precision.h"
#include "protoquant/process.h"
#include "protoquant/status.h"
#include "protoquant/trainer.h"

namespace protoquant {

namespace {

// FLOPs of one call of `pass`, as the profiler counts them from the shapes of its convolutions
// and matrix products (2 per multiply-add).
uint64_t profiled_flops(const std::function<void()>& pass) {
  using namespace torch::autograd::profiler;
  enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(torch::profiler::impl::ProfilerState::CPU,
                                                             /*report_input_shapes=*/true, /*profile_memory=*/false,
                                                             /*with_stack=*/false, /*with_flops=*/true));
  pass();
  uint64_t flops = 0;
  for (auto& events : disableProfilerLegacy()) {
    for (auto& event : events) flops += event.flops();
  }
  return flops;
}

}  // namespace

absl::Status bench_backbone(Registry& registry, const BackboneBenchOptions& o) {
  return guard("bench backbone", [&]() -> absl::Status {
    const auto* entry = registry.backbones.find(o.arch);
    if (entry == nullptr) return absl::NotFoundError(fmt::format("unknown backbone '{}'", o.arch));
    PQ_ASSIGN_OR_RETURN(const Precision precision, parse_backbone_precision(o.dtype, torch::kCPU));
    const bool small = o.arch == "small_cnn";
    const int64_t batch = o.batch > 0 ? o.batch : (small ? 128 : 32);
    const int64_t size = o.image_size > 0 ? o.image_size : (small ? 28 : 224);
    const int64_t classes = small ? 10 : 1000;
    const int64_t threads = resolve_threads(o.threads);
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);
    BuildContext context;
    context.num_classes = classes;
    context.image_channels = small ? 1 : 3;
    context.image_height = size;
    context.image_width = size;
    PQ_ASSIGN_OR_RETURN(auto backbone, registry.backbones.build(o.arch, Params::defaults(entry->schema), context));
    const auto images = torch::randn({batch, context.image_channels, size, size}).contiguous(torch::MemoryFormat::ChannelsLast);
    const auto labels = torch::randint(0, classes, {batch}, torch::kInt64);
    const bool train = o.mode == "train";

    // One forward pass, as the mode runs it, counted in fp32.
    backbone->eval();
    const uint64_t forward_flops = profiled_flops([&] {
      torch::NoGradGuard no_grad;
      if (train) backbone->forward(images);
      else backbone->features(images);
    });
    const double flops_per_image = static_cast<double>(forward_flops) * (train ? 3.0 : 1.0) / static_cast<double>(batch);

    std::function<void()> step;
    std::unique_ptr<FusedAdam> optimizer;
    if (train) {
      backbone->train();
      std::vector<torch::Tensor> trainable;
      for (auto& p : backbone->parameters()) {
        if (p.requires_grad()) trainable.push_back(p);
      }
      optimizer = std::make_unique<FusedAdam>(trainable, torch::optim::AdamOptions(1e-3));
      step = [&] {
        drop_gradients(*optimizer);
        torch::Tensor logits;
        {
          AutocastScope autocast(precision, torch::kCPU);
          logits = backbone->forward(images);
        }
        cross_entropy(logits.to(torch::kFloat32), labels, 0.0).backward();
        optimizer->step();
      };
    } else {
      // As a run extracts (RunState::image_features): batch norm folded into the convolutions.
      fmt::print("batch_norm_folded: {}\n", fold_batch_norm(*backbone));
      step = [&] {
        c10::InferenceMode inference;
        AutocastScope autocast(precision, torch::kCPU);
        backbone->features(images);
      };
    }
    for (int i = 0; i < 3; ++i) step();
    int64_t done = 0;
    const auto start = std::chrono::steady_clock::now();
    double seconds = 0.0;
    while (seconds < o.seconds) {
      step();
      done += batch;
      seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    }
    const double rate = static_cast<double>(done) / seconds;
    fmt::print("cpu: {}\n", cpu_info().describe());
    fmt::print("backbone: {} {} {} batch {} image {}x{}x{} threads {}\n", o.arch, o.mode, o.dtype, batch,
               context.image_channels, size, size, threads);
    fmt::print("gflop_per_image: {:.4f} ({})\n", flops_per_image / 1e9,
               train ? "3 x the profiled forward: forward, input and weight gradients" : "the profiled forward");
    fmt::print("images_per_s: {:.2f}\n", rate);
    fmt::print("gflop_per_s: {:.1f}\n", rate * flops_per_image / 1e9);
    if (o.reference.empty()) return absl::OkStatus();
    const std::string command = fmt::format(
        "/usr/bin/python3 {} --arch {} --mode {} --dtype {} --batch {} --image-size {} --classes {} --threads {} "
        "--seconds {}",
        o.reference, o.arch, o.mode, o.dtype, batch, size, classes, threads, o.seconds);
    PQ_ASSIGN_OR_RETURN(const std::optional<double> reference, run_reference(command, "images_per_s"));
    if (!reference) return absl::OkStatus();
    fmt::print("reference_images_per_s: {:.2f}\n", *reference);
    fmt::print("reference_gflop_per_s: {:.1f}\n", *reference * flops_per_image / 1e9);
    fmt::print("ratio: {:.2f}\n", rate / *reference);
    return absl::OkStatus();
  });
}

}  // namespace protoquant
