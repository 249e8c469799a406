#include "protoquant/trainer.h"

#include <cmath>

#include <ATen/CPUGeneratorImpl.h>
#include <fmt/format.h>
#include <torch/torch.h>

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
  return s;
}

TensorSource::TensorSource(torch::Tensor inputs, torch::Tensor labels)
    : inputs_(std::move(inputs)), labels_(std::move(labels)) {
  TORCH_CHECK(inputs_.size(0) == labels_.size(0), "inputs and labels differ in length");
}

absl::StatusOr<Batch> TensorSource::get(const torch::Tensor& indices) {
  const auto idx = indices.to(inputs_.device());
  return Batch{inputs_.index_select(0, idx), labels_.index_select(0, idx.to(labels_.device()))};
}

double lr_factor(const TrainSettings& s, int64_t step, int64_t total_steps, int64_t steps_per_epoch) {
  const auto warmup = static_cast<int64_t>(std::llround(s.warmup_epochs * static_cast<double>(steps_per_epoch)));
  if (step < warmup) return static_cast<double>(step + 1) / static_cast<double>(warmup);
  if (s.schedule == "constant" || total_steps <= warmup) return 1.0;
  const double t = static_cast<double>(step - warmup) / static_cast<double>(total_steps - warmup);
  return 0.5 * (1.0 + std::cos(M_PI * t));
}

torch::Tensor cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets, double label_smoothing) {
  return torch::nn::functional::cross_entropy(
      logits, targets, torch::nn::functional::CrossEntropyFuncOptions().label_smoothing(label_smoothing));
}

namespace {

std::unique_ptr<torch::optim::Optimizer> make_optimizer(const TrainSettings& s, std::vector<torch::Tensor> params) {
  if (s.optimizer == "adamw") {
    return std::make_unique<torch::optim::AdamW>(std::move(params),
                                                 torch::optim::AdamWOptions(s.lr).weight_decay(s.weight_decay));
  }
  if (s.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(
        std::move(params), torch::optim::SGDOptions(s.lr).momentum(s.momentum).weight_decay(s.weight_decay));
  }
  return std::make_unique<torch::optim::Adam>(std::move(params),
                                              torch::optim::AdamOptions(s.lr).weight_decay(s.weight_decay));
}

}  // namespace

absl::StatusOr<TrainSummary> train(const TrainSettings& settings, std::vector<torch::Tensor> parameters,
                                   BatchSource& data, const std::function<torch::Tensor(const Batch&)>& loss_fn,
                                   const TrainOptions& options) {
  return guard(fmt::format("training {}", options.label), [&]() -> absl::StatusOr<TrainSummary> {
    TrainSummary summary;
    const int64_t n = data.size();
    if (settings.epochs == 0 || n == 0) return summary;
    // Without trainable parameters (an EMA codebook) the passes still run: the component learns
    // in its forward pass.
    const bool learns = !parameters.empty();
    auto optimizer = learns ? make_optimizer(settings, std::move(parameters)) : nullptr;
    const int64_t steps_per_epoch = (n + settings.batch_size - 1) / settings.batch_size;
    const int64_t total_steps = steps_per_epoch * settings.epochs;
    const auto start = std::chrono::steady_clock::now();
    int64_t step = 0;
    for (int64_t epoch = 0; epoch < settings.epochs; ++epoch) {
      // A fresh generator per epoch: the order depends only on (seed, epoch), so a resumed run
      // sees the same batches as an uninterrupted one.
      auto generator = at::detail::createCPUGenerator(options.seed * 1000003ULL + static_cast<uint64_t>(epoch));
      const auto order = torch::randperm(n, generator, torch::kInt64);
      Progress progress(fmt::format("{} epoch {}/{}", options.label, epoch + 1, settings.epochs), steps_per_epoch,
                        "samples");
      auto loss_sum = torch::zeros({}, torch::TensorOptions().dtype(torch::kFloat64).device(options.device));
      for (int64_t b = 0; b < steps_per_epoch; ++b, ++step) {
        const auto indices = order.slice(0, b * settings.batch_size, std::min(n, (b + 1) * settings.batch_size));
        if (b + 1 < steps_per_epoch) {
          data.prefetch(order.slice(0, (b + 1) * settings.batch_size, std::min(n, (b + 2) * settings.batch_size)));
        }
        PQ_ASSIGN_OR_RETURN(Batch batch, data.get(indices));
        batch.images = batch.images.to(options.device, /*non_blocking=*/true);
        batch.labels = batch.labels.to(options.device, /*non_blocking=*/true);
        const double lr = settings.lr * lr_factor(settings, step, total_steps, steps_per_epoch);
        torch::Tensor loss;
        if (learns) {
          for (auto& group : optimizer->param_groups()) group.options().set_lr(lr);
          optimizer->zero_grad();
          loss = loss_fn(batch);
          loss.backward();
          optimizer->step();
        } else {
          torch::NoGradGuard no_grad;
          loss = loss_fn(batch);
        }
        loss_sum += loss.detach();
        if (b % 25 == 0 || b + 1 == steps_per_epoch) {
          const double mean = loss_sum.item<double>() / static_cast<double>(b + 1);
          if (!std::isfinite(mean)) {
            return absl::InternalError(fmt::format("{}: loss became {} at epoch {} step {}; lower the learning rate",
                                                   options.label, mean, epoch + 1, b + 1));
          }
          progress.step(indices.size(0), fmt::format("loss {:.4f} lr {:.2e}", mean, lr));
        } else {
          progress.step(indices.size(0));
        }
      }
      summary.last_epoch_loss = loss_sum.item<double>() / static_cast<double>(steps_per_epoch);
      progress.finish(fmt::format("loss {:.4f}", summary.last_epoch_loss));
      if (options.on_epoch_end) PQ_RETURN_IF_ERROR(options.on_epoch_end(epoch));
    }
    summary.steps = step;
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
        out = torch::empty(shape, result.options().memory_format(result.suggest_memory_format()));
      }
      out.slice(0, begin, end).copy_(result);
      progress.step(end - begin);
    }
    progress.finish();
    return out;
  });
}

}  // namespace protoquant
