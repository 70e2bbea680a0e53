#include "cli/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

namespace llmpool::cli {

std::string format_progress(std::string_view label, double fraction, std::string_view detail, int width) {
  if (!(fraction >= 0.0)) fraction = 0.0;  // NaN too
  fraction = std::min(fraction, 1.0);
  width = std::clamp(width, 1, 200);
  const int filled = static_cast<int>(std::floor(fraction * width));
  std::string s(label);
  s += " [";
  s.append(static_cast<size_t>(filled), '#');
  s.append(static_cast<size_t>(width - filled), '-');
  char pct[16];
  std::snprintf(pct, sizeof pct, "] %3d%%", static_cast<int>(std::floor(fraction * 100.0)));
  s += pct;
  if (!detail.empty()) {
    s += ' ';
    s += detail;
  }
  return s;
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0.0)) seconds = 0.0;
  const auto total = static_cast<long long>(std::llround(std::min(seconds, 1e9)));
  char buf[32];
  if (total < 60) {
    std::snprintf(buf, sizeof buf, "%llds", total);
  } else if (total < 3600) {
    std::snprintf(buf, sizeof buf, "%lldm%02llds", total / 60, total % 60);
  } else {
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", total / 3600, (total / 60) % 60);
  }
  return buf;
}

ProgressBar::ProgressBar(std::FILE* out, std::string label, bool interactive)
    : out_(out), label_(std::move(label)), interactive_(interactive) {}

ProgressBar::ProgressBar(std::string label) : ProgressBar(stderr, std::move(label), ::isatty(STDERR_FILENO) == 1) {}

void ProgressBar::update(double fraction, std::string_view detail) {
  if (done_) return;
  if (interactive_) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_draw_ < std::chrono::milliseconds(100)) return;
    last_draw_ = now;
    draw(fraction, detail, false);
    return;
  }
  const int tenths = std::isfinite(fraction) ? static_cast<int>(std::floor(std::clamp(fraction, 0.0, 1.0) * 10)) : 0;
  if (tenths <= printed_tenths_) return;
  printed_tenths_ = tenths;
  draw(fraction, detail, false);
}

void ProgressBar::finish(double fraction, std::string_view detail) {
  if (done_) return;
  done_ = true;
  draw(fraction, detail, true);
}

void ProgressBar::draw(double fraction, std::string_view detail, bool last) {
  const std::string line = format_progress(label_, fraction, detail);
  if (interactive_) {
    // Blank out what a longer previous line left behind.
    const size_t pad = last_width_ > line.size() ? last_width_ - line.size() : 0;
    std::fprintf(out_, "\r%s%*s%s", line.c_str(), static_cast<int>(pad), "", last ? "\n" : "");
    last_width_ = line.size();
  } else {
    std::fprintf(out_, "%s\n", line.c_str());
  }
  std::fflush(out_);
}

}  // namespace llmpool::cli
