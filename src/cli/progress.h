// The progress bar of the long-running subcommands (`mkmodel`, `train`).
//
// On a terminal the bar is one line redrawn in place ("\r", at most ten
// times a second); on a pipe or file it prints a plain line each time
// another tenth is done and at the end, so logs stay short:
//
//   train [############------------------]  40% step 480/1200 loss 3.412 ...
//
// Not thread-safe: one owner, the thread doing the work.
#pragma once

#include <chrono>
#include <cstdio>
#include <string>
#include <string_view>

namespace llmpool::cli {

// "label [####----]  40% detail" with a bar `width` cells wide; `fraction`
// is clamped to [0, 1] (NaN counts as 0).
std::string format_progress(std::string_view label, double fraction, std::string_view detail, int width = 30);

// "42s", "3m05s", "1h02m".
std::string format_duration(double seconds);

class ProgressBar {
 public:
  // `interactive`: redraw in place (a terminal) rather than print lines.
  ProgressBar(std::FILE* out, std::string label, bool interactive);
  // A bar for stderr, interactive when stderr is a terminal.
  explicit ProgressBar(std::string label);

  void update(double fraction, std::string_view detail);
  // The final state, then a newline. Later updates are ignored.
  void finish(double fraction, std::string_view detail);

 private:
  void draw(double fraction, std::string_view detail, bool last);

  std::FILE* out_;
  std::string label_;
  bool interactive_;
  bool done_ = false;
  int printed_tenths_ = -1;
  std::chrono::steady_clock::time_point last_draw_{};
  size_t last_width_ = 0;
};

}  // namespace llmpool::cli
