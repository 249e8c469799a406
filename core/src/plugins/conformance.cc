#include "protoquant/conformance.h"

#include <cmath>
#include <functional>
#include <limits>
#include <sstream>

#include <fmt/format.h>
#include <torch/torch.h>

namespace protoquant {
namespace {

constexpr int64_t kClasses = 4, kChannels = 3, kSide = 32, kDim = 16, kPrototypes = 8;
const char* const kSkip = "SKIP:";

// A check body returns "" (passed), a failure's detail, or kSkip + why it does not apply.
using Body = std::function<std::string()>;

class Suite {
 public:
  Suite(std::string kind, std::string component) : kind_(std::move(kind)), component_(std::move(component)) {}

  void check(const std::string& name, const Body& body) {
    ConformanceCheck c{kind_, component_, name};
    try {
      const std::string detail = body();
      if (detail.rfind(kSkip, 0) == 0) {
        c.outcome = ConformanceCheck::Outcome::kSkipped;
        c.detail = detail.substr(std::string(kSkip).size());
      } else if (!detail.empty()) {
        c.outcome = ConformanceCheck::Outcome::kFailed;
        c.detail = detail;
      }
    } catch (const std::exception& e) {
      c.outcome = ConformanceCheck::Outcome::kFailed;
      std::string what = e.what();
      c.detail = "an exception escaped: " + what.substr(0, what.find('\n'));
    } catch (...) {
      c.outcome = ConformanceCheck::Outcome::kFailed;
      c.detail = "an exception of unknown type escaped";
    }
    checks_.push_back(std::move(c));
  }
  bool ok() const {
    for (const auto& c : checks_) {
      if (c.failed()) return false;
    }
    return true;
  }
  std::vector<ConformanceCheck> take() { return std::move(checks_); }

