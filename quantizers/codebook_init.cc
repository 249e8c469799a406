#include "codebook_init.h"

#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <limits>
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

namespace {

// k-means++ seeding: each next seed drawn with probability proportional to its squared distance
// to the nearest seed so far. The draw is a point u * total on the rows' cumulative mass; each
// rank holds the distances of its rows [begin, begin + n_local) only, so the ranks first share
// their masses (the rank whose span holds the point finds the row and broadcasts it).
torch::Tensor seed_centres(const torch::Tensor& data, const torch::Tensor& local, const torch::Tensor& local_sq,
                           int64_t begin, int64_t codes, at::Generator& generator, Collectives& group) {
  const int64_t n = data.size(0);
  auto centers = torch::empty({codes, data.size(1)}, data.options());
  const auto draw_row = [&] { return torch::randint(n, {1}, generator, torch::kInt64).item<int64_t>(); };
  centers[0] = data[draw_row()];
  auto nearest = squared_distances(local, local_sq, centers.slice(0, 0, 1)).squeeze(1);
  const auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  for (int64_t k = 1; k < codes; ++k) {
    // Small tensors of decisions travel on the CPU whatever the data's device.
    const auto masses = torch::cat(group.all_gather(nearest.sum(torch::kFloat64).reshape({1}).cpu()));
    const double u = torch::rand({1}, generator, f64).item<double>();
    const double total = masses.sum().item<double>();
    // The same on every rank (the masses were gathered), so all stop alike.
    TORCH_CHECK(std::isfinite(total), "k-means: the feature vectors hold inf or NaN");
    int64_t pick;
    if (total > 0) {
      const double target = u * total;
      // The first rank (then row) whose cumulative mass passes the target; rounding can leave the
      // target at the very end, where the last rank (row) with any mass takes it.
      const auto cumulative = masses.cumsum(0);
      const auto positive = masses.gt(0).nonzero();
      const int64_t owner = std::min(cumulative.le(target).sum().item<int64_t>(), positive[-1].item<int64_t>());
      auto row = torch::zeros({1}, torch::kInt64);
      if (owner == group.rank()) {
        const double before = owner > 0 ? cumulative[owner - 1].item<double>() : 0.0;
        const double local_target = std::max(0.0, target - before);
        const auto local_cumulative = nearest.to(torch::kFloat64).cumsum(0);
        const int64_t last = nearest.gt(0).nonzero()[-1].item<int64_t>();
        row[0] = begin + std::min(local_cumulative.le(local_target).sum().item<int64_t>(), last);
      }
      group.broadcast({row}, static_cast<int>(owner));
      pick = row.item<int64_t>();
    } else {
      pick = draw_row();  // every vector already sits on a seed
    }
    centers[k] = data[pick];
    nearest = torch::minimum(nearest, squared_distances(local, local_sq, centers.slice(0, k, k + 1)).squeeze(1));
  }
  return centers;
}

// The `count` rows (global indices) of largest distance over every rank's share.
torch::Tensor farthest_rows(const torch::Tensor& local_distance, int64_t begin, int64_t count, Collectives& group) {
  // Each rank's own top `count` as (distance, row) pairs, padded to `count` with distance -1
  // (real ones are >= 0) so every rank's part has one shape.
  auto mine = torch::full({2, count}, -1.0, torch::kFloat64);
  const int64_t k = std::min(count, local_distance.size(0));
  if (k > 0) {
    const auto [values, rows] = local_distance.topk(k);
    mine[0].slice(0, 0, k).copy_(values);
    mine[1].slice(0, 0, k).copy_(rows + begin);
  }
  const auto all = torch::cat(group.all_gather(mine), 1);
  const auto best = std::get<1>(all[0].topk(count));
  return all[1].index_select(0, best).to(torch::kInt64).to(local_distance.device());
}

}  // namespace

torch::Tensor kmeans(const torch::Tensor& input, int64_t codes, int64_t iterations, bool cosine, uint64_t seed,
                     int64_t block_bytes, Collectives& group) {
  torch::NoGradGuard no_grad;
  auto data = input.to(torch::kFloat32).contiguous();
  if (cosine) data = torch::nn::functional::normalize(data, torch::nn::functional::NormalizeFuncOptions().dim(1).eps(1e-6));
  const int64_t n = data.size(0);
  TORCH_CHECK(n > 0, "k-means needs at least one vector");
  auto generator = at::detail::createCPUGenerator(seed);
  // This rank's contiguous share of the rows: the only distances it computes.
  const Shard mine = shard_of(n, group.rank(), group.world_size());
  const auto local = data.slice(0, mine.begin, mine.end);
  const auto local_sq = local.pow(2).sum(1);

  auto centers = seed_centres(data, local, local_sq, mine.begin, codes, generator, group);
  // With fewer vectors than codes, the extra codes repeat vectors (plus jitter), so every code
  // starts on real data.
  if (n < codes) centers += 1e-4 * torch::randn(centers.sizes(), generator, torch::kFloat32).to(centers.device());

  for (int64_t it = 0; it < iterations; ++it) {
    const auto [min_distance, assignment] = nearest_centers(local, local_sq, centers, block_bytes);
    auto sums = torch::zeros_like(centers).index_add_(0, assignment, local);
    auto counts = torch::bincount(assignment, {}, codes).to(data.dtype());
    group.all_reduce_sum({sums, counts});
    const auto empty = counts.eq(0);
    centers = torch::where(empty.unsqueeze(1), centers, sums / counts.clamp_min(1).unsqueeze(1));
    // The same on every rank: the counts were summed.
    const int64_t empties = empty.sum().item<int64_t>();
    if (empties > 0 && n >= codes) {
      // Re-seed empty clusters with the points worst served by their current code.
      const auto far = farthest_rows(min_distance, mine.begin, empties, group);
      centers.index_put_({empty.nonzero().squeeze(1)}, data.index_select(0, far));
    }
    if (cosine) centers = torch::nn::functional::normalize(centers, torch::nn::functional::NormalizeFuncOptions().dim(1).eps(1e-6));
  }
  return centers;
}

torch::Tensor kmeans_codebook(const torch::Tensor& data, int64_t codes, int64_t iterations, bool cosine) {
  torch::NoGradGuard no_grad;
  // Rank 0's draw on every rank: all pass kmeans() the same seed.
  auto seed = torch::randint(std::numeric_limits<int64_t>::max(), {1}, torch::kInt64);
  collectives().broadcast({seed}, 0);
  auto centers = kmeans(data, codes, iterations, cosine, static_cast<uint64_t>(seed.item<int64_t>()));
  if (cosine) centers = centers * data.to(torch::kFloat32).norm(2, 1).mean();
  return centers;
}

}  // namespace protoquant::quantizers
