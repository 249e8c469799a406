// The `protoquant` command line: plugins, describe, validate, run, data, bench.
#include <cstdio>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "commands/results_commands.h"
#include "protoquant/bench.h"
#include "protoquant/build_info.h"
#include "protoquant/cpu_info.h"
#include "protoquant/edit.h"
#include "protoquant/data_tools.h"
#include "protoquant/manifest.h"
#include "protoquant/plugin_loader.h"
#include "protoquant/process.h"
#include "protoquant/registry.h"
#include "protoquant/runner.h"
#include "protoquant/sweep.h"
#include "protoquant/sweep_runner.h"

namespace pq = protoquant;

namespace {

// Every error line goes to stderr prefixed "error: " (one line per problem), exit code 1.
int fail(const absl::Status& status) {
  std::string message(status.message());
  size_t start = 0;
  while (start < message.size()) {
    size_t end = message.find('\n', start);
    if (end == std::string::npos) end = message.size();
    fmt::print(stderr, "error: {}\n", message.substr(start, end - start));
    start = end + 1;
  }
  return 1;
}

std::string describe_range(const pq::ParamSpec& spec) {
  if (!spec.choices.empty()) return fmt::format("{}", fmt::join(spec.choices, "|"));
  if (spec.minimum && spec.maximum) return fmt::format("[{}, {}]", *spec.minimum, *spec.maximum);
  if (spec.minimum) return fmt::format(">= {}", *spec.minimum);
  if (spec.maximum) return fmt::format("<= {}", *spec.maximum);
  return "";
}

void print_schema(const pq::ParamSchema& schema) {
  for (const auto& spec : schema.specs()) {
    fmt::print("  {:<18} {:<14} {:<14} {:<18} {}\n", spec.name, pq::to_string(spec.type),
               spec.required ? "(required)" : pq::format_value(spec.default_value), describe_range(spec), spec.doc);
  }
}

int list_plugins(const pq::Registry& registry) {
  for (const auto& kind : pq::Registry::kinds()) {
    fmt::print("{}s:\n", kind);
    for (const auto& entry : registry.entries(kind)) {
      fmt::print("  {:<16} {}  [{}]\n", entry.name, entry.summary, entry.library);
    }
  }
  return 0;
}

int describe(const pq::Registry& registry, const std::string& name) {
  auto found = registry.find_any(name);
  if (found.empty()) {
    std::vector<std::string> all;
    for (const auto& kind : pq::Registry::kinds())
      for (const auto& n : registry.names(kind)) all.push_back(n);
    const std::string hint = pq::closest_match(name, all);
    return fail(absl::NotFoundError(fmt::format("no component named '{}'{}", name,
                                                hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint))));
  }
  for (const auto& entry : found) {
    fmt::print("{} '{}': {}\n  library: {}\n", entry.kind, entry.name, entry.summary, entry.library);
    fmt::print("  {:<18} {:<14} {:<14} {:<18} {}\n", "parameter", "type", "default", "range", "doc");
    print_schema(*entry.schema);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"ProtoQuant: interpretable image classification with quantized prototypical parts"};
  app.require_subcommand(1);
  // The line every benchmark script prints first: which build, on which CPU.
  app.set_version_flag("--version", std::function<std::string()>([] {
    return fmt::format("protoquant {} (commit {}, LibTorch {})\ncpu: {}", protoquant::toolkit_version(),
                       protoquant::toolkit_commit(), TORCH_VERSION, protoquant::cpu_info().describe());
  }));
  std::vector<std::string> extra_plugins;
  app.add_option("--plugin", extra_plugins, "load this plugin library too (repeatable)");

  auto* plugins_cmd = app.add_subcommand("plugins", "list every loaded component, by kind, with its library");
  std::string describe_name;
  auto* describe_cmd = app.add_subcommand("describe", "print a component's parameters");
  describe_cmd->add_option("name", describe_name, "component name, e.g. vq")->required();

