// Rendering a leaderboard: Markdown, CSV (RFC 4180), JSON and a self-contained HTML page.
#include <algorithm>
#include <cmath>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "protoquant/leaderboard.h"

#include "report/html_text.h"

namespace protoquant {

namespace {

// Decimals a reader compares a number by: integers whole, small values to four places, large
// ones to fewer. The machine formats (csv, json, html's sort keys) keep every digit instead.
int display_decimals(double value) {
  const double magnitude = std::fabs(value);
  if (value == std::floor(value)) return 0;
  if (magnitude < 10) return 4;
  if (magnitude < 1e4) return 2;
  return 1;
}

std::string display_number(double value, int decimals) {
  if (!std::isfinite(value) || std::fabs(value) >= 1e15) return fmt::format("{}", value);
  // Below 1e-3 four places would show nothing but zeros.
  if (value != 0 && std::fabs(value) < 1e-3 && decimals > 0) return fmt::format("{:.2e}", value);
  return fmt::format("{:.{}f}", value, decimals);
}

std::string display_number(double value) { return display_number(value, display_decimals(value)); }

// The shortest text that reads back as the same double.
std::string exact_number(double value) { return fmt::format("{}", value); }

constexpr const char* kMissing = "—";

std::string summary_text(const MetricSummary& summary, bool show_n) {
  if (summary.n == 0) return kMissing;
  if (summary.n == 1) return display_number(summary.mean);
  // Mean and std to the same places, so "0.8200 ± 0.0200", "253.00 ± 4.24", "0.5000 ± 0.0000".
  const int decimals = std::max(display_decimals(summary.mean), display_decimals(summary.std));
  const std::string text =
      fmt::format("{} ± {}", display_number(summary.mean, decimals), display_number(summary.std, decimals));
  return show_n ? fmt::format("{} (n={})", text, summary.n) : text;
}

std::string param_text(const std::optional<RunParameter>& param) { return param ? param->text : kMissing; }

// A cell shows its text literally: HTML is written as entities (a renderer would otherwise run
// `<script>` or swallow `<tag>`), the Markdown syntax that spans words (code, emphasis, links)
// is backslash-escaped, the pipe that would split the cell too, and line breaks (which would end
// the row) become spaces. Underscores stay: inside names (top5_accuracy) GFM leaves them alone.
std::string markdown_cell(const std::string& text) {
  std::string out;
  for (char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      case '|': case '\\': case '`': case '*': case '[': case ']':
        out += '\\';
        out += c;
        break;
      case '\n': case '\r': out += ' '; break;
      default: out += c;
    }
  }
  return out;
}

std::string render_markdown(const Leaderboard& board) {
  std::string header = "|", rule = "|";
  for (const auto& key : board.param_columns) {
    header += fmt::format(" {} |", markdown_cell(key));
    rule += " --- |";
  }
  for (const auto& key : board.metric_columns) {
    header += fmt::format(" {} |", markdown_cell(key));
    rule += " ---: |";
  }
  std::string out = header + "\n" + rule + "\n";
  for (const auto& row : board.rows) {
    out += "|";
    for (const auto& param : row.params) out += fmt::format(" {} |", markdown_cell(param_text(param)));
    for (const auto& metric : row.metrics) out += fmt::format(" {} |", summary_text(metric, true));
    out += "\n";
  }
  return out;
}

// RFC 4180: a field with a comma, quote or line break is quoted, its quotes doubled; CRLF ends
// each record.
std::string csv_field(const std::string& text) {
  if (text.find_first_of(",\"\r\n") == std::string::npos) return text;
  std::string out = "\"";
  for (char c : text) {
    if (c == '"') out += '"';
    out += c;
  }
  return out + "\"";
}

std::string render_csv(const Leaderboard& board) {
  std::vector<std::string> fields;
  auto end_record = [&](std::string& out) {
    for (size_t i = 0; i < fields.size(); ++i) out += (i ? "," : "") + csv_field(fields[i]);
    out += "\r\n";
    fields.clear();
  };
  std::string out;
  for (const auto& key : board.param_columns) fields.push_back(key);
  for (const auto& key : board.metric_columns) {
    for (const char* part : {".mean", ".std", ".n"}) fields.push_back(key + part);
  }
  end_record(out);
  for (const auto& row : board.rows) {
    for (const auto& param : row.params) fields.push_back(param ? param->text : "");
    for (const auto& metric : row.metrics) {
      fields.push_back(metric.n > 0 ? exact_number(metric.mean) : "");
      fields.push_back(metric.n > 1 ? exact_number(metric.std) : "");
      fields.push_back(std::to_string(metric.n));
    }
    end_record(out);
  }
  return out;
}

std::string render_json(const Leaderboard& board) {
  nlohmann::json rows = nlohmann::json::array();
  for (const auto& row : board.rows) {
    nlohmann::json params = nlohmann::json::object(), metrics = nlohmann::json::object();
    for (size_t i = 0; i < row.params.size(); ++i) {
      params[board.param_columns[i]] = row.params[i] ? row.params[i]->value : nlohmann::json();
    }
    for (size_t i = 0; i < row.metrics.size(); ++i) {
      const MetricSummary& metric = row.metrics[i];
      metrics[board.metric_columns[i]] = {{"mean", metric.n > 0 ? nlohmann::json(metric.mean) : nlohmann::json()},
                                          {"std", metric.n > 1 ? nlohmann::json(metric.std) : nlohmann::json()},
                                          {"n", metric.n}};
    }
    rows.push_back({{"params", params}, {"metrics", metrics}, {"runs", row.run_ids}});
  }
  return rows.dump(2) + "\n";
}


// Inline so the page works from a file on a machine with no network. A click sorts by a column
// (metrics start descending, parameters ascending; again reverses); #sort=-NAME in the address
// sorts on load, NAME resolved as --sort resolves it (a full key, else the one ending in .NAME).
constexpr const char* kStyle = R"css(
body { font-family: "DejaVu Sans", "Liberation Sans", Arial, sans-serif; margin: 24px; color: #111; background: #fff; }
h1 { font-size: 20px; margin: 0 0 4px; }
p.summary { color: #444; margin: 0 0 16px; font-size: 13px; }
table { border-collapse: collapse; font-size: 14px; }
th, td { border: 1px solid #999; padding: 5px 10px; text-align: right; white-space: nowrap; }
th { background: #dde3ea; cursor: pointer; user-select: none; }
th.param, td.param { text-align: left; }
tbody tr:nth-child(even) { background: #f3f5f7; }
th[aria-sort="ascending"]::after { content: " \25B2"; }
th[aria-sort="descending"]::after { content: " \25BC"; }
span.n { color: #555; font-size: 12px; margin-left: 6px; }
)css";

constexpr const char* kScript = R"js(
(function () {
  var table = document.getElementById("leaderboard");
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var keys = heads.map(function (h) { return h.getAttribute("data-key"); });
  function cellValue(row, i) {
    var text = row.cells[i].getAttribute("data-value");
    if (text === null) return null;
    var number = Number(text);
    return text !== "" && !isNaN(number) ? number : text;
  }
  function sortBy(i, descending) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.forEach(function (row, position) { row.position = position; });
    rows.sort(function (a, b) {
      var x = cellValue(a, i), y = cellValue(b, i);
      if (x === null || y === null) return x === y ? a.position - b.position : (x === null ? 1 : -1);
      var order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      if (order === 0) return a.position - b.position;
      return descending ? -order : order;
    });
    rows.forEach(function (row) { body.appendChild(row); });
    heads.forEach(function (h, k) {
      if (k === i) h.setAttribute("aria-sort", descending ? "descending" : "ascending");
      else h.removeAttribute("aria-sort");
    });
  }
  function resolve(name) {
    var exact = keys.indexOf(name);
    if (exact >= 0) return exact;
    var found = [];
    keys.forEach(function (key, i) { if (key.slice(-(name.length + 1)) === "." + name) found.push(i); });
    return found.length === 1 ? found[0] : -1;
  }
  heads.forEach(function (h, i) {
    h.addEventListener("click", function () {
      var state = h.getAttribute("aria-sort");
      var descending = state ? state === "ascending" : h.className === "metric";
      sortBy(i, descending);
      try { history.replaceState(null, "", "#sort=" + (descending ? "-" : "") + encodeURIComponent(keys[i])); } catch (e) {}
    });
  });
  function sortFromHash() {
    var match = /(?:^#|&)sort=(-?)([^&]+)/.exec(location.hash);
    if (!match) return;
    var i = resolve(decodeURIComponent(match[2]));
    if (i >= 0) sortBy(i, match[1] === "-");
  }
  sortFromHash();
  window.addEventListener("hashchange", sortFromHash);
})();
)js";

std::string render_html(const Leaderboard& board, std::string_view title) {
  std::string out = fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{0}</title>\n<style>{1}</style>\n"
      "</head>\n<body>\n<h1>{0}</h1>\n<p class=\"summary\">{2} run{3} in {4} row{5}; click a header to sort</p>\n"
      "<table id=\"leaderboard\">\n<thead><tr>",
      escape_html(title), kStyle, board.run_count, board.run_count == 1 ? "" : "s", board.rows.size(),
      board.rows.size() == 1 ? "" : "s");
  auto header = [&](const std::string& key, const char* kind) {
    std::string sorted;
    if (board.sort && board.sort->metric == key) {
      sorted = fmt::format(" aria-sort=\"{}\"", board.sort->descending ? "descending" : "ascending");
    }
    out += fmt::format("<th class=\"{}\" data-key=\"{}\"{}>{}</th>", kind, escape_html(key), sorted, escape_html(key));
  };
  for (const auto& key : board.param_columns) header(key, "param");
  for (const auto& key : board.metric_columns) header(key, "metric");
  out += "</tr></thead>\n<tbody>\n";
  for (const auto& row : board.rows) {
    std::string runs;
    for (const auto& id : row.run_ids) runs += (runs.empty() ? "" : " ") + id;
    out += fmt::format("<tr data-runs=\"{}\">", escape_html(runs));
    for (const auto& param : row.params) {
      if (!param) {
        out += fmt::format("<td class=\"param\">{}</td>", kMissing);
        continue;
      }
      const std::string value = param->value.is_number() ? exact_number(param->value.get<double>()) : param->text;
      out += fmt::format("<td class=\"param\" data-value=\"{}\">{}</td>", escape_html(value), escape_html(param->text));
    }
    for (const auto& metric : row.metrics) {
      if (metric.n == 0) {
        out += fmt::format("<td>{}</td>", kMissing);
        continue;
      }
      const std::string n = metric.n > 1 ? fmt::format("<span class=\"n\">n={}</span>", metric.n) : "";
      out += fmt::format("<td data-value=\"{}\">{}{}</td>", exact_number(metric.mean),
                         escape_html(summary_text(metric, false)), n);
    }
    out += "</tr>\n";
  }
  out += fmt::format("</tbody>\n</table>\n<script>{}</script>\n</body>\n</html>\n", kScript);
  return out;
}

}  // namespace

std::string render_leaderboard(const Leaderboard& board, LeaderboardFormat format, std::string_view title) {
  switch (format) {
    case LeaderboardFormat::kMarkdown: return render_markdown(board);
    case LeaderboardFormat::kCsv: return render_csv(board);
    case LeaderboardFormat::kJson: return render_json(board);
    case LeaderboardFormat::kHtml: return render_html(board, title);
  }
  return {};
}

}  // namespace protoquant
