#include "svg_chart.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include <fmt/format.h>

namespace protoquant {
namespace {

constexpr int kLeft = 58, kRight = 14, kTop = 42, kBottom = 44;  // plot margins, px (the legend sits above the plot)

struct Range {
  double low = std::numeric_limits<double>::infinity(), high = -std::numeric_limits<double>::infinity();
  void add(double v) {
    if (!std::isfinite(v)) return;
    low = std::min(low, v);
    high = std::max(high, v);
  }
  bool empty() const { return !(low <= high); }
  // A flat series still gets a visible band.
  void widen() {
    if (high - low < 1e-12) {
      const double pad = std::max(std::abs(high) * 0.05, 1e-3);
      low -= pad;
      high += pad;
    }
  }
};

// About `count` round tick values covering the range.
std::vector<double> ticks(double low, double high, int count, bool integer) {
  const double raw = (high - low) / std::max(1, count);
  const double magnitude = std::pow(10.0, std::floor(std::log10(raw)));
  double step = magnitude;
  for (double m : {1.0, 2.0, 5.0, 10.0}) {
    step = m * magnitude;
    if (step >= raw) break;
  }
  if (integer) step = std::max(1.0, std::round(step));
  std::vector<double> out;
  for (double t = std::ceil(low / step) * step; t <= high + step * 1e-9; t += step) out.push_back(std::abs(t) < step * 1e-9 ? 0 : t);
  return out;
}

std::string number(double v) {
  if (std::abs(v) >= 1000 || (v != 0 && std::abs(v) < 0.01)) return fmt::format("{:.3g}", v);
  return fmt::format("{:.4g}", v);
}

// Horizontal grid lines with their values on the left axis.
template <typename ToY>
std::string y_grid(const std::vector<double>& values, double plot_width, ToY py) {
  std::string out;
  for (double t : values) {
    out += fmt::format("<line x1=\"{l}\" x2=\"{r}\" y1=\"{y:.1f}\" y2=\"{y:.1f}\" stroke=\"#e4e4e4\"/>"
                       "<text x=\"{tx}\" y=\"{ty:.1f}\" text-anchor=\"end\">{v}</text>",
                       fmt::arg("l", kLeft), fmt::arg("r", kLeft + plot_width), fmt::arg("y", py(t)), fmt::arg("tx", kLeft - 4),
                       fmt::arg("ty", py(t) + 4), fmt::arg("v", number(t)));
  }
  return out;
}

std::string frame(const ChartAxes& axes, const std::string& body, const std::string& legend) {
  return fmt::format(
      "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{w}\" height=\"{h}\" viewBox=\"0 0 {w} {h}\" "
      "font-family=\"DejaVu Sans, sans-serif\" font-size=\"12\" role=\"img\" aria-label=\"{t}\">"
      "<rect width=\"{w}\" height=\"{h}\" fill=\"#ffffff\"/>"
      "<text x=\"{cx}\" y=\"18\" text-anchor=\"middle\" font-size=\"13\" font-weight=\"bold\">{t}</text>"
      "{body}"
      "<text x=\"{cx}\" y=\"{xl}\" text-anchor=\"middle\">{x}</text>"
      "<text transform=\"translate(14 {cy}) rotate(-90)\" text-anchor=\"middle\">{y}</text>{legend}</svg>",
      fmt::arg("w", axes.width), fmt::arg("h", axes.height), fmt::arg("t", escape_html(axes.title)),
      fmt::arg("cx", (kLeft + axes.width - kRight) / 2), fmt::arg("cy", (kTop + axes.height - kBottom) / 2),
      fmt::arg("xl", axes.height - 8), fmt::arg("x", escape_html(axes.x_label)), fmt::arg("y", escape_html(axes.y_label)),
      fmt::arg("body", body), fmt::arg("legend", legend));
}

}  // namespace


std::string svg_line_chart(const std::vector<ChartSeries>& series, const ChartAxes& axes) {
  Range xr, yr;
  auto tx = [&](double x) { return axes.log_x ? std::log10(std::max(x, 1e-12)) : x; };
  for (const auto& s : series) {
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      xr.add(tx(s.x[i]));
      yr.add(s.y[i]);
    }
  }
  if (xr.empty() || yr.empty()) return "";
  xr.widen();
  yr.widen();
  const double pw = axes.width - kLeft - kRight, ph = axes.height - kTop - kBottom;
  auto px = [&](double x) { return kLeft + (tx(x) - xr.low) / (xr.high - xr.low) * pw; };
  auto py = [&](double y) { return kTop + (yr.high - y) / (yr.high - yr.low) * ph; };
  std::string body = fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>", kLeft,
                                 kTop, pw, ph);
  body += y_grid(ticks(yr.low, yr.high, 5, false), pw, py);
  std::vector<double> xt;
  if (axes.log_x) {
    for (const auto& s : series) xt.insert(xt.end(), s.x.begin(), s.x.end());
    std::sort(xt.begin(), xt.end());
    xt.erase(std::unique(xt.begin(), xt.end()), xt.end());
  } else {
    xt = ticks(xr.low, xr.high, 6, axes.integer_x);
  }
  // From the right, so the largest value (k = P) always keeps its label; labels never overlap.
  double last_label = 1e9;
  for (auto it = xt.rbegin(); it != xt.rend(); ++it) {
    const double t = *it;
    if (last_label - px(t) < 26) continue;
    last_label = px(t);
    body += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>", px(t), kTop + ph + 16, number(t));
  }
  std::string legend;
  int legend_x = kLeft + 6;
  for (const auto& s : series) {
    std::string points;
    for (size_t i = 0; i < std::min(s.x.size(), s.y.size()); ++i) {
      if (!std::isfinite(s.y[i])) continue;
      points += fmt::format("{:.1f},{:.1f} ", px(s.x[i]), py(s.y[i]));
      body += fmt::format("<circle cx=\"{:.1f}\" cy=\"{:.1f}\" r=\"2.5\" fill=\"{}\"/>", px(s.x[i]), py(s.y[i]), s.colour);
    }
    body += fmt::format("<polyline points=\"{}\" fill=\"none\" stroke=\"{}\" stroke-width=\"2\"/>", points, s.colour);
    if (series.size() > 1 || !s.name.empty()) {
      legend += fmt::format("<rect x=\"{}\" y=\"{}\" width=\"10\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\">{}</text>",
                            legend_x, kTop - 16, s.colour, legend_x + 14, kTop - 7, escape_html(s.name));
      legend_x += 24 + 7 * static_cast<int>(s.name.size());
    }
  }
  return frame(axes, body, legend);
}

