#include <chrono>
#include <regex>

#include <fmt/format.h>
#include <torch/torch.h>

#include "bench.h"
#include "protoquant/cpu_info.h"
#include "protoquant/fused_adam.h"
#include "protoquant/process.h"
#include "protoquant/status.h"
#include "protoquant/trainer.h"

namespace protoquant {


absl::Status bench_head(Registry& registry, const HeadBenchOptions& o) {
  return guard("bench head", [&]() -> absl::Status {
    const auto* entry = registry.heads.find(o.head);
    if (entry == nullptr) return absl::NotFoundError(fmt::format("unknown head '{}'", o.head));
    const int64_t threads = resolve_threads(o.threads);
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);
    BuildContext context;
    context.num_classes = o.classes;
    context.feature_channels = o.dim;
    context.prototypes = torch::randn({o.prototypes, o.dim});
    Params params = Params::defaults(entry->schema);
    if (entry->schema.find("dtype") != nullptr) params.set("dtype", o.dtype);
    PQ_ASSIGN_OR_RETURN(auto head, registry.heads.build(o.head, params, context));
    head->train();
    const auto features = torch::rand({o.batch, o.dim, o.grid, o.grid});
    const auto labels = torch::randint(0, o.classes, {o.batch}, torch::kInt64);
    std::vector<torch::Tensor> trainable;
    for (auto& p : head->parameters()) {
      if (p.requires_grad()) trainable.push_back(p);
    }
    FusedAdam optimizer(trainable, torch::optim::AdamOptions(5e-3));  // as the trainer's step
    auto step = [&] {
      drop_gradients(optimizer);
      auto loss = cross_entropy(head->forward(features).logits, labels, 0.1);
      if (auto reg = head->regularization(); reg.defined()) loss = loss + reg;
      loss.backward();
      optimizer.step();
    };
    for (int64_t i = 0; i < o.warmup; ++i) step();
    const auto start = std::chrono::steady_clock::now();
    for (int64_t i = 0; i < o.steps; ++i) step();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = static_cast<double>(o.steps) / seconds;
    fmt::print("cpu: {}\n", cpu_info().describe());
    fmt::print("head: {} batch {} dim {} grid {}x{} prototypes {} classes {} dtype {} threads {}\n", o.head, o.batch,
               o.dim, o.grid, o.grid, o.prototypes, o.classes, o.dtype, threads);
    fmt::print("steps_per_s: {:.4f}\n", rate);
    if (o.reference.empty()) return absl::OkStatus();
    const std::string command =
        fmt::format("/usr/bin/python3 {} --batch {} --dim {} --grid {} --prototypes {} --classes {} --dtype {} "
                    "--steps {} --warmup {} --threads {}",
                    o.reference, o.batch, o.dim, o.grid, o.prototypes, o.classes, o.dtype, o.steps, o.warmup, threads);
    PQ_ASSIGN_OR_RETURN(const std::optional<double> reference, run_reference(command, "steps_per_s"));
    if (!reference) return absl::OkStatus();
    fmt::print("reference_steps_per_s: {:.4f}\n", *reference);
    fmt::print("ratio: {:.2f}\n", rate / *reference);
    // bf16 is judged against the eager fp32 step too, the baseline a user would switch from.
    if (o.dtype != "fp32") {
      PQ_ASSIGN_OR_RETURN(const std::optional<double> fp32,
                          run_reference(std::regex_replace(command, std::regex("--dtype \\w+"), "--dtype fp32"),
                                        "steps_per_s"));
      if (!fp32) return absl::OkStatus();
      fmt::print("reference_fp32_steps_per_s: {:.4f}\n", *fp32);
      fmt::print("ratio_vs_fp32_reference: {:.2f}\n", rate / *fp32);
    }
    return absl::OkStatus();
  });
}

}  // namespace protoquant
