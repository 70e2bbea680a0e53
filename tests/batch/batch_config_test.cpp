// The `data_dir:` and `batch:` config sections.
#include <gtest/gtest.h>

#include "config/config.h"

namespace llmpool::config {
namespace {

const ConfigIssue* find_issue(const LoadResult& r, const std::string& field) {
  for (const auto& i : r.issues)
    if (i.field == field) return &i;
  return nullptr;
}

const char* kModels = "models:\n  - name: a\n    path: /a.gguf\n";

TEST(BatchConfigTest, IsOffWithoutADataDirAndHasDefaults) {
  LoadResult r = parse_config(kModels, "/etc/llmpool/c.yaml", false);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r.config.data_dir, "");
  EXPECT_EQ(r.config.batch, BatchConfig{});
  EXPECT_EQ(r.config.batch.max_lines, 50000);
}

TEST(BatchConfigTest, ReadsEveryFieldAndAnchorsTheDataDir) {
  LoadResult r = parse_config(std::string("data_dir: state\nbatch:\n  max_file_bytes: 2MiB\n  max_lines: 10\n"
                                          "  max_line_bytes: 4096\n  max_concurrent: 2\n  cancel_grace_ms: 500\n") +
                                  kModels,
                              "/etc/llmpool/c.yaml", false);
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  EXPECT_EQ(r.config.data_dir, "/etc/llmpool/state");
  EXPECT_EQ(r.config.batch.max_file_bytes, 2u << 20);
  EXPECT_EQ(r.config.batch.max_lines, 10);
  EXPECT_EQ(r.config.batch.max_line_bytes, 4096);
  EXPECT_EQ(r.config.batch.max_concurrent, 2);
  EXPECT_EQ(r.config.batch.cancel_grace_ms, 500);
}

TEST(BatchConfigTest, ReportsBadValuesAtTheirLine) {
  LoadResult r = parse_config(std::string("batch:\n  max_lines: 0\n  max_file_bytes: 0\n  max_concurent: 3\n"
                                          "  max_line_bytes: lots\n") +
                                  kModels,
                              "c.yaml", false);
  ASSERT_FALSE(r.ok());
  const ConfigIssue* lines = find_issue(r, "batch.max_lines");
  ASSERT_NE(lines, nullptr);
  EXPECT_EQ(lines->line, 2);
  ASSERT_NE(find_issue(r, "batch.max_file_bytes"), nullptr);
  EXPECT_EQ(find_issue(r, "batch.max_file_bytes")->line, 3);
  ASSERT_NE(find_issue(r, "batch.max_line_bytes"), nullptr);
  bool unknown = false;
  for (const auto& i : r.issues) unknown |= i.line == 4;
  EXPECT_TRUE(unknown) << "the misspelt key is not reported at its line";
  LoadResult list = parse_config(std::string("data_dir: [a]\nbatch: 3\n") + kModels, "c.yaml", false);
  EXPECT_NE(find_issue(list, "data_dir"), nullptr);
  EXPECT_NE(find_issue(list, "batch"), nullptr);
}

}  // namespace
}  // namespace llmpool::config
