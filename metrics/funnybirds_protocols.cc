#include "funnybirds_protocols.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <set>

#include <fmt/format.h>
#include <torch/torch.h>

#include "protoquant/status.h"

namespace protoquant::metrics {

torch::Tensor code_columns(const torch::Tensor& part_maps, int64_t parts) {
  return torch::where(part_maps.ge(0), part_maps, parts - part_maps);
}

std::vector<std::vector<int64_t>> minimal_sufficient_part_sets(const std::vector<std::vector<int64_t>>& class_parts,
                                                               int64_t c) {
  const std::vector<int64_t>& own = class_parts[static_cast<size_t>(c)];
  const size_t n = own.size();
  // Subsets of the class's parts as bit masks, smallest first: a sufficient set is minimal when
  // no sufficient set found before it (smaller or equal in size) is inside it.
  std::vector<uint32_t> masks;
  for (uint32_t mask = 1; mask < (1U << n); ++mask) masks.push_back(mask);
  std::stable_sort(masks.begin(), masks.end(),
                   [](uint32_t a, uint32_t b) { return __builtin_popcount(a) < __builtin_popcount(b); });
  std::vector<uint32_t> minimal;
  for (uint32_t mask : masks) {
    bool sufficient = true;
    for (size_t other = 0; other < class_parts.size() && sufficient; ++other) {
      if (static_cast<int64_t>(other) == c) continue;
      const auto& theirs = class_parts[other];
      bool inside = true;  // every part of the subset is also the other class's
      for (size_t j = 0; j < n && inside; ++j) {
        if ((mask >> j & 1U) && std::find(theirs.begin(), theirs.end(), own[j]) == theirs.end()) inside = false;
      }
      sufficient = !inside;
    }
    if (!sufficient) continue;
    const bool has_smaller = std::any_of(minimal.begin(), minimal.end(), [&](uint32_t m) { return (m & mask) == m; });
    if (!has_smaller) minimal.push_back(mask);
  }
  std::vector<std::vector<int64_t>> sets;
  for (uint32_t mask : minimal) {
    std::vector<int64_t> set;
    for (size_t j = 0; j < n; ++j) {
      if (mask >> j & 1U) set.push_back(own[j]);
    }
    sets.push_back(set);
  }
  return sets;
}

namespace {

std::vector<double> ranks(const std::vector<double>& values) {
  std::vector<size_t> order(values.size());
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return values[a] < values[b]; });
  std::vector<double> rank(values.size());
  for (size_t i = 0; i < order.size();) {
    size_t j = i;
    while (j + 1 < order.size() && values[order[j + 1]] == values[order[i]]) ++j;
    for (size_t k = i; k <= j; ++k) rank[order[k]] = (static_cast<double>(i + j) / 2.0) + 1.0;
    i = j + 1;
  }
  return rank;
}

}  // namespace

double spearman(const std::vector<double>& a, const std::vector<double>& b) {
  const std::vector<double> ra = ranks(a), rb = ranks(b);
  const double n = static_cast<double>(a.size());
  const double ma = std::accumulate(ra.begin(), ra.end(), 0.0) / n, mb = std::accumulate(rb.begin(), rb.end(), 0.0) / n;
  double cov = 0, va = 0, vb = 0;
  for (size_t i = 0; i < ra.size(); ++i) {
    cov += (ra[i] - ma) * (rb[i] - mb);
    va += (ra[i] - ma) * (ra[i] - ma);
    vb += (rb[i] - mb) * (rb[i] - mb);
  }
  if (va == 0 || vb == 0) return std::numeric_limits<double>::quiet_NaN();
  return cov / std::sqrt(va * vb);
}

nlohmann::json FunnyBirdsSettings::to_json() const {
  return {{"thresholds", thresholds.size()},
          {"threshold_min", thresholds.empty() ? 0.0 : thresholds.front()},
          {"threshold_max", thresholds.empty() ? 0.0 : thresholds.back()},
          {"tolerance", tolerance},
          {"render_batch", render_batch}};
}

