#include "kept_codes.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/torch.h>

namespace protoquant::quantizers {

absl::Status check_kept_codes(const torch::Tensor& keep, int64_t codebooks, int64_t codes) {
  if (!keep.defined() || keep.dim() != 2 || keep.size(0) != codebooks || keep.scalar_type() != torch::kInt64) {
    return absl::InvalidArgumentError(fmt::format("codes to keep must be a {} x K' int64 tensor", codebooks));
  }
  if (keep.size(1) < 1 || keep.size(1) > codes) {
    return absl::InvalidArgumentError(fmt::format("cannot keep {} of {} codes", keep.size(1), codes));
  }
  const auto cpu = keep.cpu();
  if (cpu.min().item<int64_t>() < 0 || cpu.max().item<int64_t>() >= codes) {
    return absl::InvalidArgumentError(fmt::format("codes to keep must lie in [0, {})", codes));
  }
  const auto sorted = std::get<0>(cpu.sort(1));
  if (keep.size(1) > 1 && sorted.slice(1, 1).eq(sorted.slice(1, 0, -1)).any().item<bool>()) {
    return absl::InvalidArgumentError("codes to keep must be distinct");
  }
  return absl::OkStatus();
}

torch::Tensor select_codes(const torch::Tensor& books, const torch::Tensor& keep) {
  const auto index = keep.to(books.device()).unsqueeze(2).expand({keep.size(0), keep.size(1), books.size(2)});
  return books.gather(1, index).contiguous();
}

}  // namespace protoquant::quantizers
