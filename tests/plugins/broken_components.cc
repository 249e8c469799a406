// One deliberately faulty component per class of fault `protoquant check-plugin` must catch:
// a wrong output shape, non-determinism under a seed, an exception escaping a call, negative
// class weights, no gradient, and state that does not survive save/load.
#include <random>

#include <torch/torch.h>

#include "protoquant/plugin.h"

namespace {

using namespace protoquant;

// Returns a map of the wrong width.
class WrongShape : public Quantizer {
 public:
  explicit WrongShape(int64_t dim) { book_ = register_parameter("book", torch::randn({4, dim})); }
  Quantized quantize(const torch::Tensor& f) override {
    return {f.narrow(1, 0, f.size(1) - 1), torch::zeros({f.size(0), f.size(2), f.size(3)}, torch::kInt64), torch::zeros({})};
  }
  torch::Tensor encode(const torch::Tensor& v) const override { return torch::zeros({v.size(0), 1}, torch::kInt64); }
  torch::Tensor codebook() const override { return book_; }
  int64_t num_codes() const override { return 4; }

 private:
  torch::Tensor book_;
};

// Draws its codebook from the operating system's entropy, not torch's seeded generator.
class Unseeded : public Quantizer {
 public:
  explicit Unseeded(int64_t dim) {
    std::random_device device;
    book_ = register_parameter("book", torch::randn({4, dim}, at::detail::createCPUGenerator(device())));
  }
  Quantized quantize(const torch::Tensor& f) override {
    const auto x = f.permute({0, 2, 3, 1});
    const auto idx = torch::cdist(x.reshape({-1, x.size(3)}), book_).argmin(1).view({f.size(0), f.size(2), f.size(3)});
    const auto q = book_.index_select(0, idx.flatten()).view(x.sizes()).permute({0, 3, 1, 2});
    return {f + (q - f).detach(), idx, torch::mse_loss(q, f.detach())};
  }
  torch::Tensor encode(const torch::Tensor& v) const override { return torch::cdist(v, book_).argmin(1).unsqueeze(1); }
  torch::Tensor codebook() const override { return book_; }
  int64_t num_codes() const override { return 4; }

 private:
  torch::Tensor book_;
};

// Throws from features().
class Throwing : public Backbone {
 public:
  Throwing() { w_ = register_parameter("w", torch::ones({1})); }
  torch::Tensor features(const torch::Tensor&) override { throw std::runtime_error("throwing backbone: features() failed"); }
  torch::Tensor classify(const torch::Tensor& f) override { return f.mean({2, 3}); }
  int64_t channels() const override { return 16; }
  BackboneGeometry geometry() const override { return {4, 8, 0}; }

 private:
  torch::Tensor w_;
};

// A head whose class layer has negative weights, and (a second fault) a buffer it forgets to
// register, so its state does not survive save/load; its logits carry no gradient.
class Careless : public Head {
 public:
  Careless(int64_t classes, const torch::Tensor& prototypes) {
    prototypes_ = register_parameter("prototypes", prototypes.clone());
    weights_ = register_parameter("weights", -torch::rand({classes, prototypes.size(0)}));
    scale_ = torch::rand({1});  // not registered: lost by save/load
  }
  HeadOutput forward(const torch::Tensor& f) override {
    const auto x = torch::nn::functional::normalize(f, torch::nn::functional::NormalizeFuncOptions().dim(1));
    const auto s = torch::einsum("bdhw,pd->bphw", {x, prototypes_}) * scale_;
    const auto a = s.flatten(2).amax(2).clamp(0, 1);
    return {torch::matmul(a, weights_.t()).detach(), a, is_training() ? torch::Tensor() : s};
  }
  torch::Tensor class_weights() const override { return weights_; }
  torch::Tensor prototypes() const override { return prototypes_; }

 private:
  torch::Tensor prototypes_, weights_, scale_;
};

absl::Status register_broken(Registry& registry) {
  auto dim = [](const BuildContext& c) { return c.feature_channels > 0 ? c.feature_channels : 16; };
  PQ_RETURN_IF_ERROR(registry.quantizers.add(
      {"wrong_shape", "returns a map of the wrong width (test plugin)", ParamSchema{},
       [dim](const Params&, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Quantizer>> {
         return std::make_shared<WrongShape>(dim(c));
       }}));
  PQ_RETURN_IF_ERROR(registry.quantizers.add(
      {"unseeded", "ignores the seed (test plugin)", ParamSchema{},
       [dim](const Params&, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Quantizer>> {
         return std::make_shared<Unseeded>(dim(c));
       }}));
  PQ_RETURN_IF_ERROR(registry.backbones.add(
      {"throwing", "throws from features() (test plugin)", ParamSchema{},
       [](const Params&, const BuildContext&) -> absl::StatusOr<std::shared_ptr<Backbone>> {
         return std::make_shared<Throwing>();
       }}));
  return registry.heads.add(
      {"careless", "negative weights, no gradient, an unregistered buffer (test plugin)", ParamSchema{},
       [](const Params&, const BuildContext& c) -> absl::StatusOr<std::shared_ptr<Head>> {
         if (!c.prototypes.defined()) return absl::InvalidArgumentError("careless needs prototypes");
         return std::make_shared<Careless>(c.num_classes, c.prototypes);
       }});
}

}  // namespace

PROTOQUANT_PLUGIN(register_broken)
