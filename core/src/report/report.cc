#include "report.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <openssl/evp.h>
#include <opencv2/imgcodecs.hpp>
#include <torch/torch.h>

#include "explanation.h"
#include "pictures.h"
#include "protoquant/atomic_file.h"
#include "protoquant/edit.h"
#include "protoquant/folder_name.h"
#include "protoquant/status.h"
#include "run/run_records.h"
#include "svg_chart.h"

namespace protoquant {
namespace {

namespace fs = std::filesystem;

const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"};

std::string base64(const std::vector<uchar>& bytes) {
  std::string out(4 * ((bytes.size() + 2) / 3) + 1, '\0');
  const int n = EVP_EncodeBlock(reinterpret_cast<unsigned char*>(out.data()), bytes.data(), static_cast<int>(bytes.size()));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string unbase64(const std::string& text) {
  std::string out(3 * (text.size() / 4) + 3, '\0');
  const int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(out.data()),
                                reinterpret_cast<const unsigned char*>(text.data()), static_cast<int>(text.size()));
  if (n < 0) return {};
  size_t padding = 0;
  for (auto it = text.rbegin(); it != text.rend() && *it == '='; ++it) ++padding;
  out.resize(static_cast<size_t>(n) - std::min<size_t>(padding, static_cast<size_t>(n)));
  return out;
}

constexpr char kDataUriPrefix[] = "data:image/png;base64,";
// Stands for the run folder in the figures' notes: the figures are filed once and shown by every
// run that reuses them, each with its own folder.
constexpr char kRunDir[] = "@@RUN_DIR@@";

absl::StatusOr<std::string> png_data_uri(const cv::Mat& image) {
  std::vector<uchar> bytes;
  if (!cv::imencode(".png", image, bytes)) return absl::InternalError("report: PNG encoding failed");
  return kDataUriPrefix + base64(bytes);
}

std::string format_value(const nlohmann::json& v) {
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number()) {
    const double d = v.get<double>();
    return std::abs(d) >= 1e4 || (d != 0 && std::abs(d) < 1e-3) ? fmt::format("{:.4g}", d) : fmt::format("{:.4f}", d);
  }
  if (v.is_string()) return v.get<std::string>();
  return v.dump();
}

std::string settings_text(const nlohmann::json& settings) {
  if (!settings.is_object() || settings.empty()) return "";
  std::string out;
  for (const auto& [key, value] : settings.items()) {
    if (!out.empty()) out += ", ";
    out += key + " = " + (value.is_string() ? value.get<std::string>() : value.dump());
  }
  return out;
}

std::string section(const std::string& id, const std::string& title, const std::string& body) {
  return fmt::format("<section id=\"{}\">\n<h2>{}</h2>\n{}\n</section>\n", id, escape_html(title), body);
}

std::string note(const std::string& text) { return fmt::format("<p class=\"note\">{}</p>", escape_html(text)); }

std::string metrics_section(const nlohmann::json& results) {
  if (!results.contains("metrics")) return note("this run recorded no metrics");
  std::string rows;
  for (const auto& [instance, values] : results["metrics"].items()) {
    if (!values.is_object()) continue;
    const nlohmann::json settings = results.contains("metric_settings") && results["metric_settings"].contains(instance)
                                        ? results["metric_settings"][instance]
                                        : nlohmann::json::object();
    bool first = true;
    const size_t span = std::max<size_t>(1, std::count_if(values.begin(), values.end(), [](const auto& v) { return !v.is_structured(); }));
    for (const auto& [name, value] : values.items()) {
      if (value.is_structured()) continue;  // per-code lists (codebook counts) have charts of their own
      rows += "<tr>";
      if (first) {
        rows += fmt::format("<th rowspan=\"{}\">{}</th>", span, escape_html(instance));
      }
      rows += fmt::format("<td>{}</td><td class=\"number\">{}</td>", escape_html(name), escape_html(format_value(value)));
      if (first) rows += fmt::format("<td rowspan=\"{}\" class=\"settings\">{}</td>", span, escape_html(settings_text(settings)));
      rows += "</tr>\n";
      first = false;
    }
  }
  return "<table><thead><tr><th>metric</th><th>value</th><th></th><th>settings</th></tr></thead><tbody>\n" + rows +
         "</tbody></table>";
}

std::string stages_section(const nlohmann::json& results) {
  if (!results.contains("stages")) return note("no stage records");
  std::string rows;
  for (const auto& [stage, record] : results["stages"].items()) {
    if (!record.is_object()) continue;
    const bool reused = record.value("reused", false);
    const double seconds = record.value("seconds", 0.0);
    std::string detail;
    if (reused && record.contains("computed_seconds")) {
      detail = fmt::format("computed in {:.1f} s by an earlier run", record["computed_seconds"].get<double>());
    }
    const std::string key = record.contains("key") && record["key"].is_string() ? record["key"].get<std::string>().substr(0, 12) : "";
    rows += fmt::format("<tr><td>{}</td><td class=\"number\">{:.2f}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>\n",
                        escape_html(stage), seconds, reused ? "reused" : (record.contains("key") ? "computed" : ""), key,
                        escape_html(detail));
  }
  std::string total;
  if (results.contains("total_seconds")) total = fmt::format("<p>In all: {:.1f} s.</p>", results["total_seconds"].get<double>());
  return "<table><thead><tr><th>stage</th><th>seconds</th><th></th><th>key</th><th></th></tr></thead><tbody>\n" + rows +
         "</tbody></table>" + total;
}

std::vector<double> numbers(const nlohmann::json& list) {
  std::vector<double> out;
  if (!list.is_array()) return out;
  for (const auto& v : list) out.push_back(v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN());
  return out;
}

std::vector<double> one_to(size_t n) {
  std::vector<double> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = static_cast<double>(i + 1);
  return x;
}

std::string curves_section(const nlohmann::json& results) {
  std::string charts;
  if (results.contains("stages")) {
    for (const char* stage : {"blackbox", "codebook", "head"}) {
      if (!results["stages"].contains(stage)) continue;
      const nlohmann::json& record = results["stages"][stage];
      const std::vector<double> loss = numbers(record.value("epoch_losses", nlohmann::json::array()));
      const std::vector<double> validation = numbers(record.value("validation", nlohmann::json::array()));
      if (!loss.empty()) {
        charts += svg_line_chart({{"training loss", one_to(loss.size()), loss, kColours[0]}},
                                 {fmt::format("{}: loss", stage), "epoch", "mean loss"});
      }
      if (!validation.empty()) {
        charts += svg_line_chart({{"validation accuracy", one_to(validation.size()), validation, kColours[1]}},
                                 {fmt::format("{}: accuracy", stage), "epoch", "validation accuracy"});
      }
    }
    if (results["stages"].contains("prune") && results["stages"]["prune"].contains("steps")) {
      std::vector<double> codes, accuracy;
      for (const auto& step : results["stages"]["prune"]["steps"]) {
        codes.push_back(step.value("codes", 0.0));
        accuracy.push_back(step.value("accuracy_after", std::numeric_limits<double>::quiet_NaN()));
      }
      charts += svg_line_chart({{"after fine-tuning", codes, accuracy, kColours[2]}},
                               {"prune: accuracy per step", "codes kept", "validation accuracy"});
    }
  }
  if (charts.empty()) return note("no stage of this run recorded its epochs (all trained for 0 epochs, or reused from "
                                  "records made before curves were kept)");
  return "<div class=\"charts\">" + charts + "</div>";
}

std::string usage_section(const nlohmann::json& results) {
  if (!results.contains("codebook_counts") || results["codebook_counts"].empty()) {
    return note("no codebook usage: this run has no quantizer");
  }
  std::vector<double> counts = numbers(results["codebook_counts"]);
  std::sort(counts.begin(), counts.end(), std::greater<>());
  const auto used = std::count_if(counts.begin(), counts.end(), [](double c) { return c > 0; });
  double total = 0;
  for (double c : counts) total += c;
  ChartAxes axes{"feature cells per code, most used first", "codes by rank", "cells assigned"};
  axes.width = 640;
  std::string text = fmt::format("<p>{} of {} codes used on the evaluated split ({:.0f} cells).</p>", used, counts.size(), total);
  return text + svg_bar_chart(counts, axes);
}

}  // namespace