 private:
  std::string kind_, component_;
  std::vector<ConformanceCheck> checks_;
};

std::string shape(const torch::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::ostringstream out;
  out << t.sizes();
  return out.str();
}

std::string expect_shape(const std::string& what, const torch::Tensor& t, std::vector<int64_t> sizes) {
  if (!t.defined() || t.sizes() != c10::IntArrayRef(sizes)) {
    return fmt::format("{} has shape {}, expected {}", what, shape(t), shape(torch::empty(sizes)));
  }
  return "";
}

BuildContext context() {
  BuildContext c;
  c.num_classes = kClasses;
  c.image_channels = kChannels;
  c.image_height = kSide;
  c.image_width = kSide;
  c.feature_channels = kDim;
  c.seed = 7;
  torch::manual_seed(11);
  c.prototypes = torch::nn::functional::normalize(torch::randn({kPrototypes, kDim}),
                                                  torch::nn::functional::NormalizeFuncOptions().dim(1));
  return c;
}

// Same parameters and seed, same outputs: module state and outputs compared exactly.
template <class T, class Fn>
std::string round_trip(const std::shared_ptr<T>& a, const std::shared_ptr<T>& b, Fn output) {
  std::stringstream stream;
  {
    torch::serialize::OutputArchive archive;
    a->save(archive);
    archive.save_to(stream);
  }
  torch::serialize::InputArchive archive;
  archive.load_from(stream);
  b->load(archive);
  const torch::Tensor x = output(*a), y = output(*b);
  if (!torch::equal(x, y)) return "the reloaded copy computes other outputs";
  return "";
}

std::string gradients_into(torch::nn::Module& module) {
  int64_t with = 0, trainable = 0;
  for (const auto& p : module.parameters()) {
    if (!p.requires_grad()) continue;
    ++trainable;
    if (p.grad().defined() && p.grad().abs().sum().item<double>() > 0) ++with;
  }
  if (trainable > 0 && with == 0) return fmt::format("none of its {} trainable parameters got a gradient", trainable);
  return "";
}

// Building with values its schema refuses: a Status or a component, never an exception.
template <class T>
std::string bad_parameters(const ComponentRegistry<T>& registry, const std::string& name, const BuildContext& c) {
  const auto* entry = registry.find(name);
  for (const auto& spec : entry->schema.specs()) {
    if (!spec.required && !spec.check(spec.default_value).empty()) {
      return fmt::format("the default of '{}' fails its own schema: {}", spec.name, spec.check(spec.default_value));
    }
  }
  int tried = 0;
  for (const auto& spec : entry->schema.specs()) {
    if (spec.type != ParamType::kInt && spec.type != ParamType::kFloat) continue;
    if (!spec.minimum && !spec.maximum) continue;
    const double outside = spec.minimum ? *spec.minimum - 1 : *spec.maximum + 1;
    Params params = Params::defaults(entry->schema);
    if (spec.type == ParamType::kInt) params.set(spec.name, static_cast<int64_t>(outside));
    else params.set(spec.name, outside);
    if (registry.build(name, params, c).ok()) {
      return fmt::format("{} = {} is outside its schema's range, and it built", spec.name, outside);
    }
    ++tried;
  }
  return tried == 0 ? std::string(kSkip) + "no parameter with a range" : "";
}

template <class T>
bool buildable(const ComponentRegistry<T>& registry, const std::string& name, std::string* why) {
  for (const auto& spec : registry.find(name)->schema.specs()) {
    if (spec.required) {
      *why = fmt::format("needs parameter '{}' (no default), so the suite cannot build it alone", spec.name);
      return false;
    }
  }
  return true;
}

// The first check of every suite: the component builds from its schema's defaults (skipped when
// a parameter has none). `skip_failure`: a build that fails is skipped, not failed (a dataset
// whose default folder is not on this machine).
template <class T, class Build>
std::shared_ptr<T> built_from_defaults(Suite& s, const ComponentRegistry<T>& registry, const std::string& name,
                                       Build build, bool skip_failure = false) {
  std::shared_ptr<T> out;
  s.check("builds from its defaults", [&]() -> std::string {
    std::string why;
    if (!buildable(registry, name, &why)) return kSkip + why;
    absl::StatusOr<std::shared_ptr<T>> built = build();
    if (!built.ok()) {
      const std::string message(built.status().message());
      return skip_failure ? kSkip + ("its defaults do not build here: " + message) : message;
    }
    out = *built;
    return "";
  });
  return out;
}

void backbone_suite(Registry& registry, const std::string& name, Suite& s) {
  const BuildContext c = context();
  auto build = [&] {
    torch::manual_seed(3);
    return registry.backbones.build(name, Params::defaults(registry.backbones.find(name)->schema), c);
  };
  const std::shared_ptr<Backbone> b = built_from_defaults(s, registry.backbones, name, build);
  if (!b) return;
  const torch::Tensor images = torch::randn({2, kChannels, kSide, kSide});
  s.check("features and classify: shapes and dtypes", [&]() -> std::string {
    b->eval();
    torch::NoGradGuard no_grad;
    const torch::Tensor f = b->features(images);
    if (f.dim() != 4 || f.size(0) != 2 || f.size(1) != b->channels()) {
      return fmt::format("features have shape {}, expected 2 x channels() ({}) x h x w", shape(f), b->channels());
    }
    if (f.scalar_type() != torch::kFloat32) return "features are not fp32";
    if (!torch::isfinite(f).all().item<bool>()) return "features hold NaN or infinity";
    const torch::Tensor logits = b->classify(f);
    return expect_shape("classify()", logits, {2, kClasses});
  });
  s.check("geometry", [&]() -> std::string {
    const BackboneGeometry g = b->geometry();
    if (g.stride < 0 || g.receptive_field < 0 || g.patch_size < 0) return "negative geometry";
    if (g.receptive_field > 0 && g.stride > g.receptive_field) return "a stride larger than the receptive field";
    return "";
  });
  s.check("deterministic under a seed", [&]() -> std::string {
    auto again = build();
    if (!again.ok()) return std::string(again.status().message());
    torch::NoGradGuard no_grad;
    b->eval();
    (*again)->eval();
    return torch::equal(b->features(images), (*again)->features(images)) ? "" : "two builds with one seed differ";
  });
  s.check("save/load round trip", [&]() -> std::string {
    torch::manual_seed(99);  // another init: only loading can make the copy equal
    auto copy = registry.backbones.build(name, Params::defaults(registry.backbones.find(name)->schema), c);
    if (!copy.ok()) return std::string(copy.status().message());
    torch::NoGradGuard no_grad;
    b->eval();
    (*copy)->eval();
    return round_trip(b, *copy, [&](Backbone& m) { return m.classify(m.features(images)); });
  });
  s.check("gradients reach its parameters", [&]() -> std::string {
    b->train();
    b->zero_grad();
    b->classify(b->features(images)).logsumexp(1).sum().backward();
    b->eval();
    return gradients_into(*b);
  });
  s.check("bad parameter values are errors, not crashes", [&] { return bad_parameters(registry.backbones, name, c); });
}

void quantizer_suite(Registry& registry, const std::string& name, Suite& s) {
  const BuildContext c = context();
  const torch::Tensor features = torch::randn({2, kDim, 3, 3}) * 2 + 0.5;
  const torch::Tensor sample = features.permute({0, 2, 3, 1}).reshape({-1, kDim});
  auto build = [&](uint64_t seed = 3) -> absl::StatusOr<std::shared_ptr<Quantizer>> {
    torch::manual_seed(seed);
    Params params = Params::defaults(registry.quantizers.find(name)->schema);
    if (registry.quantizers.find(name)->schema.find("codes")) params.set("codes", int64_t{8});
    PQ_ASSIGN_OR_RETURN(auto q, registry.quantizers.build(name, params, c));
    PQ_RETURN_IF_ERROR(q->initialize(sample));
    return q;
  };
  const std::shared_ptr<Quantizer> q = built_from_defaults(s, registry.quantizers, name, [&] { return build(); });
  if (!q) return;
  s.check("quantize: shapes, dtypes, index range", [&]() -> std::string {
    q->eval();
    torch::NoGradGuard no_grad;
    const Quantized out = q->quantize(features);
    if (auto e = expect_shape("quantized", out.quantized, {2, kDim, 3, 3}); !e.empty()) return e;
    if (out.indices.scalar_type() != torch::kInt64) return "indices are not int64";
    if (out.indices.dim() < 3 || out.indices.size(0) != 2 || out.indices.size(1) != 3 || out.indices.size(2) != 3) {
      return fmt::format("indices have shape {}, expected 2 x 3 x 3 (x codebooks)", shape(out.indices));
    }
    if (!(out.indices.ge(0).all().item<bool>() && out.indices.lt(q->num_codes()).all().item<bool>())) {
      return fmt::format("an index outside 0..{}", q->num_codes() - 1);
    }
    if (!out.loss.defined() || out.loss.dim() != 0) return "the loss is not a scalar";
    const torch::Tensor book = q->codebook();
    if (book.dim() != 2 || book.size(0) != q->subspaces() * q->num_codes() || book.size(1) * q->subspaces() != kDim) {
      return fmt::format("codebook() has shape {}, expected (subspaces x K) x (D / subspaces)", shape(book));
    }
    return "";
  });
  s.check("deterministic under a seed", [&]() -> std::string {
    auto again = build();
    if (!again.ok()) return std::string(again.status().message());
    torch::NoGradGuard no_grad;
    q->eval();
    (*again)->eval();
    return torch::equal(q->quantize(features).indices, (*again)->quantize(features).indices) ? ""
                                                                                            : "two builds with one seed differ";
  });
  s.check("save/load round trip", [&]() -> std::string {
    auto copy = build(99);  // another seed: only what it saves and loads can make the copy equal
    if (!copy.ok()) return std::string(copy.status().message());
    torch::manual_seed(99);
    torch::NoGradGuard no_grad;
    for (auto& p : (*copy)->parameters()) p.copy_(torch::randn_like(p));
    q->eval();
    (*copy)->eval();
    return round_trip(q, *copy, [&](Quantizer& m) { return m.quantize(features).quantized; });
  });
  s.check("gradients where it learns by gradient", [&]() -> std::string {
    if (!q->learns_by_gradient()) return std::string(kSkip) + "learns without gradients (learns_by_gradient() is false)";
    q->train();
    q->zero_grad();
    const Quantized out = q->quantize(features);
    const torch::Tensor loss = out.quantized.pow(2).sum() + out.loss;
    if (!loss.requires_grad()) {
      q->eval();
      return "its output does not depend on its parameters (no gradient can reach them)";
    }
    loss.backward();
    q->eval();
    // The input's gradient is not required: the backbone is frozen, and the paper's VQ substitutes
    // codewords without a straight-through estimator.
    return gradients_into(*q);
  });
  s.check("NaN input is refused", [&]() -> std::string {
    torch::NoGradGuard no_grad;
    try {
      const Quantized out = q->quantize(torch::full({1, kDim, 2, 2}, std::numeric_limits<float>::quiet_NaN()));
      if (out.indices.ge(0).all().item<bool>() && out.indices.lt(q->num_codes()).all().item<bool>()) {
        return "";  // a valid code for NaN is tolerable; garbage indices are not
      }
      return "NaN input gave indices outside the codebook";
    } catch (const c10::Error&) {
      return "";  // refused with LibTorch's error: what the trainer reports
    }
  });
  s.check("bad parameter values are errors, not crashes", [&] { return bad_parameters(registry.quantizers, name, c); });
}

void head_suite(Registry& registry, const std::string& name, Suite& s) {
  const BuildContext c = context();
  const torch::Tensor features = torch::randn({2, kDim, 4, 4});
  // A head starts from the quantizer's prototypes (BuildContext::prototypes) or learns its own
  // (free prototypes refuse a codebook): whichever context it builds in.
  BuildContext without = c;
  without.prototypes = torch::Tensor();
  auto build = [&](uint64_t seed = 3) -> absl::StatusOr<std::shared_ptr<Head>> {
    const Params params = Params::defaults(registry.heads.find(name)->schema);
    torch::manual_seed(seed);
    auto with = registry.heads.build(name, params, c);
    if (with.ok()) return with;
    torch::manual_seed(seed);
    auto alone = registry.heads.build(name, params, without);
    return alone.ok() ? alone : with;
  };
  const std::shared_ptr<Head> h = built_from_defaults(s, registry.heads, name, [&] { return build(); });
  if (!h) return;
  s.check("forward: logits, presence, similarity", [&]() -> std::string {
    h->eval();
    torch::NoGradGuard no_grad;
    const HeadOutput out = h->forward(features);
    if (auto e = expect_shape("logits", out.logits, {2, kClasses}); !e.empty()) return e;
    const int64_t p = h->class_weights().size(1);
    if (auto e = expect_shape("presence", out.presence, {2, p}); !e.empty()) return e;
    if (!(out.presence.ge(-1e-6).all().item<bool>() && out.presence.le(1 + 1e-6).all().item<bool>())) {
      return "presence outside [0, 1]";
    }
    if (auto e = expect_shape("similarity (eval mode)", out.similarity, {2, p, 4, 4}); !e.empty()) return e;
    const torch::Tensor w = h->class_weights();
    if (auto e = expect_shape("class_weights()", w, {kClasses, p}); !e.empty()) return e;
    if (w.lt(0).any().item<bool>()) return "a negative class weight";
    if (h->prototypes().size(0) != p) return fmt::format("prototypes() has {} rows, the class layer {}", h->prototypes().size(0), p);
    return "";
  });
  s.check("deterministic under a seed", [&]() -> std::string {
    auto again = build();
    if (!again.ok()) return std::string(again.status().message());
    torch::NoGradGuard no_grad;
    h->eval();
    (*again)->eval();
    return torch::equal(h->forward(features).logits, (*again)->forward(features).logits) ? "" : "two builds with one seed differ";
  });
  s.check("save/load round trip", [&]() -> std::string {
    auto copy = build(99);  // another seed: only what it saves and loads can make the copy equal
    if (!copy.ok()) return std::string(copy.status().message());
    torch::NoGradGuard no_grad;
    for (auto& p : (*copy)->parameters()) p.copy_(torch::rand_like(p));
    h->eval();
    (*copy)->eval();
    return round_trip(h, *copy, [&](Head& m) { return m.forward(features).logits; });
  });
  s.check("gradients reach its parameters", [&]() -> std::string {
    h->train();
    h->zero_grad();
    torch::Tensor loss = h->forward(features).logits.logsumexp(1).sum();
    if (auto reg = h->regularization(); reg.defined()) loss = loss + reg;
    if (!loss.requires_grad()) {
      h->eval();
      return "its logits do not depend on its parameters (no gradient can reach them)";
    }
    loss.backward();
    h->eval();
    return gradients_into(*h);
  });
  s.check("a wrongly shaped input is refused", [&]() -> std::string {
    torch::NoGradGuard no_grad;
    try {
      h->eval();
      h->forward(torch::randn({2, kDim + 3, 4, 4}));
    } catch (const c10::Error&) {
      return "";
    } catch (const std::exception&) {
      return "";
    }
    return "features of the wrong width were accepted";
  });
  s.check("bad parameter values are errors, not crashes", [&] { return bad_parameters(registry.heads, name, c); });
}

void dataset_suite(Registry& registry, const std::string& name, Suite& s) {
  BuildContext c;
  c.seed = 7;
  const Params defaults = Params::defaults(registry.datasets.find(name)->schema);
  const std::shared_ptr<Dataset> d = built_from_defaults(
      s, registry.datasets, name, [&] { return registry.datasets.build(name, defaults, c); }, /*skip_failure=*/true);
  if (!d) return;
  s.check("info and batches agree", [&]() -> std::string {
    const DatasetInfo& info = d->info();
    if (info.num_classes < 1) return "no classes";
    if (static_cast<int64_t>(info.class_names.size()) != info.num_classes) return "class_names and num_classes differ";
    if (info.splits.empty()) return "no splits";
    const std::string split = info.splits.back();
    const int64_t n = std::min<int64_t>(2, d->size(split));
    if (n == 0) return std::string(kSkip) + "an empty split";
    auto batch = d->get_eval_batch(split, torch::arange(n, torch::kInt64));
    if (!batch.ok()) return std::string(batch.status().message());
    if (auto e = expect_shape("images", batch->images, {n, info.channels, info.height, info.width}); !e.empty()) return e;
    if (!(batch->labels.ge(0).all().item<bool>() && batch->labels.lt(info.num_classes).all().item<bool>())) return "a label out of range";
    if (info.has_parts && !batch->parts.defined()) return "has_parts, but a batch has no parts";
    auto again = d->get_eval_batch(split, torch::arange(n, torch::kInt64));
    if (!again.ok() || !torch::equal(again->images, batch->images)) return "the eval transform is not deterministic";
    if (d->get_eval_batch(split, torch::tensor({d->size(split)}, torch::kInt64)).ok()) return "an index past the split was served";
    return "";
  });
  s.check("an intervention that removes nothing serves the eval batch, with part maps", [&]() -> std::string {
    const DatasetInfo& info = d->info();
    if (!info.has_interventions) return std::string(kSkip) + "no interventions";
    if (static_cast<int64_t>(info.class_parts.size()) != info.num_classes) return "class_parts and num_classes differ";
    const std::string split = info.splits.back();
    const int64_t n = std::min<int64_t>(2, d->size(split));
    if (n == 0) return std::string(kSkip) + "an empty split";
    auto eval = d->get_eval_batch(split, torch::arange(n, torch::kInt64));
    auto same = d->get_intervened_batch(split, torch::arange(n, torch::kInt64), {Intervention{}});
    if (!eval.ok() || !same.ok()) return std::string((eval.ok() ? same.status() : eval.status()).message());
    if (!torch::equal(eval->images, same->images)) return "the re-rendered images differ from the eval batch's";
    if (auto e = expect_shape("part_maps", same->part_maps, {n, info.height, info.width}); !e.empty()) return e;
    const int64_t parts = static_cast<int64_t>(info.part_names.size());
    if (same->part_maps.gt(parts).any().item<bool>()) return "a part map code past the part names";
    return "";
  });
  s.check("bad parameter values are errors, not crashes", [&] { return bad_parameters(registry.datasets, name, c); });
}

void metric_suite(Registry& registry, const std::string& name, Suite& s) {
  BuildContext c = context();
  const Params defaults = Params::defaults(registry.metrics.find(name)->schema);
  const std::shared_ptr<Metric> m =
      built_from_defaults(s, registry.metrics, name, [&] { return registry.metrics.build(name, defaults, c); });
  if (!m) return;
  s.check("compute before any batch is a Status", [&]() -> std::string {
    (void)m->needs();
    (void)m->compute();  // an error or empty values; an exception fails the check
    return "";
  });
  s.check("bad parameter values are errors, not crashes", [&] { return bad_parameters(registry.metrics, name, c); });
}

}  // namespace

std::string ConformanceCheck::line() const {
  const char* word = outcome == Outcome::kPassed ? "PASS" : outcome == Outcome::kFailed ? "FAIL" : "SKIP";
  return fmt::format("{} {} {}: {}{}", word, kind, component, check, detail.empty() ? "" : ": " + detail);
}

std::vector<ConformanceCheck> check_component(Registry& registry, const std::string& kind, const std::string& name) {
  Suite suite(kind, name);
  if (kind == "backbone") backbone_suite(registry, name, suite);
  else if (kind == "quantizer") quantizer_suite(registry, name, suite);
  else if (kind == "head") head_suite(registry, name, suite);
  else if (kind == "dataset") dataset_suite(registry, name, suite);
  else if (kind == "metric") metric_suite(registry, name, suite);
  else suite.check("known kind", [&] { return fmt::format("no suite for kind '{}'", kind); });
  return suite.take();
}

std::vector<ConformanceCheck> check_library(Registry& registry, const std::string& library) {
  std::vector<ConformanceCheck> all;
  auto add = [&](const std::string& kind, const auto& components) {
    for (const auto& [name, entry] : components.entries()) {
      if (entry.library != library) continue;
      for (auto& c : check_component(registry, kind, name)) all.push_back(std::move(c));
    }
  };
  add("backbone", registry.backbones);
  add("quantizer", registry.quantizers);
  add("head", registry.heads);
  add("dataset", registry.datasets);
  add("metric", registry.metrics);
  if (all.empty()) {
    ConformanceCheck none{"library", library, "registers a component"};
    none.outcome = ConformanceCheck::Outcome::kFailed;
    none.detail = "it registers no component";
    all.push_back(none);
  }
  return all;
}

}  // namespace protoquant