namespace {

// The first pair of other classes (in index order) that share parts with class y, disjoint ones
// (target_sensitivity_protocol: classes that share 2 of FunnyBirds' 5 part types; here any).
bool contrast_pair(const std::vector<std::vector<int64_t>>& class_parts, int64_t y, int64_t* c1, int64_t* c2,
                   std::vector<int64_t>* o1, std::vector<int64_t>* o2) {
  auto overlap = [&](int64_t c) {
    std::vector<int64_t> shared;
    for (int64_t p : class_parts[static_cast<size_t>(y)]) {
      const auto& theirs = class_parts[static_cast<size_t>(c)];
      if (std::find(theirs.begin(), theirs.end(), p) != theirs.end()) shared.push_back(p);
    }
    return shared;
  };
  const int64_t classes = static_cast<int64_t>(class_parts.size());
  for (int64_t a = 0; a < classes; ++a) {
    if (a == y) continue;
    const std::vector<int64_t> first = overlap(a);
    if (first.empty()) continue;
    for (int64_t b = a + 1; b < classes; ++b) {
      if (b == y) continue;
      const std::vector<int64_t> second = overlap(b);
      if (second.empty()) continue;
      const bool disjoint = std::none_of(first.begin(), first.end(), [&](int64_t p) {
        return std::find(second.begin(), second.end(), p) != second.end();
      });
      if (!disjoint) continue;
      *c1 = a, *c2 = b, *o1 = first, *o2 = second;
      return true;
    }
  }
  return false;
}

}  // namespace

FunnyBirdsProtocols::FunnyBirdsProtocols(FunnyBirdsSettings settings, std::vector<std::vector<int64_t>> class_parts,
                                         int64_t parts)
    : settings_(std::move(settings)), class_parts_(std::move(class_parts)), parts_(parts) {
  for (size_t c = 0; c < class_parts_.size(); ++c) {
    sufficient_.push_back(minimal_sufficient_part_sets(class_parts_, static_cast<int64_t>(c)));
    ContrastPair pair;
    pair.found = contrast_pair(class_parts_, static_cast<int64_t>(c), &pair.c1, &pair.c2, &pair.o1, &pair.o2);
    contrast_.push_back(std::move(pair));
  }
  csdc_ = torch::zeros({thresholds()}, torch::kFloat64);
  pc_ = torch::zeros_like(csdc_);
  dc_ = torch::zeros_like(csdc_);
  d_ = torch::zeros_like(csdc_);
}

namespace {

// One image's re-render: which sample, without what. Keyed so that protocols share renders.
struct Request {
  int64_t image = 0;  // row in the batch
  Intervention what;
};

std::string request_key(int64_t image, std::vector<int64_t> parts, int64_t object) {
  std::sort(parts.begin(), parts.end());
  return fmt::format("{}|{}|{}", image, fmt::join(parts, ","), object);
}

}  // namespace