std::string svg_bar_chart(const std::vector<double>& values, const ChartAxes& axes) {
  Range yr;
  yr.add(0);
  for (double v : values) yr.add(v);
  if (values.empty() || yr.empty()) return "";
  yr.widen();
  const double pw = axes.width - kLeft - kRight, ph = axes.height - kTop - kBottom;
  auto py = [&](double y) { return kTop + (yr.high - y) / (yr.high - yr.low) * ph; };
  std::string body = fmt::format("<rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"none\" stroke=\"#888\"/>", kLeft,
                                 kTop, pw, ph);
  body += y_grid(ticks(yr.low, yr.high, 5, true), pw, py);
  const double bar = pw / static_cast<double>(values.size());
  for (size_t i = 0; i < values.size(); ++i) {
    if (!std::isfinite(values[i])) continue;
    const double top = py(std::max(0.0, values[i])), bottom = py(0);
    body += fmt::format("<rect x=\"{:.2f}\" y=\"{:.1f}\" width=\"{:.2f}\" height=\"{:.1f}\" fill=\"#1f77b4\"/>",
                        kLeft + bar * static_cast<double>(i), top, std::max(bar * 0.85, 0.5), bottom - top);
  }
  for (double t : ticks(0, static_cast<double>(values.size()), 6, true)) {
    body += fmt::format("<text x=\"{:.1f}\" y=\"{}\" text-anchor=\"middle\">{}</text>", kLeft + bar * t, kTop + ph + 16,
                        number(t));
  }
  return frame(axes, body, "");
}

}  // namespace protoquant
