#include "codebook_init.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace protoquant::quantizers {

torch::Tensor initial_codebook(const std::string& init, int64_t codes, int64_t dim) {
  auto codebook = torch::empty({codes, dim});
  if (init == "uniform") {
    // VQ-VAE's init: U(-1/K, 1/K).
    codebook.uniform_(-1.0 / static_cast<double>(codes), 1.0 / static_cast<double>(codes));
  } else if (init == "normal") {
    codebook.normal_(0.0, 1.0);
  } else if (init == "orthogonal" || init == "kmeans") {
    torch::nn::init::orthogonal_(codebook);
  } else {
    throw std::invalid_argument("unknown codebook init " + init);
  }
  return codebook;
}

namespace {

// Squared distances N x K via one GEMM: |x|^2 - 2 x c^T + |c|^2.
torch::Tensor squared_distances(const torch::Tensor& x, const torch::Tensor& x_sq, const torch::Tensor& c) {
  return torch::addmm(x_sq.unsqueeze(1) + c.pow(2).sum(1).unsqueeze(0), x, c.t(), 1.0, -2.0).clamp_min_(0.0);
}

// Each row's nearest center and its squared distance, a block of rows at a time: the whole
// rows x centers distance matrix can be far larger than memory (65536 sampled vectors and
// 200000 codes would be 52 GB), a block of it is at most `block_bytes`.
std::pair<torch::Tensor, torch::Tensor> nearest_centers(const torch::Tensor& x, const torch::Tensor& x_sq,
                                                        const torch::Tensor& centers, int64_t block_bytes) {
  const int64_t n = x.size(0);
  const int64_t row_bytes = std::max<int64_t>(1, centers.size(0)) * static_cast<int64_t>(sizeof(float));
  const int64_t block = std::max<int64_t>(1, block_bytes / row_bytes);
  auto distance = torch::empty({n}, x.options());
  auto assignment = torch::empty({n}, x.options().dtype(torch::kInt64));
  for (int64_t start = 0; start < n; start += block) {
    const int64_t end = std::min(n, start + block);
    const auto [d, a] = squared_distances(x.slice(0, start, end), x_sq.slice(0, start, end), centers).min(1);
    distance.slice(0, start, end).copy_(d);
    assignment.slice(0, start, end).copy_(a);
  }
  return {distance, assignment};
}

}  // namespace

torch::Tensor kmeans(const torch::Tensor& input, int64_t codes, int64_t iterations, bool cosine, int64_t block_bytes) {
  torch::NoGradGuard no_grad;
  auto data = input.to(torch::kFloat32).contiguous();
  if (cosine) data = torch::nn::functional::normalize(data, torch::nn::functional::NormalizeFuncOptions().dim(1).eps(1e-6));
  const int64_t n = data.size(0);
  TORCH_CHECK(n > 0, "k-means needs at least one vector");
  const auto x_sq = data.pow(2).sum(1);

  // k-means++: each next seed drawn with probability proportional to its squared distance to the
  // nearest seed so far. With fewer vectors than codes, the extra codes repeat vectors (plus
  // jitter), so every code starts on real data.
  auto centers = torch::empty({codes, data.size(1)}, data.options());
  int64_t first = torch::randint(n, {1}, torch::kInt64).item<int64_t>();
  centers[0] = data[first];
  auto nearest = squared_distances(data, x_sq, centers.slice(0, 0, 1)).squeeze(1);
  for (int64_t k = 1; k < codes; ++k) {
    const double total = nearest.sum().item<double>();
    int64_t pick;
    if (total > 0) {
      pick = torch::multinomial(nearest, 1).item<int64_t>();
    } else {
      pick = torch::randint(n, {1}, torch::kInt64).item<int64_t>();
    }
    centers[k] = data[pick];
    nearest = torch::minimum(nearest, squared_distances(data, x_sq, centers.slice(0, k, k + 1)).squeeze(1));
  }
  if (n < codes) centers += 1e-4 * torch::randn_like(centers);

  for (int64_t it = 0; it < iterations; ++it) {
    const auto [min_distance, assignment] = nearest_centers(data, x_sq, centers, block_bytes);
    auto sums = torch::zeros_like(centers).index_add_(0, assignment, data);
    auto counts = torch::bincount(assignment, {}, codes).to(data.dtype());
    const auto empty = counts.eq(0);
    centers = torch::where(empty.unsqueeze(1), centers, sums / counts.clamp_min(1).unsqueeze(1));
    const int64_t empties = empty.sum().item<int64_t>();
    if (empties > 0 && n >= codes) {
      // Re-seed empty clusters with the points worst served by their current code.
      const auto far = std::get<1>(min_distance.topk(empties));
      centers.index_put_({empty.nonzero().squeeze(1)}, data.index_select(0, far));
    }
    if (cosine) centers = torch::nn::functional::normalize(centers, torch::nn::functional::NormalizeFuncOptions().dim(1).eps(1e-6));
  }
  return centers;
}

torch::Tensor kmeans_codebook(const torch::Tensor& data, int64_t codes, int64_t iterations, bool cosine) {
  torch::NoGradGuard no_grad;
  auto centers = kmeans(data, codes, iterations, cosine);
  if (cosine) centers = centers * data.to(torch::kFloat32).norm(2, 1).mean();
  return centers;
}

}  // namespace protoquant::quantizers
