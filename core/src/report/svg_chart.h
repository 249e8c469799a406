// Small charts as inline SVG for the run report: readable without JavaScript, crisp at any zoom,
// text at 12 px or more. A line chart (training curves, accuracy against k) and a bar chart (the
// codebook's usage). Values are drawn as given; NaN points are left out.
#pragma once

#include <string>
#include <vector>

#include "html_text.h"  // escape_html, for the labels

namespace protoquant {

struct ChartSeries {
  std::string name;
  std::vector<double> x, y;  // the same length
  std::string colour = "#1f77b4";
};

struct ChartAxes {
  std::string title, x_label, y_label;
  bool log_x = false;        // x spaced by log10 (k = 1 .. P)
  bool integer_x = true;     // ticks at whole numbers (epochs, k)
  int width = 420, height = 260;
};

// An empty string when no series has a finite point.
std::string svg_line_chart(const std::vector<ChartSeries>& series, const ChartAxes& axes);

// One bar per value, in the given order.
std::string svg_bar_chart(const std::vector<double>& values, const ChartAxes& axes);

}  // namespace protoquant
