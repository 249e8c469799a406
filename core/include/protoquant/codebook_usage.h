// Codebook usage accumulated over a whole pass (not a batch), per codebook: the statistics every
// quantizer reports (counts, unique codes used, dead fraction, perplexity).
#pragma once

#include <cstdint>
#include <vector>

#include <absl/status/status.h>
#include <nlohmann/json_fwd.hpp>
#include <torch/types.h>

namespace protoquant {

struct UsageStats {
  std::vector<int64_t> counts;  // per code, codebooks concatenated
  int64_t codebooks = 1;
  int64_t codes_per_codebook = 0;
  int64_t total = 0;            // assignments counted (per codebook)
  int64_t used = 0;             // codes with count > 0, over all codebooks
  double dead_fraction = 0.0;   // 1 - used / (codebooks * codes_per_codebook)
  std::vector<double> perplexity;  // exp(-sum p log p), per codebook
  double mean_perplexity = 0.0;

  nlohmann::json to_json(bool with_counts) const;
};

class CodebookUsage {
 public:
  CodebookUsage() = default;
  CodebookUsage(int64_t codebooks, int64_t codes_per_codebook);

  void reset();
  // indices: any shape whose last dimension is the codebook (or no such dimension when there is
  // one codebook); values in [0, codes_per_codebook).
  void record(const torch::Tensor& indices);
  // Adds the counts of `other` (same codebooks and codes), e.g. another shard of the same pass.
  void merge(const CodebookUsage& other);
  // Data-parallel: the counts summed over the ranks (collectives.h), after a sharded pass.
  void all_reduce();
  // The codebooks x codes int64 counts (undefined before any record), and their replacement by
  // counts of the same shape (a metric's partial state, metric.h).
  const torch::Tensor& counts() const { return counts_; }
  absl::Status load_counts(const torch::Tensor& counts);
  UsageStats stats() const;

 private:
  int64_t codebooks_ = 1;
  int64_t codes_ = 0;
  torch::Tensor counts_;  // codebooks x codes, int64, on the CPU
};

// Stage 2 (pruning): per codebook, the `keep` most-used codes of a codebooks x K count matrix,
// equal counts keeping the lower index, returned in index order (codebooks x keep, int64): what
// Quantizer::keep_codes takes.
torch::Tensor most_used_codes(const torch::Tensor& counts, int64_t keep);

}  // namespace protoquant
