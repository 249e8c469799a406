#include "kept_codes.h"

#include <fmt/format.h>
#include <torch/torch.h>

namespace protoquant::quantizers {
namespace {

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

// books: codebooks x K x d -> codebooks x K' x d, row m keeping keep[m].
torch::Tensor select_codes(const torch::Tensor& books, const torch::Tensor& keep) {
  const auto index = keep.to(books.device()).unsqueeze(2).expand({keep.size(0), keep.size(1), books.size(2)});
  return books.gather(1, index).contiguous();
}

}  // namespace

absl::Status keep_codebook_rows(const torch::Tensor& keep, int64_t codebooks, std::vector<torch::Tensor> books,
                                int64_t& codes, CodebookUsage& usage) {
  if (absl::Status status = check_kept_codes(keep, codebooks, codes); !status.ok()) return status;
  torch::NoGradGuard no_grad;
  for (auto& book : books) {
    const bool grouped = book.dim() == 3;
    auto shape = book.sizes().vec();
    shape[grouped ? 1 : 0] = keep.size(1);
    const auto rows = grouped ? book : book.reshape({1, book.size(0), -1});
    book.set_data(select_codes(rows, keep).reshape(shape));  // the same TensorImpl as the member
  }
  codes = keep.size(1);
  usage = CodebookUsage(codebooks, codes);
  return absl::OkStatus();
}

}  // namespace protoquant::quantizers