  std::string manifest;
  std::vector<std::string> overrides;
  std::string out_dir;
  auto* validate_cmd = app.add_subcommand("validate", "check a manifest without running it");
  validate_cmd->add_option("manifest", manifest, "experiment manifest (TOML)")->required();
  validate_cmd->add_option("--set", overrides, "override a manifest value: dotted.key=value");
  auto* run_cmd = app.add_subcommand("run", "run an experiment end to end");
  run_cmd->add_option("manifest", manifest, "experiment manifest (TOML)")->required();
  run_cmd->add_option("--set", overrides, "override a manifest value: dotted.key=value");
  run_cmd->add_option("--out", out_dir, "run folder (default: <experiment.output>/<name>-<time>)");
  bool resume = false;
  run_cmd->add_flag("--resume", resume, "run again in the earlier run folder --out: filed stages are reused, an "
                                        "interrupted one continues from its last epoch");
  pq::ManifestRunOptions run_options;
  std::string store_dir, db_file;
  run_cmd->add_option("--store", store_dir, "artifact store (default: experiment.store, else <base>/store)");
  run_cmd->add_option("--db", db_file, "results store (default: <base>/results.db)");
  run_cmd->add_option("--force", run_options.settings.force, "recompute this stage and every stage after it")
      ->check(CLI::IsMember({"blackbox", "codebook", "prune", "head"}));
  run_cmd->add_option("--jobs", run_options.jobs, "sweep members side by side (jobs x threads <= cores)")
      ->check(CLI::PositiveNumber);
  run_cmd->add_flag("--dry-run", run_options.dry_run, "print the plan (per member: reused, shared or computed stages) only");
  run_cmd->add_option("--member", run_options.member, "run one sweep member only (used by --jobs)")->group("");

  pq::EditOptions edit;
  std::string edit_dir;
  std::vector<std::string> zero_weights;
  int64_t limit_k = 0;
  auto* edit_cmd = app.add_subcommand("edit", "edit a finished run's head; writes <run>/edits/<name>/");
  edit_cmd->add_option("run_dir", edit_dir, "run folder")->required();
  edit_cmd->add_option("--limit-k", limit_k, "keep the k highest-weighted prototypes per class")->check(CLI::PositiveNumber);
  edit_cmd->add_flag("--prune-inactive", edit.prune_inactive, "delete prototypes that no class uses");
  edit_cmd->add_option("--threshold", edit.threshold, "a class uses a prototype when its weight is above this")
      ->capture_default_str()->check(CLI::NonNegativeNumber);
  edit_cmd->add_flag("--renormalize", edit.renormalize,
                     "with --prune-inactive: drop pruned prototypes from the softmax too (cheaper, predictions may change)");
  edit_cmd->add_option("--disable-prototype", edit.disable_prototypes, "zero prototype P for every class (repeatable)");
  edit_cmd->add_option("--zero-weight", zero_weights, "zero the weight of prototype P for CLASS: CLASS:P (repeatable)");
  edit_cmd->add_option("--name", edit.name, "edit folder name (default: derived from the edits)");

  auto* data_cmd = app.add_subcommand("data", "load the manifest's dataset and summarise it (splits, annotations, bad samples)");
  data_cmd->add_option("manifest", manifest, "experiment manifest (TOML)")->required();
  data_cmd->add_option("--set", overrides, "override a manifest value: dotted.key=value");

  pq::ResultsCommands results_commands(app);  // runs, leaderboard: the results store

