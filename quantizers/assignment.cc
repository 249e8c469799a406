#include "assignment.h"

#include "rerank_cpu.h"

#include <stdexcept>

namespace protoquant::quantizers {

namespace F = torch::nn::functional;

Metric parse_metric(const std::string& name) {
  if (name == "cosine") return Metric::kCosine;
  if (name == "euclidean") return Metric::kEuclidean;
  throw std::invalid_argument("unknown metric " + name);
}

namespace {

// The codebook side of the score: score(z, e) = z . weights_e + bias_e, maximised over codes.
//   cosine:    argmax z.e / |e|            (normalising z does not change the argmax)
//   euclidean: argmax z.e - |e|^2 / 2      (= argmin |z - e|^2)
struct ScoreTerms {
  torch::Tensor weights;  // M x K x d
  torch::Tensor bias;     // M x 1 x K, or undefined
};

ScoreTerms score_terms(const torch::Tensor& codebooks, Metric metric) {
  const auto codes = codebooks.detach();
  if (metric == Metric::kCosine) return {F::normalize(codes, F::NormalizeFuncOptions().dim(2).eps(1e-6)), {}};
  return {codes, codes.pow(2).sum(2).unsqueeze(1).mul(-0.5)};
}

// M x n x K scores. One 2-D GEMM per sub-space: LibTorch sends 2-D fp32 GEMMs to BLAS and 2-D bf16
// GEMMs to oneDNN, while its batched kernel has no fast bf16 path.
torch::Tensor scores(const torch::Tensor& vectors, const ScoreTerms& t) {
  const int64_t m = vectors.size(0);
  const auto& w = t.weights;
  const auto& bias = t.bias;
  auto one = [&](int64_t s) {
    if (!bias.defined()) return torch::mm(vectors[s], w[s].t());
    // fp32 addmm folds the bias into the BLAS call; oneDNN's bf16 GEMM is only used without it.
    if (vectors.scalar_type() == torch::kFloat32) return torch::addmm(bias[s], vectors[s], w[s].t());
    return torch::mm(vectors[s], w[s].t()).add_(bias[s]);
  };
  if (m == 1) return one(0).unsqueeze(0);
  std::vector<torch::Tensor> parts;
  for (int64_t s = 0; s < m; ++s) parts.push_back(one(s));
  return torch::stack(parts);
}

// `low`: the weights in bf16, converted once per search (not per chunk).
torch::Tensor search_chunk(const torch::Tensor& vectors, const ScoreTerms& t, const ScoreTerms& low,
                           const SearchOptions& search) {
  if (!search.bf16) return scores(vectors, t).argmax(2);
  const int64_t k = t.weights.size(1);
  const int64_t c = std::min(search.candidates, k);
  // Candidates from the bf16 GEMM (the bias added in fp32), then the exact fp32 score of just those.
  const auto approximate = scores(vectors.to(torch::kBFloat16), low);
  if (rerank_cpu_supports(approximate, vectors)) return rerank_candidates(approximate, vectors, t.weights, t.bias, c);
  // Elsewhere (CUDA), the same with ATen operations.
  const auto candidates = std::get<1>((t.bias.defined() ? approximate + t.bias : approximate).topk(c, 2));  // M x n x c
  const int64_t m = candidates.size(0), n = candidates.size(1), d = t.weights.size(2);
  const auto offsets = (torch::arange(m, candidates.options()) * k).view({m, 1, 1});
  const auto rows = (candidates + offsets).reshape({-1});
  const auto chosen = t.weights.reshape({m * k, d}).index_select(0, rows).view({m, n, c, d});
  // M x n x c exact fp32 dot products, as n*M small GEMVs (measured faster than mul + sum).
  auto exact = torch::bmm(chosen.view({m * n, c, d}), vectors.reshape({m * n, d, 1})).view({m, n, c});
  if (t.bias.defined()) exact = exact + t.bias.squeeze(1).reshape({-1}).index_select(0, rows).view({m, n, c});
  return candidates.gather(2, exact.argmax(2, /*keepdim=*/true)).squeeze(2);
}

}  // namespace

torch::Tensor nearest_code(const torch::Tensor& vectors, const torch::Tensor& codebook, Metric metric,
                           const SearchOptions& search) {
  return nearest_codes(vectors.unsqueeze(0), codebook.unsqueeze(0), metric, search).squeeze(0);
}

torch::Tensor nearest_codes(const torch::Tensor& vectors, const torch::Tensor& codebooks, Metric metric,
                            const SearchOptions& search) {
  torch::NoGradGuard no_grad;
  const auto terms = score_terms(codebooks, metric);
  ScoreTerms low;  // the bf16 search's GEMM side; its bias is added in fp32
  if (search.bf16) low.weights = terms.weights.to(torch::kBFloat16);
  const auto input = vectors.detach();
  // Rows in chunks so the score matrix stays near 8 MiB: cache-friendly for the argmax, and under
  // glibc's 32 MiB mmap limit, so its memory is reused instead of faulted in afresh each chunk.
  const int64_t m = input.size(0), n = input.size(1), k = codebooks.size(1);
  const int64_t elements = search.bf16 ? (int64_t{4} << 20) : (int64_t{2} << 20);  // bf16 scores: 2 bytes
  const int64_t chunk = std::max<int64_t>(64, elements / std::max<int64_t>(1, m * k));
  if (n <= chunk) return search_chunk(input, terms, low, search);
  auto out = torch::empty({m, n}, input.options().dtype(torch::kInt64));
  for (int64_t begin = 0; begin < n; begin += chunk) {
    const int64_t end = std::min(n, begin + chunk);
    out.slice(1, begin, end).copy_(search_chunk(input.slice(1, begin, end), terms, low, search));
  }
  return out;
}

torch::Tensor feature_rows(const torch::Tensor& features, int64_t dim, const char* quantizer) {
  TORCH_CHECK(features.dim() == 4 && features.size(1) == dim, quantizer, " expects B x ", dim,
              " x H x W features, got ", features.sizes());
  TORCH_CHECK(features.detach().isfinite().all().item<bool>(), quantizer,
              ": input features contain NaN or infinity");
  return features.permute({0, 2, 3, 1}).reshape({-1, dim});
}

}  // namespace protoquant::quantizers