absl::Status FunnyBirdsProtocols::update(const torch::Tensor& indices, const ProtocolForward& forward,
                                         const ProtocolRender& render, EvalDump* dump) {
  const torch::Tensor where = indices.to(torch::kCPU, torch::kInt64).contiguous();
  const int64_t n = where.size(0), t_count = thresholds();
  if (n == 0) return absl::OkStatus();
  PQ_ASSIGN_OR_RETURN(const Batch originals, render(where, {Intervention{}}));
  const torch::Tensor maps = originals.part_maps.to(torch::kCPU, torch::kInt64);
  const torch::Tensor columns = code_columns(maps, parts_);
  const int64_t objects = std::max<int64_t>(0, -maps.min().item<int64_t>());
  const int64_t num_columns = 1 + parts_ + objects;
  PQ_ASSIGN_OR_RETURN(const ProtocolOutput base, forward(originals, columns, num_columns, /*explain=*/true));
  const torch::Tensor logits0 = base.logits.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const torch::Tensor importance = base.importance.detach().to(torch::kCPU, torch::kFloat64).contiguous();
  const int64_t classes = static_cast<int64_t>(class_parts_.size());
  if (logits0.dim() != 2 || logits0.size(0) != n || logits0.size(1) < classes) {
    return absl::InternalError(fmt::format("funnybirds: the model gave logits [{}] for {} images of {} classes",
                                           fmt::join(logits0.sizes(), ", "), n, classes));
  }
  if (importance.sizes() != torch::IntArrayRef({n, classes, num_columns})) {
    return absl::InternalError(fmt::format("funnybirds: part importance [{}], expected [{}, {}, {}]",
                                           fmt::join(importance.sizes(), ", "), n, classes, num_columns));
  }
  const torch::Tensor labels = originals.labels.to(torch::kCPU, torch::kInt64);
  const torch::Tensor predictions = logits0.argmax(1);
  const auto imp = importance.accessor<double, 3>();
  const auto l0 = logits0.accessor<double, 2>();

  // What each image shows: its parts and background objects, from its part map.
  std::vector<std::vector<int64_t>> shown_parts(static_cast<size_t>(n)), shown_objects(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const torch::Tensor codes = std::get<0>(torch::_unique(maps[i]));
    for (int64_t j = 0; j < codes.size(0); ++j) {
      const int64_t code = codes[j].item<int64_t>();
      if (code > 0) shown_parts[static_cast<size_t>(i)].push_back(code - 1);
      if (code < 0) shown_objects[static_cast<size_t>(i)].push_back(-code - 1);
    }
  }
  // Parts whose importance for class c exceeds threshold x the total of the row (with_bg: the
  // objects too), among those the image shows.
  const torch::Tensor totals = importance.sum(2);  // B x C: each explanation's total
  const auto total_of = totals.accessor<double, 2>();
  auto important = [&](int64_t i, int64_t c, double threshold, bool with_objects) {
    std::set<int64_t> chosen;  // columns
    if (c >= classes) return chosen;  // a model's extra output (no class) has no explanation
    const double total = total_of[i][c];
    for (int64_t p : shown_parts[static_cast<size_t>(i)]) {
      if (imp[i][c][1 + p] > threshold * total) chosen.insert(1 + p);
    }
    if (with_objects) {
      for (int64_t k : shown_objects[static_cast<size_t>(i)]) {
        if (imp[i][c][1 + parts_ + k] > threshold * total) chosen.insert(1 + parts_ + k);
      }
    }
    return chosen;
  };

  // Every re-render the protocols need, once each.
  std::vector<Request> requests;
  std::map<std::string, int64_t> request_of;
  auto request = [&](int64_t i, std::vector<int64_t> removed, int64_t object) -> int64_t {
    if (removed.empty() && object < 0) return -1;  // the original
    const std::string key = request_key(i, removed, object);
    const auto found = request_of.find(key);
    if (found != request_of.end()) return found->second;
    const auto id = static_cast<int64_t>(requests.size());
    requests.push_back(Request{i, Intervention{std::move(removed), object}});
    request_of.emplace(key, id);
    return id;
  };
  auto parts_of = [&](const std::set<int64_t>& chosen) {
    std::vector<int64_t> parts;
    for (int64_t column : chosen) {
      if (column >= 1 && column <= parts_) parts.push_back(column - 1);
    }
    return parts;
  };
  std::vector<std::vector<int64_t>> single_part(static_cast<size_t>(n)), single_object(static_cast<size_t>(n));
  std::vector<std::vector<int64_t>> preserve(static_cast<size_t>(n)), remove(static_cast<size_t>(n));
  // Target sensitivity's two re-renders per image: without the parts shared with c1, with c2.
  std::vector<std::pair<int64_t, int64_t>> contrast(static_cast<size_t>(n), {-1, -1});
  for (int64_t i = 0; i < n; ++i) {
    const auto ii = static_cast<size_t>(i);
    const int64_t predicted = predictions[i].item<int64_t>();
    for (int64_t p : shown_parts[ii]) single_part[ii].push_back(request(i, {p}, -1));
    for (int64_t k : shown_objects[ii]) single_object[ii].push_back(request(i, {}, k));
    for (int64_t t = 0; t < t_count; ++t) {
      const std::set<int64_t> chosen = important(i, predicted, settings_.thresholds[static_cast<size_t>(t)], false);
      const std::vector<int64_t> kept = parts_of(chosen);
      std::vector<int64_t> dropped;
      for (int64_t p : shown_parts[ii]) {
        if (std::find(kept.begin(), kept.end(), p) == kept.end()) dropped.push_back(p);
      }
      preserve[ii].push_back(request(i, dropped, -1));
      remove[ii].push_back(request(i, kept, -1));
    }
    const ContrastPair& pair = contrast_[static_cast<size_t>(labels[i].item<int64_t>())];
    if (pair.found) contrast[ii] = {request(i, pair.o1, -1), request(i, pair.o2, -1)};
  }

  // Render and run them, render_batch at a time.
  torch::Tensor altered = torch::empty({static_cast<int64_t>(requests.size()), logits0.size(1)}, torch::kFloat64);
  for (size_t begin = 0; begin < requests.size(); begin += static_cast<size_t>(settings_.render_batch)) {
    const size_t end = std::min(requests.size(), begin + static_cast<size_t>(settings_.render_batch));
    std::vector<int64_t> rows;
    std::vector<Intervention> what;
    for (size_t r = begin; r < end; ++r) {
      rows.push_back(where[requests[r].image].item<int64_t>());
      what.push_back(requests[r].what);
    }
    PQ_ASSIGN_OR_RETURN(const Batch rendered, render(torch::tensor(rows, torch::kInt64), what));
    const torch::Tensor rendered_columns = code_columns(rendered.part_maps.to(torch::kCPU, torch::kInt64), parts_);
    PQ_ASSIGN_OR_RETURN(const ProtocolOutput out, forward(rendered, rendered_columns, num_columns, /*explain=*/false));
    altered.slice(0, static_cast<int64_t>(begin), static_cast<int64_t>(end))
        .copy_(out.logits.detach().to(torch::kCPU, torch::kFloat64));
  }
  const auto la = altered.accessor<double, 2>();
  const torch::Tensor altered_predictions = altered.numel() > 0 ? altered.argmax(1) : torch::zeros({0}, torch::kInt64);
  const auto pa = altered_predictions.accessor<int64_t, 1>();
  const auto p0 = predictions.accessor<int64_t, 1>();
  auto logit = [&](int64_t i, int64_t r, int64_t c) { return r < 0 ? l0[i][c] : la[r][c]; };
  auto prediction = [&](int64_t i, int64_t r) { return r < 0 ? p0[i] : pa[r]; };
  const double nan = std::numeric_limits<double>::quiet_NaN();
  torch::Tensor csdc_rows = torch::full({n, t_count}, nan, torch::kFloat64), pc_rows = torch::zeros_like(csdc_rows),
                dc_rows = torch::zeros_like(csdc_rows), d_rows = torch::full_like(csdc_rows, nan);
  torch::Tensor sd_rows = torch::full({n}, nan, torch::kFloat64), ts_rows = torch::full({n}, nan, torch::kFloat64),
                bi_rows = torch::zeros({n, 2}, torch::kFloat64);

  // Score every protocol on every image.
  const double tolerance = settings_.tolerance;
  for (int64_t i = 0; i < n; ++i) {
    const auto ii = static_cast<size_t>(i);
    const int64_t y = labels[i].item<int64_t>(), predicted = predictions[i].item<int64_t>();
    images_ += 1;
    correct_ += predicted == y ? 1 : 0;
    // CSDC: on correctly classified images, the best share of a minimal sufficient part set that
    // the explanation of the true class calls important.
    if (predicted == y) {
      csdc_images_ += 1;
      for (int64_t t = 0; t < t_count; ++t) {
        const std::vector<int64_t> chosen = parts_of(important(i, y, settings_.thresholds[static_cast<size_t>(t)], false));
        double best = 0;
        for (const auto& set : sufficient_[static_cast<size_t>(y)]) {
          const auto hit = std::count_if(set.begin(), set.end(), [&](int64_t p) {
            return std::find(chosen.begin(), chosen.end(), p) != chosen.end();
          });
          best = std::max(best, static_cast<double>(hit) / static_cast<double>(set.size()));
        }
        csdc_rows[i][t] = best;
      }
    }
    // PC and DC: the prediction survives removing the unimportant parts, and changes when the
    // important ones go.
    for (int64_t t = 0; t < t_count; ++t) {
      pc_rows[i][t] = prediction(i, preserve[ii][static_cast<size_t>(t)]) == predicted ? 1.0 : 0.0;
      dc_rows[i][t] = prediction(i, remove[ii][static_cast<size_t>(t)]) != predicted ? 1.0 : 0.0;
    }
    // Irrelevant for the true class: parts and objects whose removal moves its logit by under the
    // tolerance, or raises it.
    const double original = l0[i][y];
    auto irrelevant = [&](int64_t r) {
      const double changed = logit(i, r, y);
      return std::abs(original - changed) < std::abs(tolerance * original) || original < changed;
    };
    std::set<int64_t> unimportant;  // columns
    for (size_t j = 0; j < shown_parts[ii].size(); ++j) {
      if (irrelevant(single_part[ii][j])) unimportant.insert(1 + shown_parts[ii][j]);
    }
    int64_t relevant_objects = 0;
    for (size_t j = 0; j < shown_objects[ii].size(); ++j) {
      const int64_t r = single_object[ii][j];
      if (irrelevant(r)) unimportant.insert(1 + parts_ + shown_objects[ii][j]);
      // BI: an object is relevant when removing it lowers the true class's logit by the tolerance.
      const double changed = logit(i, r, y);
      if (std::abs(original - changed) >= std::abs(tolerance * original) && original > changed) ++relevant_objects;
    }
    bi_rows[i][0] = static_cast<double>(relevant_objects);
    bi_rows[i][1] = static_cast<double>(shown_objects[ii].size());
    bi_relevant_ += static_cast<double>(relevant_objects);
    bi_objects_ += static_cast<double>(shown_objects[ii].size());
    // D: the share of the irrelevant things the explanation calls important.
    if (!unimportant.empty()) {
      d_images_ += 1;
      for (int64_t t = 0; t < t_count; ++t) {
        const std::set<int64_t> chosen = important(i, y, settings_.thresholds[static_cast<size_t>(t)], true);
        const auto hit = std::count_if(unimportant.begin(), unimportant.end(),
                                       [&](int64_t column) { return chosen.count(column) > 0; });
        d_rows[i][t] = static_cast<double>(hit) / static_cast<double>(unimportant.size());
      }
    }
    // SD: the rank correlation of each part's importance with the drop of the true class's logit
    // when that part alone is removed, mapped to [0, 1].
    if (shown_parts[ii].size() >= 2) {
      std::vector<double> drops, weights;
      for (size_t j = 0; j < shown_parts[ii].size(); ++j) {
        drops.push_back(original - logit(i, single_part[ii][j], y));
        weights.push_back(imp[i][y][1 + shown_parts[ii][j]]);
      }
      const double rho = spearman(drops, weights);
      if (std::isfinite(rho)) {
        sd_rows[i] = rho * 0.5 + 0.5;
        sd_sum_ += rho * 0.5 + 0.5;
        sd_images_ += 1;
      }
    }
    // TS: explaining class c1 puts more importance on the parts the image shares with c1 than
    // explaining c2 does, and the other way round; only where the model itself behaves so.
    const ContrastPair& pair = contrast_[static_cast<size_t>(y)];
    if (!pair.found) {
      ts_no_pair_ += 1;
    } else {
      const auto [r1, r2] = contrast[ii];
      const double d11 = logit(i, r1, pair.c1) - l0[i][pair.c1], d12 = logit(i, r2, pair.c1) - l0[i][pair.c1];
      const double d21 = logit(i, r1, pair.c2) - l0[i][pair.c2], d22 = logit(i, r2, pair.c2) - l0[i][pair.c2];
      if (!(d11 < d12 && d22 < d21)) {
        ts_assumption_failed_ += 1;
      } else {
        auto sum = [&](int64_t c, const std::vector<int64_t>& parts) {
          double s = 0;
          for (int64_t p : parts) s += imp[i][c][1 + p];
          return s;
        };
        const double hits = (sum(pair.c1, pair.o1) > sum(pair.c2, pair.o1) ? 1.0 : 0.0) +
                            (sum(pair.c1, pair.o2) < sum(pair.c2, pair.o2) ? 1.0 : 0.0);
        ts_rows[i] = hits;
        ts_hits_ += hits;
        ts_entries_ += 2;
      }
    }
  }
  csdc_ += csdc_rows.nan_to_num(0.0).sum(0);
  pc_ += pc_rows.sum(0);
  dc_ += dc_rows.sum(0);
  d_ += d_rows.nan_to_num(0.0).sum(0);
  if (dump != nullptr) {
    dump->append("labels", labels, "true class per image");
    dump->append("predictions", predictions, "the model's class per image");
    dump->append("csdc", csdc_rows, "per image x threshold: best share of a minimal sufficient part set called important (NaN: misclassified)");
    dump->append("pc", pc_rows, "per image x threshold: 1 if the prediction survives removing the unimportant parts");
    dump->append("dc", dc_rows, "per image x threshold: 1 if the prediction changes when the important parts go");
    dump->append("distractibility_share", d_rows, "per image x threshold: share of the irrelevant parts and objects called important (NaN: none irrelevant)");
    dump->append("single_deletion", sd_rows, "per image: Spearman(importance, logit drop) * 0.5 + 0.5 (NaN: skipped)");
    dump->append("target_sensitivity_hits", ts_rows, "per image: 0..2 contrastive hits (NaN: no pair or assumption failed)");
    dump->append("background_objects", bi_rows, "per image: relevant objects, objects shown");
  }
  return absl::OkStatus();
}

