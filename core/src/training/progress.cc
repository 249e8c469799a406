#include "protoquant/progress.h"

#include <unistd.h>

#include <cstdio>

#include <fmt/format.h>

#include "protoquant/collectives.h"

namespace protoquant {

namespace {
std::string clock_text(double seconds) {
  if (seconds < 0 || seconds > 360000) return "--:--";
  const auto s = static_cast<int64_t>(seconds + 0.5);
  return s >= 3600 ? fmt::format("{}:{:02}:{:02}", s / 3600, (s / 60) % 60, s % 60)
                   : fmt::format("{:02}:{:02}", s / 60, s % 60);
}
}  // namespace

bool Progress::is_terminal() { return ::isatty(STDERR_FILENO) == 1; }

Progress::Progress(std::string label, int64_t total_steps, std::string unit)
    : label_(std::move(label)), unit_(std::move(unit)), total_(total_steps), terminal_(is_terminal()) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

Progress::~Progress() {
  if (!finished_) finish();
}

void Progress::step(int64_t items, const std::string& status) {
  ++done_;
  items_ += items;
  status_ = status;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if ((terminal_ && since >= 0.1) || (!terminal_ && since >= 10.0)) {
    last_draw_ = now;
    draw(false);
  }
}

void Progress::finish(const std::string& summary) {
  if (finished_) return;
  finished_ = true;
  if (!summary.empty()) status_ = summary;
  draw(true);
}

void Progress::draw(bool final_line) {
  if (collectives().rank() != 0) return;  // a data-parallel run reports once, from rank 0
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  const double rate = elapsed > 0 ? static_cast<double>(items_) / elapsed : 0.0;
  const double eta = done_ > 0 ? elapsed / static_cast<double>(done_) * static_cast<double>(total_ - done_) : -1.0;
  if (terminal_) {
    constexpr int kWidth = 24;
    const int filled = total_ > 0 ? static_cast<int>(kWidth * done_ / total_) : kWidth;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(kWidth, '.');
    fmt::print(stderr, "\r\033[K{} [{}] {}/{} {:.0f} {}/s {} {} {}", label_, bar, done_, total_, rate, unit_,
               final_line ? "took" : "ETA", clock_text(final_line ? elapsed : eta), status_);
    if (final_line) fmt::print(stderr, "\n");
  } else {
    fmt::print(stderr, "{}: {}/{} steps, {:.0f} {}/s, {} {}{}\n", label_, done_, total_, rate, unit_,
               final_line ? "took" : "ETA", clock_text(final_line ? elapsed : eta),
               status_.empty() ? "" : ", " + status_);
  }
  std::fflush(stderr);
}

}  // namespace protoquant
