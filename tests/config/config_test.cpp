#include "config/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace llmpool::config {
namespace {

// Finds the issue about `field`, or nullptr.
const ConfigIssue* find_issue(const LoadResult& r, const std::string& field) {
  for (const auto& i : r.issues)
    if (i.field == field) return &i;
  return nullptr;
}

TEST(ConfigTest, ParsesAMinimalConfigWithDefaults) {
  LoadResult r = parse_config(R"(
models:
  - name: tiny
    path: models/tiny.gguf
)", "/etc/llmpool/config.yaml", false);
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  EXPECT_EQ(r.config.server.host, "127.0.0.1");
  EXPECT_EQ(r.config.server.port, 8080);
  ASSERT_EQ(r.config.models.size(), 1u);
  EXPECT_EQ(r.config.models[0].type, "local");
  EXPECT_EQ(r.config.models[0].context, 4096);
  // Relative paths are anchored at the config file's folder.
  EXPECT_EQ(r.config.models[0].path, "/etc/llmpool/models/tiny.gguf");
}

TEST(ConfigTest, ReadsEveryField) {
  LoadResult r = parse_config(R"(
log_level: debug
server:
  host: 0.0.0.0
  port: 9000
  io_threads: 4
  max_body_bytes: 2048
  shutdown_grace_ms: 500
models:
  - name: a
    aliases: [a1, a2]
    type: local
    path: /m/a.gguf
    context: 1024
    threads: 3
    capabilities: [general, code]
)", "c.yaml", false);
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  const Config& c = r.config;
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.server.host, "0.0.0.0");
  EXPECT_EQ(c.server.port, 9000);
  EXPECT_EQ(c.server.io_threads, 4);
  EXPECT_EQ(c.server.max_body_bytes, 2048);
  EXPECT_EQ(c.server.shutdown_grace_ms, 500);
  EXPECT_EQ(c.models[0].aliases, (std::vector<std::string>{"a1", "a2"}));
  EXPECT_EQ(c.models[0].context, 1024);
  EXPECT_EQ(c.models[0].threads, 3);
  EXPECT_EQ(c.models[0].capabilities, (std::vector<std::string>{"general", "code"}));
  EXPECT_EQ(c.models[0].line, 10);
}

TEST(ConfigTest, ReportsEveryProblemWithFileLineAndField) {
  LoadResult r = parse_config(R"(server:
  port: 70000
  colour: blue
models:
  - name: a
    path: /m/a.gguf
    context: lots
  - name: a
    path: /m/b.gguf
  - path: /m/c.gguf
    type: martian
)", "bad.yaml", false);
  ASSERT_FALSE(r.ok());
  const ConfigIssue* port = find_issue(r, "server.port");
  ASSERT_NE(port, nullptr);
  EXPECT_EQ(port->line, 2);
  EXPECT_NE(port->message.find("between 0 and 65535"), std::string::npos);
  const ConfigIssue* colour = find_issue(r, "server.colour");
  ASSERT_NE(colour, nullptr);
  EXPECT_EQ(colour->line, 3);
  EXPECT_NE(colour->message.find("unknown field"), std::string::npos);
  const ConfigIssue* ctx = find_issue(r, "models[0].context");
  ASSERT_NE(ctx, nullptr);
  EXPECT_EQ(ctx->line, 7);
  EXPECT_NE(find_issue(r, "models[1].name"), nullptr);  // duplicate
  EXPECT_NE(find_issue(r, "models[2].name"), nullptr);  // missing
  const ConfigIssue* type = find_issue(r, "models[2].type");
  ASSERT_NE(type, nullptr);
  EXPECT_EQ(type->line, 11);
  EXPECT_EQ(type->to_string().rfind("bad.yaml:11:", 0), 0u) << type->to_string();
}

TEST(ConfigTest, InvalidYamlNamesTheLine) {
  LoadResult r = parse_config("models:\n  - name: [unclosed\n", "broken.yaml", false);
  ASSERT_EQ(r.issues.size(), 1u);
  EXPECT_GT(r.issues[0].line, 0);
  EXPECT_NE(r.issues[0].message.find("invalid YAML"), std::string::npos);
}

TEST(ConfigTest, RequiresModelsAndChecksFilesWhenAsked) {
  EXPECT_NE(find_issue(parse_config("log_level: info\n", "x.yaml", false), "models"), nullptr);
  EXPECT_NE(find_issue(parse_config("models: []\n", "x.yaml", false), "models"), nullptr);
  LoadResult r = parse_config("models:\n  - name: a\n    path: /definitely/not/here.gguf\n", "x.yaml", true);
  const ConfigIssue* path = find_issue(r, "models[0].path");
  ASSERT_NE(path, nullptr);
  EXPECT_NE(path->message.find("no such file"), std::string::npos);
}

TEST(ConfigTest, AliasClashingWithANameIsAnError) {
  LoadResult r = parse_config(R"(models:
  - name: a
    path: /a.gguf
  - name: b
    aliases: [a]
    path: /b.gguf
)", "x.yaml", false);
  EXPECT_NE(find_issue(r, "models[1].aliases[0]"), nullptr);
}

TEST(ConfigTest, MissingFileIsAnIssueNotACrash) {
  LoadResult r = load_config("/no/such/config.yaml");
  ASSERT_EQ(r.issues.size(), 1u);
  EXPECT_NE(r.issues[0].message.find("cannot open"), std::string::npos);
}

TEST(ConfigTest, ShippedConfigsAreValidApartFromModelFiles) {
  for (const char* name : {"demo.yaml"}) {
    std::string path = std::string(LLMPOOL_SOURCE_DIR) + "/configs/" + name;
    LoadResult r = load_config(path, false);
    EXPECT_TRUE(r.ok()) << path << ": " << (r.ok() ? "" : r.issues.front().to_string());
  }
}

}  // namespace
}  // namespace llmpool::config