void FunnyBirdsProtocols::merge(const FunnyBirdsProtocols& other) {
  csdc_ += other.csdc_, pc_ += other.pc_, dc_ += other.dc_, d_ += other.d_;
  images_ += other.images_, correct_ += other.correct_, csdc_images_ += other.csdc_images_;
  d_images_ += other.d_images_, sd_sum_ += other.sd_sum_, sd_images_ += other.sd_images_;
  ts_hits_ += other.ts_hits_, ts_entries_ += other.ts_entries_, ts_no_pair_ += other.ts_no_pair_;
  ts_assumption_failed_ += other.ts_assumption_failed_;
  bi_relevant_ += other.bi_relevant_, bi_objects_ += other.bi_objects_;
}

torch::Tensor FunnyBirdsProtocols::state() const {
  const torch::Tensor counts =
      torch::tensor(std::vector<double>{images_, correct_, csdc_images_, d_images_, sd_sum_, sd_images_, ts_hits_,
                                        ts_entries_, ts_no_pair_, ts_assumption_failed_, bi_relevant_, bi_objects_},
                    torch::kFloat64);
  return torch::cat({csdc_, pc_, dc_, d_, counts});
}

absl::Status FunnyBirdsProtocols::load_state(const torch::Tensor& state) {
  const int64_t t = thresholds();
  if (state.dim() != 1 || state.size(0) != 4 * t + 12) {
    return absl::InvalidArgumentError(fmt::format("funnybirds: a partial state of {} numbers where {} were expected",
                                                  state.numel(), 4 * t + 12));
  }
  const torch::Tensor s = state.to(torch::kCPU, torch::kFloat64).contiguous();
  csdc_ = s.slice(0, 0, t).clone(), pc_ = s.slice(0, t, 2 * t).clone();
  dc_ = s.slice(0, 2 * t, 3 * t).clone(), d_ = s.slice(0, 3 * t, 4 * t).clone();
  const torch::Tensor counts = s.slice(0, 4 * t).contiguous();
  const auto c = counts.accessor<double, 1>();
  images_ = c[0], correct_ = c[1], csdc_images_ = c[2], d_images_ = c[3], sd_sum_ = c[4], sd_images_ = c[5];
  ts_hits_ = c[6], ts_entries_ = c[7], ts_no_pair_ = c[8], ts_assumption_failed_ = c[9];
  bi_relevant_ = c[10], bi_objects_ = c[11];
  return absl::OkStatus();
}

