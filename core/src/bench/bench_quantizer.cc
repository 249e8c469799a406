#include <chrono>
#include <fstream>

#include <fmt/format.h>
#include <torch/torch.h>

#include "bench.h"
#include "protoquant/cpu_info.h"
#include "protoquant/process.h"
#include "protoquant/status.h"

namespace protoquant {
namespace fs = std::filesystem;

namespace {

absl::StatusOr<torch::Tensor> read_floats(const fs::path& path, std::vector<int64_t> shape) {
  int64_t count = 1;
  for (auto s : shape) count *= s;
  std::error_code ec;
  const auto size = fs::file_size(path, ec);
  if (ec) return absl::NotFoundError(fmt::format("{}: {}", path.string(), ec.message()));
  if (size != static_cast<uintmax_t>(count) * sizeof(float)) {
    return absl::InvalidArgumentError(
        fmt::format("{}: {} bytes, expected {} float32 values ({} bytes)", path.string(), size, count, count * 4));
  }
  auto tensor = torch::empty(shape, torch::kFloat32);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(tensor.data_ptr<float>()), static_cast<std::streamsize>(size));
  if (!in) return absl::DataLossError(fmt::format("{}: read failed", path.string()));
  return tensor;
}

}  // namespace

absl::Status bench_quantizer(Registry& registry, const QuantizerBenchOptions& o) {
  return guard("bench quantizer", [&]() -> absl::Status {
    const auto* entry = registry.quantizers.find(o.kind);
    if (entry == nullptr) return absl::NotFoundError(fmt::format("unknown quantizer '{}'", o.kind));
    const int64_t threads = resolve_threads(o.threads);
    torch::set_num_threads(static_cast<int>(threads));
    torch::manual_seed(0);

    Params params = Params::defaults(entry->schema);
    params.set("codes", o.codes);
    params.set("metric", o.metric);
    params.set("init", std::string("normal"));
    params.set("search", std::string(o.dtype == "bf16" ? "bf16" : "exact"));
    if (entry->schema.find("rerank_candidates") != nullptr) params.set("rerank_candidates", o.candidates);
    if (entry->schema.find("subspaces")) params.set("subspaces", o.subspaces);
    BuildContext context;
    context.feature_channels = o.dim;
    PQ_ASSIGN_OR_RETURN(auto quantizer, registry.quantizers.build(o.kind, params, context));
    quantizer->eval();
    torch::NoGradGuard no_grad;

    torch::Tensor vectors;
    const auto book = quantizer->codebook();  // a view of the quantizer's storage
    if (o.data_dir.empty()) {
      vectors = torch::randn({o.vectors, o.dim});
      book.copy_(torch::randn(book.sizes()));
    } else {
      PQ_ASSIGN_OR_RETURN(vectors, read_floats(fs::path(o.data_dir) / "vectors.f32", {o.vectors, o.dim}));
      PQ_ASSIGN_OR_RETURN(auto loaded, read_floats(fs::path(o.data_dir) / "codebook.f32",
                                                   std::vector<int64_t>(book.sizes().begin(), book.sizes().end())));
      book.copy_(loaded);
    }

    if (o.train_iterations > 0) {
      // k-means training of the codebook from these vectors (k-means++ seeding, then Lloyd).
      params.set("init", std::string("kmeans"));
      params.set("kmeans_iterations", o.train_iterations);
      PQ_ASSIGN_OR_RETURN(auto trained, registry.quantizers.build(o.kind, params, context));
      const auto start = std::chrono::steady_clock::now();
      PQ_RETURN_IF_ERROR(trained->initialize(vectors));
      const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      auto flat = vectors.t().reshape({1, o.dim, o.vectors, 1}).transpose(2, 3);  // 1 x D x 1 x N
      const auto reconstruction = trained->quantize(flat.contiguous()).quantized;
      const double mse = (reconstruction - flat).pow(2).sum(1).mean().item<double>();
      fmt::print("train_seconds: {:.3f}\ntrain_mse: {:.6f}\n", seconds, mse);
    }

    torch::Tensor codes = quantizer->encode(vectors.slice(0, 0, std::min<int64_t>(o.vectors, 4096)));  // warm-up
    double best = 1e30;
    for (int64_t r = 0; r < o.repeat; ++r) {
      const auto start = std::chrono::steady_clock::now();
      codes = quantizer->encode(vectors);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }
    fmt::print("cpu: {}\n", cpu_info().describe());
    fmt::print("kind: {}\ndtype: {}\nthreads: {}\nvectors: {}\ndim: {}\ncodes: {}\nseconds: {:.4f}\n"
               "assignments_per_s: {:.0f}\n",
               o.kind, o.dtype, threads, o.vectors, o.dim, o.codes, best, static_cast<double>(o.vectors) / best);
    if (!o.codes_out.empty()) {
      const auto out = codes.to(torch::kInt64).contiguous();
      std::ofstream file(o.codes_out, std::ios::binary);
      file.write(reinterpret_cast<const char*>(out.data_ptr<int64_t>()),
                 static_cast<std::streamsize>(out.numel() * sizeof(int64_t)));
      if (!file) return absl::InternalError(fmt::format("{}: write failed", o.codes_out));
    }
    return absl::OkStatus();
  });
}

}  // namespace protoquant
