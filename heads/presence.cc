#include "presence.h"

#include "presence_cpu.h"

namespace protoquant::heads {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class PresenceFunction : public torch::autograd::Function<PresenceFunction> {
 public:
  // row_scale travels as a plain value: autograd's apply() cannot take an undefined tensor.
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& z, const torch::Tensor& prototypes,
                               int64_t batch, double temperature, double eps,
                               const c10::optional<torch::Tensor>& scale) {
    torch::Tensor row_scale = scale.value_or(torch::Tensor());
    const int64_t g = z.size(0), n = z.size(1), k = prototypes.size(1);
    // 1/tau is folded into the (small) prototype side.
    torch::Tensor en, norms;  // G x K x d in z's dtype, G x K x 1
    std::tie(en, norms) = scaled_unit_prototypes(prototypes, 1.0 / temperature, eps, z.scalar_type());
    if (!en.defined()) {  // not contiguous fp32 CPU prototypes, or z not fp32/bf16: ATen operations
      norms = prototypes.norm(2, 2, true).clamp_min(eps);  // G x K x 1
      en = (prototypes / norms * (1.0 / temperature)).to(z.scalar_type());
    }
    auto s = torch::bmm(z, en.transpose(1, 2));  // G x N x K raw similarities
    torch::Tensor presence, argmax;
    if (presence_cpu_supports(s)) {
      if (row_scale.defined()) row_scale = row_scale.to(torch::kFloat32).contiguous();  // the loops' type
      std::tie(presence, argmax) = softmax_max_over_cells_(s, row_scale, batch);  // s now holds y
    } else {  // any other device or dtype: the same two passes as ATen operations
      if (row_scale.defined()) s.mul_(row_scale.view({g, n, 1}).to(s.scalar_type()));
      s = torch::softmax(s, 2);
      std::tie(presence, argmax) = s.view({g, batch, n / batch, k}).max(2);
    }
    ctx->save_for_backward({z, en, s, presence, argmax, row_scale, prototypes, norms});
    ctx->saved_data["batch"] = batch;
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["eps"] = eps;
    return presence;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &z = saved[0], &en = saved[1], &presence = saved[3], &argmax = saved[4], &row_scale = saved[5];
    // y is rewritten in place into dS, so this node's backward can run only once.
    TORCH_CHECK(ctx->saved_data.count("consumed") == 0,
                "prototype_presence: backward can run once (retain_graph is not supported)");
    ctx->saved_data["consumed"] = true;
    auto y = saved[2];
    const int64_t batch = ctx->saved_data["batch"].toInt();
    const int64_t g = z.size(0), n = z.size(1), k = en.size(1), cells = n / batch;
    if (presence_cpu_supports(y)) {
      softmax_max_over_cells_backward_(y, presence, argmax, grads[0], row_scale, batch);
    } else {
      const auto weighted = grads[0].to(y.scalar_type()) * presence;  // dy[n*,k] y[n*,k]
      // s[g,b,cell] = sum over the prototypes whose max sits in that cell.
      auto s = torch::zeros({g, batch, cells}, y.options()).scatter_add_(2, argmax, weighted);
      // dS = y (dy - s): one pass over y, then the sparse dy y term at the argmax cells.
      auto ds = y.view({g, batch, cells, k}).mul_(s.neg_().unsqueeze(3));
      ds.scatter_add_(2, argmax.unsqueeze(2), weighted.unsqueeze(2));
      if (row_scale.defined()) y.mul_(row_scale.view({g, n, 1}).to(y.scalar_type()));
    }
    torch::Tensor grad_z, grad_prototypes;
    if (ctx->needs_input_grad(1)) {
      // Through en = e / max(|e|, eps) / tau: the component along e is removed where the norm was
      // not clamped.
      const auto &prototypes = saved[6], &norms = saved[7];
      const double temperature = ctx->saved_data["temperature"].toDouble();
      const double eps = ctx->saved_data["eps"].toDouble();
      const auto grad_en = torch::bmm(y.transpose(1, 2), z);
      grad_prototypes = scaled_unit_prototypes_backward(grad_en, prototypes, norms, 1.0 / temperature, eps);
      if (!grad_prototypes.defined()) {
        const auto scaled = grad_en.to(prototypes.scalar_type()) / (norms * temperature);
        const auto unit = prototypes / norms;
        const auto along = (scaled * unit).sum(2, true) * unit;
        grad_prototypes = torch::where(norms > eps, scaled - along, scaled);
      }
    }
    if (ctx->needs_input_grad(0)) grad_z = torch::bmm(y, en);  // G x N x d
    return {grad_z, grad_prototypes, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

torch::Tensor prototype_presence(const torch::Tensor& z, const torch::Tensor& prototypes, int64_t batch,
                                 double temperature, const torch::Tensor& row_scale, double eps) {
  TORCH_CHECK(z.dim() == 3 && prototypes.dim() == 3 && z.size(0) == prototypes.size(0) &&
                  z.size(2) == prototypes.size(2),
              "prototype_presence: z G x N x d and prototypes G x K x d expected");
  TORCH_CHECK(temperature > 0 && eps > 0, "prototype_presence: temperature and eps must be positive");
  TORCH_CHECK(batch > 0 && z.size(1) % batch == 0, "prototype_presence: N is not a multiple of the batch");
  TORCH_CHECK(!row_scale.defined() || (row_scale.dim() == 2 && row_scale.size(0) == z.size(0) &&
                                       row_scale.size(1) == z.size(1) && !row_scale.requires_grad()),
              "prototype_presence: row_scale must be a constant G x N tensor");
  c10::optional<torch::Tensor> scale;
  if (row_scale.defined()) scale = row_scale;
  return PresenceFunction::apply(z, prototypes, batch, temperature, eps, scale);
}

}  // namespace protoquant::heads
