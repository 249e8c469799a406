#include "presence.h"

namespace protoquant::heads {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

class PresenceFunction : public torch::autograd::Function<PresenceFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& zn, const torch::Tensor& en, int64_t batch) {
    const int64_t g = zn.size(0), n = zn.size(1), k = en.size(1);
    // y = softmax over prototypes of the cell-prototype similarities (S / tau).
    const auto y = torch::softmax(torch::bmm(zn, en.transpose(1, 2)), 2);  // G x N x K
    auto [presence, argmax] = y.view({g, batch, n / batch, k}).max(2);  // G x B x K each
    ctx->save_for_backward({zn, en, y, presence, argmax});
    ctx->saved_data["batch"] = batch;
    return presence;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const auto &zn = saved[0], &en = saved[1], &presence = saved[3], &argmax = saved[4];
    auto y = saved[2];
    const int64_t batch = ctx->saved_data["batch"].toInt();
    const int64_t g = zn.size(0), n = zn.size(1), k = en.size(1), cells = n / batch;
    const auto dp = grads[0].to(y.scalar_type());                            // G x B x K
    const auto weighted = dp * presence;                                    // dy[n*,k] y[n*,k]
    // s[g,b,cell] = sum over the prototypes whose max sits in that cell.
    auto s = torch::zeros({g, batch, cells}, y.options()).scatter_add_(2, argmax, weighted);
    // dS = y (dy - s): one pass over y, reusing its memory (backward runs once), then the
    // sparse dy y term at the argmax cells.
    auto ds = y.view({g, batch, cells, k}).mul_(s.neg_().unsqueeze(3));
    ds.scatter_add_(2, argmax.unsqueeze(2), weighted.unsqueeze(2));
    const auto d = ds.view({g, n, k});
    torch::Tensor grad_zn, grad_en;
    if (ctx->needs_input_grad(1)) grad_en = torch::bmm(d.transpose(1, 2), zn);  // G x K x d
    if (ctx->needs_input_grad(0)) grad_zn = torch::bmm(d, en);                  // G x N x d
    return {grad_zn, grad_en, torch::Tensor()};
  }
};

}  // namespace

torch::Tensor prototype_presence(const torch::Tensor& zn, const torch::Tensor& en, int64_t batch) {
  TORCH_CHECK(zn.dim() == 3 && en.dim() == 3 && zn.size(0) == en.size(0) && zn.size(2) == en.size(2),
              "prototype_presence: zn G x N x d and en G x K x d expected");
  TORCH_CHECK(batch > 0 && zn.size(1) % batch == 0, "prototype_presence: N is not a multiple of the batch");
  return PresenceFunction::apply(zn, en, batch);
}

}  // namespace protoquant::heads