nlohmann::json FunnyBirdsProtocols::compute() const {
  auto mean = [](const torch::Tensor& sums, double count) {
    return count > 0 ? (sums / count) : torch::zeros_like(sums);
  };
  const torch::Tensor csdc = mean(csdc_, csdc_images_), pc = mean(pc_, images_), dc = mean(dc_, images_);
  const torch::Tensor d = 1.0 - mean(d_, d_images_);
  // The threshold the reference reports at: the first that maximises CSDC/3 + PC/3 + DC/3 + D.
  const torch::Tensor score = csdc / 3.0 + pc / 3.0 + dc / 3.0 + d;
  int64_t best = 0;
  for (int64_t t = 1; t < thresholds(); ++t) {
    if (score[t].item<double>() > score[best].item<double>()) best = t;
  }
  auto at = [&](const torch::Tensor& curve) { return thresholds() > 0 ? curve[best].item<double>() : 0.0; };
  auto ratio = [](double a, double b) { return b > 0 ? nlohmann::json(a / b) : nlohmann::json(nullptr); };
  const double completeness = ((at(csdc) + at(pc) + at(dc)) / 3.0 + at(d)) / 2.0;
  nlohmann::json values = {
      {"accuracy", images_ > 0 ? correct_ / images_ : 0.0},
      {"csdc", at(csdc)},
      {"pc", at(pc)},
      {"dc", at(dc)},
      {"distractibility", at(d)},
      {"background_independence", bi_objects_ > 0 ? 1.0 - bi_relevant_ / bi_objects_ : 1.0},
      {"single_deletion", ratio(sd_sum_, sd_images_)},
      {"target_sensitivity", ratio(ts_hits_, ts_entries_)},
      {"completeness", completeness},
      {"threshold", thresholds() > 0 ? settings_.thresholds[static_cast<size_t>(best)] : 0.0}};
  values["correctness"] = values["single_deletion"];
  values["contrastivity"] = values["target_sensitivity"];
  if (sd_images_ > 0 && ts_entries_ > 0) {
    values["mean"] = (completeness + sd_sum_ / sd_images_ + ts_hits_ / ts_entries_) / 3.0;
  } else {
    values["mean"] = nullptr;
  }
  auto curve = [](const torch::Tensor& c) {
    std::vector<double> out(static_cast<size_t>(c.size(0)));
    for (int64_t i = 0; i < c.size(0); ++i) out[static_cast<size_t>(i)] = c[i].item<double>();
    return out;
  };
  nlohmann::json settings = settings_.to_json();
  settings["images"] = images_;
  settings["csdc_images"] = csdc_images_;
  settings["distractibility_images"] = d_images_;
  settings["single_deletion_images"] = sd_images_;
  settings["target_sensitivity_images"] = ts_entries_ / 2.0;
  settings["target_sensitivity_no_pair"] = ts_no_pair_;
  settings["target_sensitivity_assumption_failed"] = ts_assumption_failed_;
  settings["background_objects"] = bi_objects_;
  settings["curves"] = {{"csdc", curve(csdc)}, {"pc", curve(pc)}, {"dc", curve(dc)}, {"distractibility", curve(d)}};
  return {{"values", values}, {"settings", settings}};
}

}  // namespace protoquant::metrics
