#include "protoquant/trainer.h"

#include <csignal>
#include <cmath>
#include <cstdlib>

#include <ATen/CPUGeneratorImpl.h>
#include <absl/strings/match.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include "protoquant/batch_mixing.h"
#include "protoquant/checkpoint.h"
#include "protoquant/fused_adam.h"
#include "protoquant/host_memory.h"
#include "protoquant/process_group.h"
#include "protoquant/progress.h"
#include "protoquant/status.h"

namespace protoquant {

TrainSettings TrainSettings::from(const Params& p) {
  TrainSettings s;
  s.epochs = p.get_int("epochs");
  s.batch_size = p.get_int("batch_size");
  s.eval_batch_size = p.get_int("eval_batch_size");
  s.optimizer = p.get_string("optimizer");
  s.lr = p.get_float("lr");
  s.weight_decay = p.get_float("weight_decay");
  s.momentum = p.get_float("momentum");
  s.schedule = p.get_string("schedule");
  s.warmup_epochs = p.get_float("warmup_epochs");
  s.label_smoothing = p.get_float("label_smoothing");
  s.mixup = p.get_float("mixup");
  s.cutmix = p.get_float("cutmix");
  s.mix_probability = p.get_float("mix_probability");
  s.mix_switch = p.get_float("mix_switch");
  s.keep_best = p.get_bool("keep_best");
  s.validate_each_epoch = p.get_bool("validate_each_epoch");
  return s;
}

TensorSource::TensorSource(torch::Tensor inputs, torch::Tensor labels)
    : inputs_(std::move(inputs)), labels_(std::move(labels)) {
  TORCH_CHECK(inputs_.size(0) == labels_.size(0), "inputs and labels differ in length");
}

absl::StatusOr<Batch> TensorSource::get(const torch::Tensor& indices) {
  const auto idx = indices.to(inputs_.device());
  // Channels-last feature maps (the backbones' and the feature cache's layout) are gathered as
  // whole N x H x W x D rows and stay channels-last: index_select would return them NCHW, a
  // transposition per batch that the head and the quantizers then undo.
  torch::Tensor inputs;
  if (inputs_.dim() == 4 && !inputs_.is_contiguous() && inputs_.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    inputs = inputs_.permute({0, 2, 3, 1}).index_select(0, idx).permute({0, 3, 1, 2});
  } else {
    inputs = inputs_.index_select(0, idx);
  }
  // Inputs kept in 16 bits (the feature cache) are widened per batch: stages compute in fp32.
  if (widen_ && inputs.scalar_type() != torch::kFloat32 && inputs.is_floating_point()) {
    inputs = inputs.to(torch::kFloat32);
  }
  return Batch{inputs, labels_.index_select(0, idx.to(labels_.device()))};
}

TensorSource TensorSource::in_stored_dtype() const {
  TensorSource stored(inputs_, labels_);
  stored.widen_ = false;
  return stored;
}

void all_reduce_gradients(Collectives& group, const std::vector<torch::Tensor>& parameters) {
  std::vector<torch::Tensor> gradients;
  for (const auto& p : parameters) {
    // A parameter this rank's batch did not reach still takes the others' gradient.
    if (!p.grad().defined()) p.mutable_grad() = torch::zeros_like(p);
    gradients.push_back(p.grad());
  }
  group.all_reduce_sum(gradients);
}

void drop_gradients(torch::optim::Optimizer& optimizer) {
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) p.mutable_grad() = torch::Tensor();
  }
}

double lr_factor(const TrainSettings& s, int64_t step, int64_t total_steps, int64_t steps_per_epoch) {
  const auto warmup = static_cast<int64_t>(std::llround(s.warmup_epochs * static_cast<double>(steps_per_epoch)));
  if (step < warmup) return static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (s.schedule == "constant" || total_steps <= warmup) return 1.0;
  const double t = static_cast<double>(step - warmup) / static_cast<double>(total_steps - warmup);
  return 0.5 * (1.0 + std::cos(M_PI * t));
}

torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets, double label_smoothing) {
  // (1 - eps) NLL + eps * mean over classes of -log p, written out: ATen's label-smoothing path
  // adds ignore-index masking this never needs, twice the operations (a tenth of a small head step).
  const auto log_p = torch::log_softmax(logits, 1);
  const auto nll = log_p.gather(1, targets.view({-1, 1})).squeeze(1);
  if (label_smoothing == 0.0) return -nll.mean();
  return -(nll.mean() * (1.0 - label_smoothing) + log_p.mean() * label_smoothing);
}

