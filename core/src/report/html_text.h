// Text inside HTML and SVG (the leaderboard page, the run report and its charts): &, <, >, " and '
// escaped, so names and settings from manifests can never break the markup.
#pragma once

#include <string>
#include <string_view>

namespace protoquant {

inline std::string escape_html(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

}  // namespace protoquant
