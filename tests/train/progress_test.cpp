// The progress bar of mkmodel and train: its line shape on a pipe and a terminal.
#include "cli/progress.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <string>

namespace llmpool::cli {
namespace {

std::string read_all(std::FILE* f) {
  std::rewind(f);
  std::string s;
  char buf[4096];
  size_t n;
  while ((n = std::fread(buf, 1, sizeof buf, f)) > 0) s.append(buf, n);
  return s;
}

TEST(ProgressBarTest, FormatsBarPercentAndDetail) {
  EXPECT_EQ(format_progress("train", 0.5, "step 5/10", 10), "train [#####-----]  50% step 5/10");
  EXPECT_EQ(format_progress("x", 2.0, "", 4), "x [####] 100%");
  EXPECT_EQ(format_progress("x", -1.0, "", 4), "x [----]   0%");
  EXPECT_EQ(format_progress("x", 0.0 / 0.0, "", 4), "x [----]   0%");
}

TEST(ProgressBarTest, FormatsDurations) {
  EXPECT_EQ(format_duration(42.4), "42s");
  EXPECT_EQ(format_duration(185), "3m05s");
  EXPECT_EQ(format_duration(3720), "1h02m");
  EXPECT_EQ(format_duration(-5), "0s");
}

TEST(ProgressBarTest, PrintsOneLinePerTenthOnAPipe) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    ProgressBar bar(f, "train", /*interactive=*/false);
    for (int i = 1; i < 100; ++i) bar.update(i / 100.0, "step " + std::to_string(i));
    bar.finish(1.0, "step 100");
    bar.update(1.0, "ignored after finish");
  }
  const std::string out = read_all(f);
  std::fclose(f);
  size_t lines = 0;
  for (char c : out) lines += c == '\n';
  EXPECT_EQ(lines, 11u) << out;  // the start, 0.1 ... 0.9, then the final line
  EXPECT_NE(out.find("train [###---------------------------]  10% step 10\n"), std::string::npos) << out;
  EXPECT_NE(out.find("] 100% step 100\n"), std::string::npos);
  EXPECT_EQ(out.find("ignored"), std::string::npos);
  EXPECT_EQ(out.find('\r'), std::string::npos);
}

TEST(ProgressBarTest, RedrawsInPlaceOnATerminal) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    ProgressBar bar(f, "mkmodel", /*interactive=*/true);
    bar.update(0.25, "a much longer detail text");
    bar.finish(1.0, "done");
  }
  const std::string out = read_all(f);
  std::fclose(f);
  EXPECT_EQ(out.front(), '\r');
  EXPECT_EQ(out.back(), '\n');
  EXPECT_EQ(std::count(out.begin(), out.end(), '\n'), 1);
  EXPECT_NE(out.find("\rmkmodel [##############################] 100% done"), std::string::npos) << out;
}

}  // namespace
}  // namespace llmpool::cli