torch::Tensor cross_entropy(const torch::Tensor& logits, const Batch& batch, double label_smoothing) {
  if (!batch.targets.defined()) return cross_entropy(logits, batch.labels, label_smoothing);
  // Soft targets, smoothed the same way as hard ones: t (1 - eps) + eps / C.
  const auto targets = batch.targets * (1.0 - label_smoothing) + label_smoothing / static_cast<double>(logits.size(1));
  return -(targets * torch::log_softmax(logits, 1)).sum(1).mean();
}

namespace {

using Stopwatch = std::chrono::steady_clock;
double elapsed_since(Stopwatch::time_point start) {
  return std::chrono::duration<double>(Stopwatch::now() - start).count();
}

// Fault injection for the resume tests: PROTOQUANT_ABORT_AFTER=<label>:<epoch> stops training
// with an error right after that (1-based) epoch's checkpoint is written, as a crash would.
bool abort_requested(const std::string& label, int64_t epochs_done) {
  const char* value = std::getenv("PROTOQUANT_ABORT_AFTER");
  return value != nullptr && std::string(value) == fmt::format("{}:{}", label, epochs_done);
}

// Fault injection for the data-parallel fault tests: PROTOQUANT_KILL_AT=<rank>:<label>:<epoch>:<step>
// kills that rank (SIGKILL, as the OOM killer or a lost node would) as that 1-based step begins.
void kill_requested(const std::string& label, int64_t epoch, int64_t step) {
  const char* value = std::getenv("PROTOQUANT_KILL_AT");
  if (value != nullptr && std::string(value) == fmt::format("{}:{}:{}:{}", collectives().rank(), label, epoch, step)) {
    std::raise(SIGKILL);
  }
}

// For the data-parallel tests: PROTOQUANT_DUMP_FIRST_STEP=<folder> saves the global batch's loss
// and the gradients the optimizer applies in the first step of a stage's training (as
// <folder>/<label>.rank<R>.pt: loss, then one tensor per parameter), so a test can compare the
// step of N ranks with one process's. The loss is all-reduced here, a collective every rank makes.
void dump_first_step(Collectives& group, const std::string& label, const torch::Tensor& weighted_loss,
                     const std::vector<torch::Tensor>& parameters) {
  const char* folder = std::getenv("PROTOQUANT_DUMP_FIRST_STEP");
  if (folder == nullptr || *folder == '\0') return;
  auto loss = weighted_loss.detach().to(torch::kFloat64).reshape({1});
  group.all_reduce_sum({loss});
  std::vector<torch::Tensor> saved = {loss};
  for (const auto& p : parameters) saved.push_back(p.grad().defined() ? p.grad().detach().cpu().clone() : torch::zeros_like(p).cpu());
  torch::save(saved, fmt::format("{}/{}.rank{}.pt", folder, label, group.rank()));
}

// Every parameter and buffer of `modules`: what the ranks hold identical copies of.
std::vector<torch::Tensor> module_state(const std::vector<std::shared_ptr<torch::nn::Module>>& modules) {
  std::vector<torch::Tensor> state;
  for (const auto& module : modules) {
    for (const auto& p : module->parameters()) state.push_back(p.data());
    for (const auto& b : module->buffers()) state.push_back(b);
  }
  return state;
}

// Batch norm normalises with each rank's own batch statistics unless synchronised (batch_norm.h;
// DDP's default too), so the running estimates differ across ranks; at the end of an epoch they
// are averaged, which estimates the statistics of the whole epoch's data (synchronised ones are
// already equal, and stay so). Other buffers are left
// alone: components keep them identical with their own collectives, and the check says if not.
void average_running_statistics(Collectives& group, const std::vector<std::shared_ptr<torch::nn::Module>>& modules) {
  std::vector<torch::Tensor> statistics;
  for (const auto& module : modules) {
    for (const auto& item : module->named_buffers()) {
      const std::string& name = item.key();
      if (absl::EndsWith(name, "running_mean") || absl::EndsWith(name, "running_var")) statistics.push_back(item.value());
    }
  }
  if (statistics.empty()) return;
  group.all_reduce_sum(statistics);
  torch::NoGradGuard no_grad;
  for (auto& t : statistics) t.div_(static_cast<double>(group.world_size()));
}

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainSettings& s, std::vector<torch::Tensor> params) {
  if (s.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(std::move(params),
                                                 torch::optim::AdamWOptions(s.lr).weight_decay(s.weight_decay));
  }
  if (s.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        std::move(params), torch::optim::SGDOptions(s.lr).momentum(s.momentum).weight_decay(s.weight_decay));
  }
  return std::make_unique<FusedAdam>(std::move(params), torch::optim::AdamOptions(s.lr).weight_decay(s.weight_decay));
}

}  // namespace