ReportSettings ReportSettings::from(const Params& report) {
  ReportSettings s;
  s.enabled = report.get_bool("enabled");
  s.explanations_per_class = report.get_int("explanations_per_class");
  s.gallery_prototypes = report.get_int("gallery_prototypes");
  s.patches = report.get_int("patches");
  s.max_classes = report.get_int("max_classes");
  return s;
}

std::vector<int64_t> limit_k_values(int64_t prototypes) {
  std::vector<int64_t> ks;
  for (int64_t decade = 1; decade < prototypes; decade *= 10) {
    for (int64_t m : {1, 2, 3, 5}) {
      if (m == 3 && decade > 1) continue;  // 1, 2, 3, 5, 10, 20, 50, 100, ...
      if (m * decade < prototypes) ks.push_back(m * decade);
    }
  }
  ks.push_back(prototypes);
  return ks;
}

namespace {

// The report's costly part, which needs the features: accuracy against k, the gallery, the sample
// explanations. {limit_k, gallery: HTML; explanations: [{file, figure (HTML with the PNG as a
// data URI)}]}. Notes name the run folder as kRunDir.
absl::StatusOr<nlohmann::json> draw_figures(ExperimentRun& run, const nlohmann::json& results,
                                            const ReportSettings& settings) {
  const fs::path& run_dir = run.run_dir();
  const ExperimentSpec& spec = run.spec();
  const std::string split = spec.experiment.get_string("eval_split");
  const std::string train_split = spec.experiment.get_string("train_split");
  Model& model = run.model();
  Head& head = *model.head;
  torch::NoGradGuard no_grad;
  const torch::Tensor weights = head.class_weights().detach().clone();
  const int64_t prototypes = weights.size(1);
  PQ_ASSIGN_OR_RETURN(TensorSource* eval, run.eval_features());
  PQ_ASSIGN_OR_RETURN(TensorSource* train, run.train_features());
  PQ_ASSIGN_OR_RETURN(const ImageFeatures features_of, run.image_features());

  // Accuracy against k: each class keeps its k strongest prototypes; the weights are put back after.
  std::string limit_k;
  {
    std::vector<double> ks, accuracy;
    std::string rows;
    absl::Status edited = absl::OkStatus();
    absl::Status measured = absl::OkStatus();
    for (int64_t k : limit_k_values(prototypes)) {
      edited = head.set_class_weights(limit_k_weights(weights, k));
      if (!edited.ok()) break;
      auto a = run.head_accuracy(*eval);
      if (!a.ok()) {
        measured = a.status();
        break;
      }
      ks.push_back(static_cast<double>(k));
      accuracy.push_back(*a);
      rows += fmt::format("<tr><td class=\"number\">{}</td><td class=\"number\">{:.4f}</td></tr>", k, *a);
    }
    // The trained weights go back whatever happened above: the model outlives the report.
    if (edited.ok() || !ks.empty()) PQ_RETURN_IF_ERROR(head.set_class_weights(weights));
    PQ_RETURN_IF_ERROR(measured);
    if (!edited.ok() && ks.empty()) {
      limit_k = note(fmt::format("not measured: {}", std::string(edited.message())));
    } else {
      ChartAxes axes{"accuracy with k prototypes per class", "k (prototypes kept per class)", "accuracy"};
      axes.log_x = true;
      limit_k = "<div class=\"charts\">" + svg_line_chart({{"", ks, accuracy, kColours[0]}}, axes) +
                "<table><thead><tr><th>k</th><th>accuracy</th></tr></thead><tbody>" + rows + "</tbody></table></div>" +
                note(fmt::format("measured on split '{}' by limit-k editing (protoquant edit --limit-k); k = {} is the "
                                 "unedited model",
                                 split, prototypes));
    }
  }

  // Every prototype's nearest training patches, searched once for the gallery and the explanations.
  const bool pictures = settings.gallery_prototypes > 0 || settings.explanations_per_class > 0;
  std::vector<std::vector<ExplainedPrototype::Patch>> nearest;
  if (pictures) {
    PQ_ASSIGN_OR_RETURN(nearest, nearest_patches(model, *train, torch::arange(prototypes, torch::kInt64), settings.patches));
  }

  std::string gallery;
  const torch::Tensor usage = recorded_usage(results, prototypes);  // the results in hand, not re-read
  if (settings.gallery_prototypes > 0) {
    // Most used first; without a codebook's usage, by each prototype's largest class weight.
    const torch::Tensor score = usage.defined() ? usage.to(torch::kFloat64)
                                                : std::get<0>(weights.to(torch::kCPU, torch::kFloat64).max(0));
    const torch::Tensor order = std::get<1>(score.sort(/*stable=*/true, 0, /*descending=*/true));
    GalleryOptions options;
    options.prototypes = order.slice(0, 0, std::min(settings.gallery_prototypes, prototypes));
    options.usage = usage;
    options.purity = recorded_purity(run_dir, prototypes);
    options.patches = settings.patches;
    options.per_page = options.prototypes.numel();
    options.nearest = nearest;
    PQ_ASSIGN_OR_RETURN(const std::vector<cv::Mat> pages, draw_gallery(model, *train, run.dataset(), train_split, options));
    for (const auto& page : pages) {
      PQ_ASSIGN_OR_RETURN(const std::string uri, png_data_uri(page));
      gallery += fmt::format("<img src=\"{}\" alt=\"prototype gallery\" width=\"{}\" height=\"{}\">", uri, page.cols, page.rows);
    }
    gallery += note(fmt::format("the {} most {} of {} prototypes, each with its {} nearest training patches; "
                                "protoquant explain {} --gallery draws them all",
                                options.prototypes.numel(), usage.defined() ? "used" : "weighted", prototypes,
                                settings.patches, kRunDir));
  } else {
    gallery = note("not drawn ([report] gallery_prototypes = 0)");
  }

  nlohmann::json explanations = nlohmann::json::array();
  if (settings.explanations_per_class > 0) {
    const torch::Tensor labels = eval->labels().to(torch::kCPU, torch::kInt64).contiguous();
    const auto l = labels.accessor<int64_t, 1>();
    const int64_t classes = std::min<int64_t>(weights.size(0), settings.max_classes);
    std::vector<int64_t> chosen;
    std::vector<int64_t> taken(static_cast<size_t>(classes), 0);
    for (int64_t i = 0; i < labels.size(0); ++i) {
      if (l[i] >= 0 && l[i] < classes && taken[static_cast<size_t>(l[i])] < settings.explanations_per_class) {
        ++taken[static_cast<size_t>(l[i])];
        chosen.push_back(i);
      }
    }
    std::stable_sort(chosen.begin(), chosen.end(), [&](int64_t a, int64_t b) { return l[a] < l[b]; });
    for (int64_t index : chosen) {
      PQ_ASSIGN_OR_RETURN(Batch batch, run.dataset().get_eval_batch(split, torch::tensor({index}, torch::kInt64)));
      const torch::Tensor image = batch.images.to(run.device());
      PQ_ASSIGN_OR_RETURN(Explanation e, explain_image(model, image, *train, 3, -1, 0, features_of));
      for (auto& p : e.prototypes) p.nearest = nearest[static_cast<size_t>(p.prototype)];
      e.label = batch.labels[0].item<int64_t>();
      PQ_ASSIGN_OR_RETURN(const cv::Mat picture,
                          draw_explanation(e, image.cpu(), batch.parts.defined() ? batch.parts[0] : torch::Tensor(),
                                           run.dataset(), train_split, model.backbone->geometry()));
      PQ_ASSIGN_OR_RETURN(const std::string uri, png_data_uri(picture));
      auto name = [&](int64_t c) { return class_name(run.dataset().info(), c); };
      explanations.push_back({{"file", fmt::format("{}-{}.png", split, index)}, {"figure", fmt::format(
          "<figure><img src=\"{}\" alt=\"explanation of {} {}\" width=\"{}\" height=\"{}\"><figcaption>{} {}: label {}, "
          "predicted {}{}</figcaption></figure>\n",
          uri, escape_html(split), index, picture.cols, picture.rows, escape_html(split), index, escape_html(name(e.label)),
          escape_html(name(e.predicted)), e.label == e.predicted ? "" : " (wrong)")}});
    }
  }
  return nlohmann::json{{"limit_k", limit_k}, {"gallery", gallery}, {"explanations", explanations}};
}

}  // namespace

