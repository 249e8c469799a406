// Training progress: a redrawn bar with throughput and ETA on a terminal, plain log lines
// (at most one every few seconds, plus one per epoch) when stderr is not a terminal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace protoquant {

class Progress {
 public:
  // total: steps in this phase; unit: what one item is ("img", "vec") for the throughput.
  Progress(std::string label, int64_t total_steps, std::string unit);
  ~Progress();

  // One step done, covering `items` items; `status` is shown after the bar (loss, lr...).
  void step(int64_t items, const std::string& status = {});
  // Ends the bar with a summary line.
  void finish(const std::string& summary = {});

  static bool is_terminal();

 private:
  void draw(bool final_line);

  std::string label_;
  std::string unit_;
  std::string status_;
  int64_t total_ = 0;
  int64_t done_ = 0;
  int64_t items_ = 0;
  bool finished_ = false;
  bool terminal_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
};

}  // namespace protoquant
