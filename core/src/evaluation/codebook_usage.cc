#include "protoquant/codebook_usage.h"

#include "protoquant/collectives.h"

#include <cmath>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/torch.h>

namespace protoquant {

CodebookUsage::CodebookUsage(int64_t codebooks, int64_t codes_per_codebook)
    : codebooks_(codebooks), codes_(codes_per_codebook) {
  reset();
}

void CodebookUsage::reset() { counts_ = torch::zeros({codebooks_, codes_}, torch::kInt64); }

void CodebookUsage::record(const torch::Tensor& indices) {
  if (!counts_.defined() || codes_ == 0) return;
  torch::NoGradGuard no_grad;
  auto flat = indices.detach().to(torch::kCPU, torch::kInt64).reshape({-1, codebooks_});
  // Offset each codebook's indices so one bincount counts all codebooks at once.
  auto offsets = torch::arange(codebooks_, torch::kInt64) * codes_;
  auto counts = torch::bincount((flat + offsets).reshape({-1}), {}, codebooks_ * codes_);
  counts_ += counts.reshape({codebooks_, codes_});
}

absl::Status CodebookUsage::load_counts(const torch::Tensor& counts) {
  if (!counts.defined() || counts.sizes() != torch::IntArrayRef({codebooks_, codes_})) {
    return absl::InvalidArgumentError(fmt::format("codebook usage: counts of shape [{}] where [{}, {}] were expected",
                                                  counts.defined() ? fmt::format("{}", fmt::join(counts.sizes(), ", ")) : std::string("undefined"),
                                                  codebooks_, codes_));
  }
  counts_ = counts.to(torch::kCPU, torch::kInt64).clone();
  return absl::OkStatus();
}

void CodebookUsage::all_reduce() {
  if (counts_.defined()) collectives().all_reduce_sum({counts_});
}

void CodebookUsage::merge(const CodebookUsage& other) {
  TORCH_CHECK(other.codebooks_ == codebooks_ && other.codes_ == codes_, "CodebookUsage::merge: ", other.codebooks_,
              " x ", other.codes_, " codes into ", codebooks_, " x ", codes_);
  if (other.counts_.defined()) counts_ = counts_.defined() ? counts_ + other.counts_ : other.counts_.clone();
}

UsageStats CodebookUsage::stats() const {
  UsageStats s;
  s.codebooks = codebooks_;
  s.codes_per_codebook = codes_;
  if (!counts_.defined()) return s;
  auto counts = counts_.contiguous();
  const int64_t* c = counts.data_ptr<int64_t>();
  s.counts.assign(c, c + counts.numel());
  for (int64_t m = 0; m < codebooks_; ++m) {
    int64_t total = 0;
    for (int64_t k = 0; k < codes_; ++k) total += c[m * codes_ + k];
    double entropy = 0.0;
    for (int64_t k = 0; k < codes_; ++k) {
      const int64_t n = c[m * codes_ + k];
      if (n > 0) {
        ++s.used;
        const double p = static_cast<double>(n) / static_cast<double>(total);
        entropy -= p * std::log(p);
      }
    }
    s.total = total;
    s.perplexity.push_back(std::exp(entropy));
  }
  double sum = 0.0;
  for (double p : s.perplexity) sum += p;
  s.mean_perplexity = s.perplexity.empty() ? 0.0 : sum / static_cast<double>(s.perplexity.size());
  const double capacity = static_cast<double>(codebooks_ * codes_);
  s.dead_fraction = capacity > 0 ? 1.0 - static_cast<double>(s.used) / capacity : 0.0;
  return s;
}

nlohmann::json UsageStats::to_json(bool with_counts) const {
  nlohmann::json j = {{"codebooks", codebooks},         {"codes_per_codebook", codes_per_codebook},
                      {"assignments", total},           {"used_codes", used},
                      {"dead_fraction", dead_fraction}, {"perplexity", perplexity},
                      {"mean_perplexity", mean_perplexity}};
  if (with_counts) j["counts"] = counts;
  return j;
}

torch::Tensor most_used_codes(const torch::Tensor& counts, int64_t keep) {
  // A stable descending sort keeps the lower index first among equal counts.
  const auto order = std::get<1>(counts.sort(/*stable=*/true, /*dim=*/1, /*descending=*/true));
  return std::get<0>(order.slice(1, 0, keep).sort(1));
}

}  // namespace protoquant