  auto* bench_cmd = app.add_subcommand("bench", "micro-benchmarks (see bench/ for the reference scripts)");
  bench_cmd->require_subcommand(1);
  pq::QuantizerBenchOptions qb;
  auto* bench_quantizer_cmd = bench_cmd->add_subcommand("quantizer", "nearest-code assignment throughput");
  bench_quantizer_cmd->add_option("--kind", qb.kind, "quantizer: vq, pq, ...")->capture_default_str();
  bench_quantizer_cmd->add_option("--vectors", qb.vectors, "vectors to encode")->capture_default_str()->check(CLI::PositiveNumber);
  bench_quantizer_cmd->add_option("--dim", qb.dim, "dimension D")->capture_default_str()->check(CLI::PositiveNumber);
  bench_quantizer_cmd->add_option("--codes", qb.codes, "codes K (per sub-space)")->capture_default_str()->check(CLI::PositiveNumber);
  bench_quantizer_cmd->add_option("--subspaces", qb.subspaces, "M for pq")->capture_default_str()->check(CLI::PositiveNumber);
  bench_quantizer_cmd->add_option("--dtype", qb.dtype, "fp32 (exact) or bf16 (candidates + fp32 re-rank)")
      ->capture_default_str()->check(CLI::IsMember({"fp32", "bf16"}));
  bench_quantizer_cmd->add_option("--metric", qb.metric, "euclidean or cosine")
      ->capture_default_str()->check(CLI::IsMember({"euclidean", "cosine"}));
  bench_quantizer_cmd->add_option("--candidates", qb.candidates, "bf16: candidates re-ranked in fp32 per vector")
      ->capture_default_str()->check(CLI::PositiveNumber);
  bench_quantizer_cmd->add_option("--repeat", qb.repeat, "timed repetitions (best kept)")->capture_default_str();
  bench_quantizer_cmd->add_option("--threads", qb.threads, "CPU threads (0 = all)")->capture_default_str();
  bench_quantizer_cmd->add_option("--train-iterations", qb.train_iterations, "also k-means-train and report MSE");
  bench_quantizer_cmd->add_option("--data", qb.data_dir, "folder with vectors.f32 and codebook.f32");
  bench_quantizer_cmd->add_option("--codes-out", qb.codes_out, "write the codes (int64, raw) here");

  pq::HeadBenchOptions hb;
  hb.reference = std::string(PROTOQUANT_SOURCE_DIR) + "/bench/head_step_reference.py";
  auto* bench_head_cmd = bench_cmd->add_subcommand("head", "stage-3 training steps per second, beside eager PyTorch");
  bench_head_cmd->add_option("--batch", hb.batch, "images per step")->capture_default_str()->check(CLI::PositiveNumber);
  bench_head_cmd->add_option("--dim", hb.dim, "feature channels D")->capture_default_str()->check(CLI::PositiveNumber);
  bench_head_cmd->add_option("--grid", hb.grid, "feature map side")->capture_default_str()->check(CLI::PositiveNumber);
  bench_head_cmd->add_option("--prototypes", hb.prototypes, "prototypes P")->capture_default_str()->check(CLI::PositiveNumber);
  bench_head_cmd->add_option("--classes", hb.classes, "classes C")->capture_default_str()->check(CLI::PositiveNumber);
  bench_head_cmd->add_option("--dtype", hb.dtype, "head compute dtype")->capture_default_str()->check(CLI::IsMember({"fp32", "bf16"}));
  bench_head_cmd->add_option("--steps", hb.steps, "timed steps")->capture_default_str()->check(CLI::PositiveNumber);
  bench_head_cmd->add_option("--threads", hb.threads, "CPU threads (0 = all)")->capture_default_str();
  bench_head_cmd->add_option("--reference", hb.reference, "eager-PyTorch script run beside it ('' = none)")->capture_default_str();
  pq::LoaderBenchOptions lb;
  auto* bench_loader_cmd = bench_cmd->add_subcommand("loader", "decode + random-resized-crop throughput of every image under a folder");
  bench_loader_cmd->add_option("--root", lb.root, "folder of .jpg/.png files (searched recursively)")->required();
  bench_loader_cmd->add_option("--threads", lb.threads, "decoding threads (0 = all)")->capture_default_str();
  bench_loader_cmd->add_option("--batch-size", lb.batch_size, "images per batch")->capture_default_str()->check(CLI::PositiveNumber);
  bench_loader_cmd->add_option("--size", lb.size, "crop size")->capture_default_str()->check(CLI::PositiveNumber);
  bench_loader_cmd->add_option("--repeat", lb.repeat, "passes (fastest kept)")->capture_default_str()->check(CLI::PositiveNumber);