absl::StatusOr<TrainSummary> train(const TrainSettings& settings, std::vector<torch::Tensor> parameters,
                                   BatchSource& data, const std::function<torch::Tensor(const Batch&)>& loss_fn,
                                   const TrainOptions& options) {
  return guard(fmt::format("training {}", options.label), [&]() -> absl::StatusOr<TrainSummary> {
    TrainSummary summary;
    const int64_t n = data.size();
    if (settings.epochs == 0 || n == 0) return summary;
    if (settings.keep_best && !options.validate) {
      return absl::InvalidArgumentError(fmt::format("{}: keep_best needs a validation split", options.label));
    }
    const bool mixing = mixing_enabled(settings);
    if (mixing && options.num_classes < 1) {
      return absl::InvalidArgumentError(fmt::format("{}: Mixup/CutMix need the number of classes", options.label));
    }
    // Data-parallel (collectives.h): every rank walks the same seeded permutation and takes its
    // contiguous share of each global batch; the gradients, weighted by share, are summed over
    // the ranks, so each step is the step one process takes on the whole batch.
    Collectives& group = collectives();
    const int world = group.world_size();
    // Without trainable parameters (an EMA codebook) the passes still run: the component learns
    // in its forward pass.
    const bool learns = !parameters.empty();
    // Gradients left from an earlier stage may have another shape (a pruned codebook).
    for (auto& p : parameters) p.mutable_grad() = torch::Tensor();
    std::vector<torch::Tensor> synced = parameters;
    auto optimizer = learns ? make_optimizer(settings, std::move(parameters)) : nullptr;
    const int64_t steps_per_epoch = (n + settings.batch_size - 1) / settings.batch_size;
    const int64_t total_steps = steps_per_epoch * settings.epochs;
    const auto start = std::chrono::steady_clock::now();

    TrainingProgress progress_state;
    const bool checkpointing = !options.checkpoint.empty();
    if (checkpointing && options.resume && rank0_decides(std::filesystem::exists(options.checkpoint))) {
      // Every rank reads rank 0's checkpoint (the run folder is on storage they share).
      PQ_RETURN_IF_ERROR(load_checkpoint(options.checkpoint, progress_state, options.modules, optimizer.get()));
      summary.resumed_epochs = progress_state.epochs_done;
      if (is_writer()) {
        fmt::print(stderr, "[{}] resumed after epoch {} from {}\n", options.label, progress_state.epochs_done,
                   options.checkpoint.string());
      }
    }
    if (world > 1) {
      // One starting state everywhere (a data-dependent init, a resumed checkpoint).
      group.broadcast(module_state(options.modules), 0);
    }
    int64_t step = progress_state.step;
    for (int64_t epoch = progress_state.epochs_done; epoch < settings.epochs; ++epoch) {
      // Fresh generators per epoch: order, mixing and any stochastic layer depend only on
      // (seed, epoch), so a resumed run sees the same batches as an uninterrupted one.
      const uint64_t epoch_seed = options.seed * 1000003ULL + static_cast<uint64_t>(epoch);
      auto generator = at::detail::createCPUGenerator(epoch_seed);
      auto mix_generator = at::detail::createCPUGenerator(epoch_seed ^ 0x9E3779B97F4A7C15ULL);
      torch::manual_seed(epoch_seed + static_cast<uint64_t>(group.rank()) * 0x2545F4914F6CDD1DULL);
      const auto order = torch::randperm(n, generator, torch::kInt64);
      // This rank's rows of global batch b; none when the batch has fewer rows than ranks (a
      // final batch of at most world - 1 samples is then dropped on every rank alike).
      auto share = [&](int64_t b) {
        const auto global = order.slice(0, b * settings.batch_size, std::min(n, (b + 1) * settings.batch_size));
        if (world == 1) return global;
        if (global.size(0) < world) return global.slice(0, 0, 0);
        const Shard mine = my_shard(global.size(0));
        return global.slice(0, mine.begin, mine.end);
      };
      Progress progress(fmt::format("{} epoch {}/{}", options.label, epoch + 1, settings.epochs), steps_per_epoch,
                        "samples");
      auto loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(options.device));
      double epoch_data_seconds = 0.0;
      int64_t steps_taken = 0;
      for (int64_t b = 0; b < steps_per_epoch; ++b, ++step) {
        const auto indices = share(b);
        const int64_t global_rows = std::min(n, (b + 1) * settings.batch_size) - b * settings.batch_size;
        if (indices.size(0) == 0) continue;  // dropped alike on every rank
        ++steps_taken;
        kill_requested(options.label, epoch + 1, b + 1);
        if (b + 1 < steps_per_epoch) {
          if (const auto next = share(b + 1); next.size(0) > 0) data.prefetch(next);
        }
        const auto fetch_start = std::chrono::steady_clock::now();
        PQ_ASSIGN_OR_RETURN(Batch batch, data.get(indices));
        batch.images = batch.images.to(options.device, /*non_blocking=*/true);
        batch.labels = batch.labels.to(options.device, /*non_blocking=*/true);
        if (mixing) mix_batch(batch, options.num_classes, settings, mix_generator);
        // Loading and mixing (on CUDA: only queueing the copies).
        epoch_data_seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - fetch_start).count();
        const double lr = settings.lr * lr_factor(settings, step, total_steps, steps_per_epoch);
        // This rank's part of the global batch's mean loss.
        const double weight = static_cast<double>(indices.size(0)) / static_cast<double>(global_rows);
        torch::Tensor loss;
        if (learns) {
          for (auto& group_options : optimizer->param_groups()) group_options.options().set_lr(lr);
          drop_gradients(*optimizer);
          loss = loss_fn(batch);
          if (world == 1) {
            loss.backward();
          } else {
            (loss * weight).backward();
            const auto sync_start = Stopwatch::now();
            all_reduce_gradients(group, synced);
            summary.sync_seconds += elapsed_since(sync_start);
          }
          if (step == 0) dump_first_step(group, options.label, world == 1 ? loss : loss * weight, synced);
          optimizer->step();
        } else {
          torch::NoGradGuard no_grad;
          loss = loss_fn(batch);
        }
        loss_sum += world == 1 ? loss.detach() : loss.detach() * weight;
        if (steps_taken % 25 == 1 || b + 1 == steps_per_epoch) {
          // The global mean: the non-finite check is the same decision on every rank.
          auto total = loss_sum.clone();
          const auto sync_start = Stopwatch::now();
          group.all_reduce_sum({total});
          summary.sync_seconds += elapsed_since(sync_start);
          const double mean = total.item<double>() / static_cast<double>(steps_taken);
          if (!std::isfinite(mean)) {
            return absl::InternalError(fmt::format("{}: loss became {} at epoch {} step {}; lower the learning rate",
                                                   options.label, mean, epoch + 1, b + 1));
          }
          progress.step(global_rows, fmt::format("loss {:.4f} lr {:.2e}", mean, lr));
        } else {
          progress.step(global_rows);
        }
      }
      const auto epoch_sync_start = Stopwatch::now();
      group.all_reduce_sum({loss_sum});
      progress_state.last_epoch_loss = loss_sum.item<double>() / static_cast<double>(std::max<int64_t>(1, steps_taken));
      progress_state.epoch_losses.push_back(progress_state.last_epoch_loss);
      summary.data_seconds += epoch_data_seconds;
      std::string note = fmt::format("loss {:.4f}, {:.1f} s waiting for data", progress_state.last_epoch_loss,
                                     epoch_data_seconds);
      if (world > 1) {
        average_running_statistics(group, options.modules);
        // Cheap (two numbers per tensor) and it catches a component that changed state in its
        // forward pass without its collectives: the replicas would drift apart silently.
        PQ_RETURN_IF_ERROR(check_replicas_identical(module_state(options.modules),
                                                    fmt::format("{} after epoch {}", options.label, epoch + 1)));
        ++summary.replica_checks;
      }
      summary.sync_seconds += elapsed_since(epoch_sync_start);
      if (settings.keep_best || (settings.validate_each_epoch && options.validate)) {
        // Collective (a sharded pass): the same score, so the same keep-best decision, everywhere.
        const auto validation_start = Stopwatch::now();
        PQ_ASSIGN_OR_RETURN(const double score, options.validate());
        summary.validation_seconds += elapsed_since(validation_start);
        progress_state.validation.push_back(score);
        note += fmt::format(", validation {:.4f}", score);
        if (settings.keep_best && (progress_state.best_epoch < 0 || score > progress_state.best_score)) {
          progress_state.best_epoch = epoch;
          progress_state.best_score = score;
          progress_state.best_state.clear();
          for (const auto& module : options.modules) progress_state.best_state.push_back(snapshot_state(*module));
        }
      }
      progress.finish(note);
      progress_state.epochs_done = epoch + 1;
      progress_state.step = step;
      if (checkpointing && is_writer()) {
        PQ_RETURN_IF_ERROR(save_checkpoint(options.checkpoint, progress_state, options.modules, optimizer.get()));
      }
      if (abort_requested(options.label, epoch + 1)) {
        return absl::AbortedError(fmt::format("stopped after epoch {} (PROTOQUANT_ABORT_AFTER)", epoch + 1));
      }
      if (options.on_epoch_end) PQ_RETURN_IF_ERROR(options.on_epoch_end(epoch));
    }
    if (settings.keep_best && progress_state.best_epoch >= 0) {
      for (size_t i = 0; i < options.modules.size(); ++i) restore_state(*options.modules[i], progress_state.best_state[i]);
      if (is_writer()) {
        fmt::print(stderr, "[{}] kept epoch {} (validation {:.4f})\n", options.label, progress_state.best_epoch + 1,
                   progress_state.best_score);
      }
    }
    summary.steps = step;
    summary.last_epoch_loss = progress_state.last_epoch_loss;
    summary.epoch_losses = progress_state.epoch_losses;
    summary.validation = progress_state.validation;
    summary.best_epoch = progress_state.best_epoch;
    summary.best_score = progress_state.best_score;
    summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    return summary;
  });
}