absl::StatusOr<fs::path> write_run_report(ExperimentRun& run, const nlohmann::json& results,
                                          const ReportSettings& settings, bool force) {
  const fs::path& run_dir = run.run_dir();
  const ExperimentSpec& spec = run.spec();
  const std::string split = spec.experiment.get_string("eval_split");
  auto draw = [&] { return draw_figures(run, results, settings); };
  PQ_ASSIGN_OR_RETURN(const nlohmann::json figures, force ? draw() : run.report_figures(draw));
  const int64_t prototypes = run.model().head->class_weights().size(1);
  auto in_this_run = [&](std::string html) {
    const std::string folder = escape_html(run_dir.string());
    for (size_t at = html.find(kRunDir); at != std::string::npos; at = html.find(kRunDir, at + folder.size())) {
      html.replace(at, sizeof kRunDir - 1, folder);
    }
    return html;
  };
  const std::string limit_k = figures.value("limit_k", "");
  const std::string gallery = in_this_run(figures.value("gallery", ""));
  // The explanations' PNGs are in the figures (data URIs); the run folder gets them as files.
  std::string explanations;
  if (settings.explanations_per_class > 0) {
    std::error_code ec;
    fs::create_directories(run_dir / "explanations", ec);
    if (ec) return absl::PermissionDeniedError(fmt::format("{}: cannot create ({})", (run_dir / "explanations").string(), ec.message()));
    for (const auto& entry : figures.value("explanations", nlohmann::json::array())) {
      const std::string figure = entry.value("figure", "");
      const size_t start = figure.find(kDataUriPrefix);
      const size_t end = start == std::string::npos ? start : figure.find('"', start);
      if (end == std::string::npos) return absl::DataLossError(fmt::format("{}: a report figure without its image", run_dir.string()));
      const std::string png = unbase64(figure.substr(start + sizeof kDataUriPrefix - 1, end - start - (sizeof kDataUriPrefix - 1)));
      const std::string file = entry.value("file", "");
      if (png.empty()) return absl::DataLossError(fmt::format("{}: a report figure's image does not decode", file));
      PQ_RETURN_IF_ERROR(check_folder_name(file, "a report figure's file"));  // read back from the store
      PQ_RETURN_IF_ERROR(write_file_atomic(run_dir / "explanations" / file, png));
      explanations += figure;
    }
    explanations += note(fmt::format("the first {} test image(s) of each class; also in {}; protoquant explain {} "
                                     "--test-index I explains any other",
                                     settings.explanations_per_class, (run_dir / "explanations").string(), run_dir.string()));
  } else {
    explanations = note("not drawn ([report] explanations_per_class = 0)");
  }
  std::string body;

  std::string manifest_text;
  {
    std::ifstream in(run_dir / "manifest.toml");
    std::stringstream text;
    text << in.rdbuf();
    manifest_text = text.str();
  }

  const std::string name = results.value("experiment", spec.experiment.get_string("name"));
  std::string headline;
  if (results.contains("metrics") && results["metrics"].contains("accuracy") &&
      results["metrics"]["accuracy"].contains("accuracy")) {
    headline = fmt::format("accuracy {:.4f} on split '{}'", results["metrics"]["accuracy"]["accuracy"].get<double>(), split);
  }
  std::string toolkit;
  if (results.contains("toolkit")) {
    toolkit = fmt::format("ProtoQuant {} ({})", results["toolkit"].value("version", "?"), results["toolkit"].value("commit", "?"));
  }
  const std::string head_line = fmt::format("{} head over {} prototypes, backbone {}, dataset {}", spec.head.type, prototypes,
                                            spec.backbone.type, spec.dataset.type);
  body += section("metrics", "Metrics", metrics_section(results));
  body += section("stages", "Stages", stages_section(results));
  body += section("curves", "Training curves", curves_section(results));
  body += section("usage", "Codebook usage", usage_section(results));
  body += section("limit-k", "Accuracy against k prototypes per class", limit_k);
  body += section("gallery", "Prototype gallery", gallery);
  body += section("explanations", "Sample explanations", explanations);
  body += section("manifest", "Resolved manifest", "<pre>" + escape_html(manifest_text) + "</pre>");

  const std::string html = fmt::format(
      R"(<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - ProtoQuant run report</title>
<style>
body {{ font-family: "DejaVu Sans", sans-serif; font-size: 14px; margin: 24px; color: #222; background: #fff; max-width: 1500px; }}
h1 {{ font-size: 24px; margin-bottom: 4px; }} h2 {{ font-size: 18px; border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 32px; }}
nav a {{ margin-right: 14px; }} p.summary {{ margin-top: 0; }} .note {{ color: #555; font-size: 13px; }}
table {{ border-collapse: collapse; margin: 8px 0; }} th, td {{ border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; font-size: 13px; }}
td.number {{ text-align: right; font-variant-numeric: tabular-nums; }} td.settings {{ font-size: 12px; color: #444; max-width: 560px; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }} svg.chart {{ border: 1px solid #eee; }}
img {{ max-width: 100%; height: auto; image-rendering: pixelated; }} figure {{ margin: 12px 0; }} figcaption {{ font-size: 13px; }}
pre {{ background: #f6f6f6; padding: 12px; font-size: 12px; overflow-x: auto; }}
</style>
</head>
<body>
<h1>{title}</h1>
<p class="summary">{headline}<br>{head_line}<br>{finished} {toolkit}</p>
<nav><a href="#metrics">Metrics</a><a href="#stages">Stages</a><a href="#curves">Curves</a><a href="#usage">Usage</a><a href="#limit-k">Accuracy vs k</a><a href="#gallery">Gallery</a><a href="#explanations">Explanations</a><a href="#manifest">Manifest</a></nav>
{body}</body>
</html>
)",
      fmt::arg("title", escape_html(name)), fmt::arg("headline", escape_html(headline)),
      fmt::arg("head_line", escape_html(head_line)),
      fmt::arg("finished", escape_html(results.contains("finished_at") ? "finished " + results["finished_at"].get<std::string>() + "," : "")),
      fmt::arg("toolkit", escape_html(toolkit)), fmt::arg("body", body));
  const fs::path out = run_dir / "report.html";
  PQ_RETURN_IF_ERROR(write_file_atomic(out, html));
  return out;
}

}  // namespace protoquant