  CLI11_PARSE(app, argc, argv);
  // The results store needs no plugins: these commands answer before any are loaded.
  if (results_commands.selected()) {
    const absl::Status status = results_commands.run();
    return status.ok() ? 0 : fail(status);
  }
  pq::tune_allocator();

  pq::Registry registry;
  if (auto status = pq::load_default_plugins(registry); !status.ok()) return fail(status);
  for (const auto& library : extra_plugins) {
    if (auto status = pq::load_plugin(library, registry); !status.ok()) return fail(status);
  }

  if (*plugins_cmd) return list_plugins(registry);
  if (*edit_cmd) {
    if (limit_k > 0) edit.limit_k = limit_k;
    for (const auto& text : zero_weights) {
      auto pair = pq::parse_class_prototype(text);
      if (!pair.ok()) return fail(pair.status());
      edit.zero_weights.push_back(*pair);
    }
    auto record = pq::edit_run(edit_dir, edit, registry);
    if (!record.ok()) return fail(record.status());
    const auto& before = (*record)["before"];
    const auto& after = (*record)["after"];
    fmt::print("{:<10} {:>9} {:>11} {:>12} {:>11}\n", "", "accuracy", "local size", "global size", "prototypes");
    for (const auto* row : {&before, &after}) {
      fmt::print("{:<10} {:>9.4f} {:>11.2f} {:>12} {:>11}\n", row == &before ? "before" : "after",
                 (*row)["accuracy"].get<double>(), (*row)["local_size"].get<double>(),
                 (*row)["global_size"].get<int64_t>(), (*row)["prototypes"].get<int64_t>());
    }
    fmt::print("edited model: {}\n", (*record)["folder"].get<std::string>());
    return 0;
  }
  if (*describe_cmd) return describe(registry, describe_name);
  if (*bench_head_cmd) {
    if (auto status = pq::bench_head(registry, hb); !status.ok()) return fail(status);
    return 0;
  }
  if (*bench_quantizer_cmd) {
    if (auto status = pq::bench_quantizer(registry, qb); !status.ok()) return fail(status);
    return 0;
  }

  if (*bench_loader_cmd) {
    if (auto status = pq::bench_loader(registry, lb); !status.ok()) return fail(status);
    return 0;
  }

  if (*run_cmd) {
    run_options.out_dir = out_dir;
    run_options.resume = resume;
    run_options.settings.store = store_dir;
    run_options.db = db_file;
    run_options.plugins = extra_plugins;
    if (auto status = pq::run_manifest(manifest, overrides, registry, run_options); !status.ok()) return fail(status);
    return 0;
  }
  if (*validate_cmd) {
    auto members = pq::load_sweep(manifest, overrides, registry);
    if (!members.ok()) return fail(members.status());
    const auto& first = members->front().spec;
    fmt::print("{}: ok ({} {}, {} {}, {} {}, {} {}{})\n", manifest, "dataset", first.dataset.type, "backbone",
               first.backbone.type, "quantizer", first.quantizer.type, "head", first.head.type,
               members->size() > 1 || !members->front().assignment.empty()
                   ? fmt::format("; a sweep of {} members", members->size())
                   : "");
    return 0;
  }
  auto spec = pq::load_experiment(manifest, overrides, registry);
  if (!spec.ok()) return fail(spec.status());
  if (*data_cmd) {
    if (auto status = pq::print_data_summary(*spec, registry); !status.ok()) return fail(status);
    return 0;
  }
  return 0;
}
