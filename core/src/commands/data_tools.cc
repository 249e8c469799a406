#include "data_tools.h"
#include "protoquant/cpu_info.h"

#include <chrono>
#include <filesystem>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

#include "protoquant/process.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

// "a, b, c, ... (N in all)" for long name lists.
std::string name_list(const std::vector<std::string>& names, size_t shown) {
  if (names.size() <= shown) return fmt::format("{}", fmt::join(names, ", "));
  return fmt::format("{}, ... ({} in all)", fmt::join(names.begin(), names.begin() + static_cast<ptrdiff_t>(shown), ", "),
                     names.size());
}

}  // namespace

absl::StatusOr<std::shared_ptr<Dataset>> open_dataset(const ExperimentSpec& spec, Registry& registry) {
  BuildContext context;
  context.seed = static_cast<uint64_t>(spec.experiment.get_int("seed"));
  context.base_dir = spec.base_dir.string();
  return registry.datasets.build(spec.dataset.type, spec.dataset.params, context);
}

absl::Status print_data_summary(const ExperimentSpec& spec, Dataset& data) {
  Dataset* dataset = &data;
  const DatasetInfo& info = dataset->info();
  fmt::print("dataset: {} ({})\n", info.name, spec.dataset.type);
  fmt::print("images: {} x {} x {} (C x H x W, after the transform)\n", info.channels, info.height, info.width);
  fmt::print("classes: {} ({})\n", info.num_classes, name_list(info.class_names, 8));
  int64_t total = 0;
  for (const auto& split : info.splits) {
    fmt::print("split {}: {} samples\n", split, dataset->size(split));
    total += dataset->size(split);
  }
  fmt::print("samples: {}\n", total);
  fmt::print("parts: {}\n", info.has_parts ? fmt::format("yes, {} ({})", info.part_names.size(), name_list(info.part_names, 15))
                                          : std::string("no"));
  fmt::print("boxes: {}\n", info.has_boxes ? "yes" : "no");
  fmt::print("skipped: {} bad samples\n", info.skipped.size());
  for (const auto& bad : info.skipped) fmt::print("  {} {}: {}\n", bad.split, bad.file, bad.reason);
  return absl::OkStatus();
}

absl::Status bench_loader(Registry& registry, const LoaderBenchOptions& o) {
  return guard("bench loader", [&]() -> absl::Status {
    const auto* entry = registry.datasets.find("image_folder");
    if (entry == nullptr) return absl::NotFoundError("bench loader needs the image_folder dataset plugin");
    Params params = Params::defaults(entry->schema);
    params.set("root", fs::absolute(o.root).string());
    params.set("layout", std::string("files"));
    params.set("train_transform", std::vector<std::string>{fmt::format("random_resized_crop:{}", o.size), "hflip"});
    params.set("eval_transform", std::vector<std::string>{fmt::format("center_crop:{}", o.size)});
    params.set("threads", o.threads);
    PQ_ASSIGN_OR_RETURN(std::shared_ptr<Dataset> dataset, registry.datasets.build("image_folder", params, {}));
    const int64_t n = dataset->size("train");
    const int64_t threads = resolve_threads(o.threads);
    double best = 0;
    for (int64_t pass = 0; pass < std::max<int64_t>(1, o.repeat); ++pass) {
      // A shuffled order, as in training; the next batch is prefetched as the trainer does.
      auto generator = at::detail::createCPUGenerator(static_cast<uint64_t>(pass));
      const auto order = torch::randperm(n, generator, torch::kInt64);
      const auto start = std::chrono::steady_clock::now();
      int64_t images = 0;
      for (int64_t begin = 0; begin < n; begin += o.batch_size) {
        const int64_t end = std::min(n, begin + o.batch_size);
        if (end < n) dataset->prefetch("train", order.slice(0, end, std::min(n, end + o.batch_size)), true);
        PQ_ASSIGN_OR_RETURN(Batch batch, dataset->get_batch("train", order.slice(0, begin, end)));
        images += batch.images.size(0);
      }
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      fmt::print("pass {}: {} images in {:.3f} s\n", pass + 1, images, seconds);
      best = std::max(best, static_cast<double>(images) / seconds);
    }
    fmt::print("cpu: {}\n", cpu_info().describe());
    fmt::print("images: {}\nthreads: {}\nbatch_size: {}\nimages_per_s: {:.1f}\n", n, threads, o.batch_size, best);
    return absl::OkStatus();
  });
}

}  // namespace protoquant