absl::StatusOr<torch::Tensor> map_batches(BatchSource& data, int64_t batch_size, torch::Device device,
                                          const std::function<torch::Tensor(const Batch&)>& fn,
                                          const std::string& label) {
  return guard(label, [&]() -> absl::StatusOr<torch::Tensor> {
    torch::NoGradGuard no_grad;
    const int64_t n = data.size();
    const int64_t steps = (n + batch_size - 1) / batch_size;
    Progress progress(label, steps, "samples");
    // Rows are written into one preallocated tensor: no concatenation copy at the end and half
    // the peak memory (feature maps of a whole split can be gigabytes).
    torch::Tensor out;
    for (int64_t b = 0; b < steps; ++b) {
      const int64_t begin = b * batch_size, end = std::min(n, (b + 1) * batch_size);
      const auto indices = torch::arange(begin, end, torch::kInt64);
      if (b + 1 < steps) data.prefetch(torch::arange(end, std::min(n, end + batch_size), torch::kInt64));
      PQ_ASSIGN_OR_RETURN(Batch batch, data.get(indices));
      batch.images = batch.images.to(device);
      batch.labels = batch.labels.to(device);
      const torch::Tensor result = fn(batch);
      if (!out.defined()) {
        std::vector<int64_t> shape(result.sizes().begin(), result.sizes().end());
        shape[0] = n;
        if (result.device().is_cpu() && result.dim() == 4 &&
            result.suggest_memory_format() == at::MemoryFormat::ChannelsLast) {
          // Feature maps of a split, gathered from at random later: on huge pages (host_memory.h).
          out = empty_on_huge_pages({n, shape[2], shape[3], shape[1]}, result.scalar_type()).permute({0, 3, 1, 2});
        } else if (result.device().is_cpu()) {
          out = empty_on_huge_pages(shape, result.scalar_type());
        } else {
          out = torch::empty(shape, result.options().memory_format(result.suggest_memory_format()));
        }
      }
      out.slice(0, begin, end).copy_(result);
      progress.step(end - begin);
    }
    progress.finish();
    return out;
  });
}

absl::StatusOr<torch::Tensor> map_batches_sharded(BatchSource& data, int64_t batch_size, torch::Device device,
                                                  const std::function<torch::Tensor(const Batch&)>& fn,
                                                  const std::string& label) {
  const int64_t n = data.size();
  if (collectives().world_size() == 1 || n < collectives().world_size()) {
    return map_batches(data, batch_size, device, fn, label);
  }
  const Shard mine = my_shard(n);
  ShardSource part(data, mine.begin, mine.end);
  PQ_ASSIGN_OR_RETURN(const torch::Tensor local, map_batches(part, batch_size, device, fn, label));
  return guard(label, [&]() -> absl::StatusOr<torch::Tensor> { return gather_rows(local, n); });
}

}  // namespace protoquant
