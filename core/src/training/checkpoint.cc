#include "protoquant/checkpoint.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string_view>

#include <fmt/format.h>
#include <torch/serialize.h>
#include <torch/torch.h>

#include "protoquant/atomic_file.h"
#include "protoquant/digest.h"
#include "protoquant/status.h"

namespace protoquant {
namespace {

// After the archive: this marker and the SHA-256 (hex) of the archive's bytes.
constexpr std::string_view kChecksumMagic = "\nPQ-CHECKPOINT-SHA256:";

std::vector<torch::Tensor> state_tensors(const torch::nn::Module& module) {
  std::vector<torch::Tensor> tensors = module.parameters();
  for (const auto& buffer : module.buffers()) tensors.push_back(buffer);
  return tensors;
}

void write_state(torch::serialize::OutputArchive& archive, const std::string& key, const ModuleState& state) {
  torch::serialize::OutputArchive sub;
  for (size_t i = 0; i < state.size(); ++i) sub.write(fmt::format("t{}", i), state[i], /*is_buffer=*/true);
  archive.write(key, sub);
}

ModuleState read_state(torch::serialize::InputArchive& archive, const std::string& key, size_t count) {
  torch::serialize::InputArchive sub;
  archive.read(key, sub);
  ModuleState state(count);
  for (size_t i = 0; i < count; ++i) sub.read(fmt::format("t{}", i), state[i], /*is_buffer=*/true);
  return state;
}

int64_t read_int(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::Tensor t;
  archive.read(key, t);
  return t.item<int64_t>();
}

double read_double(torch::serialize::InputArchive& archive, const std::string& key) {
  torch::Tensor t;
  archive.read(key, t);
  return t.item<double>();
}

}  // namespace

ModuleState snapshot_state(const torch::nn::Module& module) {
  ModuleState state;
  for (const auto& t : state_tensors(module)) state.push_back(t.detach().clone());
  return state;
}

void restore_state(torch::nn::Module& module, const ModuleState& state) {
  torch::NoGradGuard no_grad;
  auto tensors = state_tensors(module);
  TORCH_CHECK(tensors.size() == state.size(), "restoring a module state of a different structure");
  for (size_t i = 0; i < tensors.size(); ++i) tensors[i].copy_(state[i]);
}

absl::Status save_checkpoint(const std::filesystem::path& path, const TrainingProgress& progress,
                             const std::vector<std::shared_ptr<torch::nn::Module>>& modules,
                             torch::optim::Optimizer* optimizer) {
  std::ostringstream bytes;
  PQ_RETURN_IF_ERROR(guard(fmt::format("writing checkpoint {}", path.string()), [&] {
    torch::serialize::OutputArchive archive;
    archive.write("epochs_done", torch::tensor(progress.epochs_done), true);
    archive.write("step", torch::tensor(progress.step), true);
    archive.write("last_epoch_loss", torch::tensor(progress.last_epoch_loss, torch::kFloat64), true);
    archive.write("validation", torch::tensor(progress.validation, torch::kFloat64), true);
    archive.write("epoch_losses", torch::tensor(progress.epoch_losses, torch::kFloat64), true);
    archive.write("best_epoch", torch::tensor(progress.best_epoch), true);
    archive.write("best_score", torch::tensor(progress.best_score, torch::kFloat64), true);
    archive.write("modules", torch::tensor(static_cast<int64_t>(modules.size())), true);
    for (size_t i = 0; i < modules.size(); ++i) {
      write_state(archive, fmt::format("module{}", i), snapshot_state(*modules[i]));
      if (i < progress.best_state.size()) write_state(archive, fmt::format("best{}", i), progress.best_state[i]);
    }
    if (optimizer != nullptr) {
      torch::serialize::OutputArchive sub;
      optimizer->save(sub);
      archive.write("optimizer", sub);
    }
    // In memory: LibTorch's zip writer throws from its destructor on a full disk (an abort).
    archive.save_to(bytes);
    return absl::OkStatus();
  }));
  std::string content = std::move(bytes).str();
  const std::string digest = sha256_hex(content);
  content += kChecksumMagic;
  content += digest;
  return write_file_atomic(path, content);
}

absl::StatusOr<std::string> read_verified_checkpoint(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(fmt::format("{}: cannot open checkpoint: {}", path.string(), std::strerror(errno)));
  std::string content((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) return absl::DataLossError(fmt::format("{}: cannot read checkpoint: {}", path.string(), std::strerror(errno)));
  const size_t trailer = kChecksumMagic.size() + 64;
  if (content.size() < trailer || content.compare(content.size() - trailer, kChecksumMagic.size(), kChecksumMagic) != 0) {
    return absl::DataLossError(fmt::format("{}: checkpoint has no checksum trailer (truncated, or not written by this "
                                           "version)", path.string()));
  }
  const std::string recorded = content.substr(content.size() - 64);
  content.resize(content.size() - trailer);
  if (sha256_hex(content) != recorded) {
    return absl::DataLossError(fmt::format("{}: checkpoint checksum mismatch (corrupted)", path.string()));
  }
  return content;
}

bool set_aside_bad_checkpoint(const std::filesystem::path& path) {
  std::error_code ec;
  if (!std::filesystem::exists(path, ec)) return false;
  const absl::StatusOr<std::string> content = read_verified_checkpoint(path);
  // Only a checkpoint that is read and found damaged is set aside; one that cannot be read now
  // (permissions, too many open files) is left for the load to report.
  if (content.ok() || content.status().code() != absl::StatusCode::kDataLoss) return true;
  // Kept, not deleted: a user may want to look at it. One older copy at most.
  const std::filesystem::path aside = path.string() + ".bad";
  std::filesystem::rename(path, aside, ec);
  std::string where = fmt::format("set aside as {}", aside.filename().string());
  if (ec) {
    std::filesystem::remove(path, ec);
    where = ec ? fmt::format("cannot be moved or removed ({})", ec.message()) : "removed";
  }
  fmt::print(stderr, "warning: {}; {}, the stage starts again\n", std::string(content.status().message()), where);
  return false;
}

absl::Status load_checkpoint(const std::filesystem::path& path, TrainingProgress& progress,
                             const std::vector<std::shared_ptr<torch::nn::Module>>& modules,
                             torch::optim::Optimizer* optimizer) {
  PQ_ASSIGN_OR_RETURN(const std::string content, read_verified_checkpoint(path));
  return guard(fmt::format("{}: reading checkpoint", path.string()), [&]() -> absl::Status {
    torch::serialize::InputArchive archive;
    archive.load_from(content.data(), content.size());
    if (read_int(archive, "modules") != static_cast<int64_t>(modules.size())) {
      return absl::FailedPreconditionError(fmt::format("{}: checkpoint of a different stage", path.string()));
    }
    progress.epochs_done = read_int(archive, "epochs_done");
    progress.step = read_int(archive, "step");
    progress.last_epoch_loss = read_double(archive, "last_epoch_loss");
    torch::Tensor validation;
    archive.read("validation", validation);
    progress.validation.assign(validation.data_ptr<double>(), validation.data_ptr<double>() + validation.numel());
    // Checkpoints written before the loss history was kept have none: the curve starts later.
    torch::Tensor losses;
    progress.epoch_losses.clear();
    if (archive.try_read("epoch_losses", losses)) {
      progress.epoch_losses.assign(losses.data_ptr<double>(), losses.data_ptr<double>() + losses.numel());
    }
    progress.best_epoch = read_int(archive, "best_epoch");
    progress.best_score = read_double(archive, "best_score");
    progress.best_state.clear();
    for (size_t i = 0; i < modules.size(); ++i) {
      const size_t count = modules[i]->parameters().size() + modules[i]->buffers().size();
      restore_state(*modules[i], read_state(archive, fmt::format("module{}", i), count));
      if (progress.best_epoch >= 0) progress.best_state.push_back(read_state(archive, fmt::format("best{}", i), count));
    }
    if (optimizer != nullptr) {
      torch::serialize::InputArchive sub;
      archive.read("optimizer", sub);
      optimizer->load(sub);
    }
    return absl::OkStatus();
  });
}

}  // namespace protoquant
