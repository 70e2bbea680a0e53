#include "config/config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <optional>

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

TEST(ConfigTest, BuiltInDefaultsForThePoolAndTheNewModelFields) {
  LoadResult r = parse_config("models:\n  - name: a\n    path: /a.gguf\n", "x.yaml", false);
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  const PoolConfig& p = r.config.pool;
  EXPECT_EQ(p.memory_budget_bytes, 0u);
  EXPECT_EQ(p.max_loaded_models, 0);
  EXPECT_EQ(p.load_timeout_ms, 120000);
  EXPECT_EQ(p.watchdog_free_memory_percent, 20);
  EXPECT_EQ(p.watchdog_interval_ms, 5000);
  EXPECT_EQ(r.config.server.config_poll_ms, 1000);
  const ModelConfig& m = r.config.models[0];
  EXPECT_EQ(m.keep_alive_ms, 300000);
  EXPECT_EQ(m.priority, 0);
  EXPECT_FALSE(m.pinned);
  EXPECT_FALSE(m.warm);
  EXPECT_EQ(m.max_concurrent, 0);
  EXPECT_EQ(m.deadline_ms, 0);
}

TEST(ConfigTest, ReadsThePoolSectionAndEveryModelField) {
  LoadResult r = parse_config(R"(server:
  config_poll_ms: 250
pool:
  memory_budget: 4GiB
  max_loaded_models: 3
  load_timeout_ms: 30000
  watchdog_free_memory_percent: 15
  watchdog_interval_ms: 2000
models:
  - name: local1
    path: /m/a.gguf
    context: 8192
    parallel: 2
    batch: 256
    threads: 4
    max_queue: 10
    deadline_ms: 12000
    max_concurrent: 2
    priority: 7
    keep_alive: 30s
    pinned: true
    warm: yes
    capabilities: [code, reasoning, vision]
  - name: gpt
    type: openai
    base_url: https://api.example.com/v1
    upstream_model: gpt-4o-mini
    api_key_env: OPENAI_API_KEY
    connect_timeout_ms: 2000
    read_timeout_ms: 60000
    max_concurrent: 8
  - name: llama
    type: ollama
    base_url: http://127.0.0.1:11434
)", "c.yaml", false);
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  const Config& c = r.config;
  EXPECT_EQ(c.server.config_poll_ms, 250);
  EXPECT_EQ(c.pool.memory_budget_bytes, uint64_t{4} << 30);
  EXPECT_EQ(c.pool.max_loaded_models, 3);
  EXPECT_EQ(c.pool.load_timeout_ms, 30000);
  EXPECT_EQ(c.pool.watchdog_free_memory_percent, 15);
  EXPECT_EQ(c.pool.watchdog_interval_ms, 2000);
  const ModelConfig& l = c.models[0];
  EXPECT_EQ(l.context, 8192);
  EXPECT_EQ(l.parallel, 2);
  EXPECT_EQ(l.batch, 256);
  EXPECT_EQ(l.threads, 4);
  EXPECT_EQ(l.max_queue, 10);
  EXPECT_EQ(l.deadline_ms, 12000);
  EXPECT_EQ(l.max_concurrent, 2);
  EXPECT_EQ(l.priority, 7);
  EXPECT_EQ(l.keep_alive_ms, 30000);
  EXPECT_TRUE(l.pinned);
  EXPECT_TRUE(l.warm);
  EXPECT_EQ(l.capabilities, (std::vector<std::string>{"code", "reasoning", "vision"}));
  EXPECT_FALSE(l.is_remote());
  const ModelConfig& g = c.models[1];
  EXPECT_TRUE(g.is_remote());
  EXPECT_EQ(g.type, "openai");
  EXPECT_EQ(g.base_url, "https://api.example.com/v1");
  EXPECT_EQ(g.upstream_model, "gpt-4o-mini");
  EXPECT_EQ(g.api_key_env, "OPENAI_API_KEY");
  EXPECT_EQ(g.connect_timeout_ms, 2000);
  EXPECT_EQ(g.read_timeout_ms, 60000);
  EXPECT_EQ(g.max_concurrent, 8);
  EXPECT_TRUE(g.path.empty());
  const ModelConfig& o = c.models[2];
  EXPECT_EQ(o.type, "ollama");
  EXPECT_EQ(o.upstream_model, "llama");  // defaults to the name
}

TEST(ConfigTest, DefaultsApplyToModelsThatDoNotSetThem) {
  LoadResult r = parse_config(R"(defaults:
  context: 16384
  deadline_ms: 12000
  keep_alive: 15m
  threads: 2
  capabilities: [general]
  base_url: http://10.0.0.1:8000/v1
models:
  - name: a
    path: /a.gguf
  - name: b
    path: /b.gguf
    context: 1024
    keep_alive: forever
    capabilities: [code]
  - name: c
    type: openai
)", "d.yaml", false);
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  const auto& m = r.config.models;
  EXPECT_EQ(m[0].context, 16384);
  EXPECT_EQ(m[0].deadline_ms, 12000);
  EXPECT_EQ(m[0].keep_alive_ms, 15 * 60000);
  EXPECT_EQ(m[0].threads, 2);
  EXPECT_EQ(m[0].capabilities, std::vector<std::string>{"general"});
  EXPECT_TRUE(m[0].base_url.empty());  // a remote default does not stick to a local model
  EXPECT_EQ(m[1].context, 1024);
  EXPECT_EQ(m[1].deadline_ms, 12000);
  EXPECT_EQ(m[1].keep_alive_ms, kKeepAliveForever);
  EXPECT_EQ(m[1].capabilities, std::vector<std::string>{"code"});
  EXPECT_EQ(m[2].base_url, "http://10.0.0.1:8000/v1");
  EXPECT_EQ(m[0].line, 9);
}

TEST(ConfigTest, DefaultsCannotNameOneModel) {
  LoadResult r = parse_config("defaults:\n  name: x\n  path: /x.gguf\nmodels:\n  - name: a\n    path: /a.gguf\n",
                              "d.yaml", false);
  const ConfigIssue* name = find_issue(r, "defaults.name");
  ASSERT_NE(name, nullptr);
  EXPECT_EQ(name->line, 2);
  EXPECT_NE(name->message.find("unknown field"), std::string::npos);
  EXPECT_NE(find_issue(r, "defaults.path"), nullptr);
}

// Found by the config fuzzer: aliases under `defaults:` were refused but
// still inherited, so two models shared an alias, and reporting the
// duplicate indexed a model's absent `aliases` node (an uncaught
// YAML::InvalidNode: the process aborted).
TEST(ConfigTest, AliasesUnderDefaultsAreRefusedAndNotInherited) {
  LoadResult r = parse_config(
      "defaults:\n  aliases: [shared]\nmodels:\n  - name: a\n    path: /a.gguf\n  - name: b\n    path: /b.gguf\n",
      "d.yaml", false);
  ASSERT_NE(find_issue(r, "defaults.aliases"), nullptr);
  EXPECT_EQ(find_issue(r, "models[1].aliases[0]"), nullptr);
  ASSERT_EQ(r.config.models.size(), 2u);
  EXPECT_TRUE(r.config.models[0].aliases.empty());
  EXPECT_TRUE(r.config.models[1].aliases.empty());
}

TEST(ConfigTest, KeepAliveTakesDurationsSecondsZeroAndForever) {
  auto keep_alive = [](const std::string& v) -> std::optional<int64_t> {
    LoadResult r = parse_config("models:\n  - name: a\n    path: /a.gguf\n    keep_alive: " + v + "\n", "k.yaml", false);
    if (!r.ok()) return std::nullopt;
    return r.config.models[0].keep_alive_ms;
  };
  EXPECT_EQ(keep_alive("5m"), 300000);
  EXPECT_EQ(keep_alive("30s"), 30000);
  EXPECT_EQ(keep_alive("1h30m"), 5400000);
  EXPECT_EQ(keep_alive("250ms"), 250);
  EXPECT_EQ(keep_alive("90"), 90000);  // a bare number is seconds
  EXPECT_EQ(keep_alive("0"), 0);
  EXPECT_EQ(keep_alive("\"0\""), 0);
  EXPECT_EQ(keep_alive("-1"), kKeepAliveForever);
  EXPECT_EQ(keep_alive("forever"), kKeepAliveForever);
  EXPECT_EQ(keep_alive("5 minutes"), std::nullopt);
  EXPECT_EQ(keep_alive("-5m"), std::nullopt);
  EXPECT_EQ(keep_alive("[1]"), std::nullopt);
  LoadResult r = parse_config("models:\n  - name: a\n    path: /a.gguf\n    keep_alive: soon\n", "k.yaml", false);
  const ConfigIssue* i = find_issue(r, "models[0].keep_alive");
  ASSERT_NE(i, nullptr);
  EXPECT_EQ(i->line, 4);
  EXPECT_EQ(i->column, 17);
  EXPECT_NE(i->message.find("forever"), std::string::npos);
}

TEST(ConfigTest, ParsesAndFormatsDurations) {
  EXPECT_EQ(parse_duration_ms("1.5h"), 5400000);
  EXPECT_EQ(parse_duration_ms("2d"), 2 * 86400000);
  EXPECT_EQ(parse_duration_ms(" 10s "), 10000);
  EXPECT_EQ(parse_duration_ms("never"), kKeepAliveForever);
  EXPECT_EQ(parse_duration_ms("1000d"), std::nullopt);  // past 100 days
  EXPECT_EQ(parse_duration_ms("10x"), std::nullopt);
  EXPECT_EQ(parse_duration_ms("10 5s"), std::nullopt);
  EXPECT_EQ(parse_duration_ms(""), std::nullopt);
  EXPECT_EQ(format_duration_ms(300000), "5m");
  EXPECT_EQ(format_duration_ms(5400000), "1h30m");
  EXPECT_EQ(format_duration_ms(1500), "1s500ms");
  EXPECT_EQ(format_duration_ms(0), "0");
  EXPECT_EQ(format_duration_ms(kKeepAliveForever), "forever");
}

TEST(ConfigTest, ParsesSizes) {
  EXPECT_EQ(parse_size_bytes("0"), 0u);
  EXPECT_EQ(parse_size_bytes("123456"), 123456u);
  EXPECT_EQ(parse_size_bytes("512MiB"), uint64_t{512} << 20);
  EXPECT_EQ(parse_size_bytes("4GiB"), uint64_t{4} << 30);
  EXPECT_EQ(parse_size_bytes("4 GiB"), uint64_t{4} << 30);
  EXPECT_EQ(parse_size_bytes("1.5GiB"), uint64_t{3} << 29);
  EXPECT_EQ(parse_size_bytes("8GB"), 8000000000u);
  EXPECT_EQ(parse_size_bytes("2g"), 2000000000u);
  EXPECT_EQ(parse_size_bytes("64Ki"), 65536u);
  EXPECT_EQ(parse_size_bytes("100B"), 100u);
  EXPECT_EQ(parse_size_bytes("4 GiBs"), std::nullopt);
  EXPECT_EQ(parse_size_bytes("-1"), std::nullopt);
  EXPECT_EQ(parse_size_bytes("GiB"), std::nullopt);
  EXPECT_EQ(parse_size_bytes("2000000TiB"), std::nullopt);
  LoadResult r = parse_config("pool:\n  memory_budget: lots\nmodels:\n  - name: a\n    path: /a.gguf\n", "s.yaml", false);
  const ConfigIssue* i = find_issue(r, "pool.memory_budget");
  ASSERT_NE(i, nullptr);
  EXPECT_EQ(i->to_string().rfind("s.yaml:2:18: pool.memory_budget: must be a size", 0), 0u) << i->to_string();
}

TEST(ConfigTest, HttpsUpstreamsTakeACaFileAndOtherSchemesAreRefusedAtTheirLine) {
  LoadResult r = parse_config(R"(models:
  - name: a
    type: openai
    base_url: HTTPS://api.example.com/v1
    ca_file: certs/private-ca.pem
  - name: b
    type: openai
    base_url: file:///etc/passwd
  - name: c
    type: ollama
    base_url: https://u:p@host/
  - name: d
    type: openai
    base_url: https://host/v1
    tls_insecure_skip_verify: true
  - name: e
    path: /e.gguf
    ca_file: x.pem
)", "/cfg/t.yaml", true);
  const ConfigIssue* ca = find_issue(r, "models[0].ca_file");
  ASSERT_NE(ca, nullptr);  // checked like a model file
  EXPECT_EQ(ca->line, 5);
  EXPECT_NE(ca->message.find("no such file: /cfg/certs/private-ca.pem"), std::string::npos) << ca->message;
  EXPECT_EQ(find_issue(r, "models[0].base_url"), nullptr);  // the scheme is case-insensitive
  const ConfigIssue* b = find_issue(r, "models[1].base_url");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->line, 8);
  EXPECT_EQ(b->to_string().rfind("/cfg/t.yaml:8:", 0), 0u) << b->to_string();
  EXPECT_NE(b->message.find("http:// or https://"), std::string::npos);
  const ConfigIssue* c = find_issue(r, "models[2].base_url");
  ASSERT_NE(c, nullptr);
  EXPECT_NE(c->message.find("user info"), std::string::npos) << c->message;
  EXPECT_EQ(find_issue(r, "models[3].base_url"), nullptr);
  EXPECT_EQ(find_issue(r, "models[3].tls_insecure_skip_verify"), nullptr);
  const ConfigIssue* e = find_issue(r, "models[4].ca_file");
  ASSERT_NE(e, nullptr);
  EXPECT_NE(e->message.find("only for remote models"), std::string::npos);
}

TEST(ConfigTest, RemoteModelsNeedAnHttpBaseUrlAndAnEnvVarNameForTheKey) {
  LoadResult r = parse_config(R"(models:
  - name: a
    type: openai
  - name: b
    type: ollama
    base_url: ftp://host
  - name: c
    type: openai
    base_url: https://
    api_key_env: sk-abc123
  - name: d
    type: openai
    base_url: http://x
    path: /d.gguf
  - name: e
    path: /e.gguf
    base_url: http://x
    api_key_env: KEY
  - name: f
    type: remote
)", "r.yaml", false);
  const ConfigIssue* a = find_issue(r, "models[0].base_url");
  ASSERT_NE(a, nullptr);
  EXPECT_NE(a->message.find("is required"), std::string::npos);
  EXPECT_EQ(a->line, 2);
  const ConfigIssue* b = find_issue(r, "models[1].base_url");
  ASSERT_NE(b, nullptr);
  EXPECT_EQ(b->line, 6);
  EXPECT_NE(b->message.find("http:// or https://"), std::string::npos);
  EXPECT_NE(find_issue(r, "models[2].base_url"), nullptr);  // no host
  const ConfigIssue* key = find_issue(r, "models[2].api_key_env");
  ASSERT_NE(key, nullptr);
  EXPECT_EQ(key->line, 10);
  EXPECT_NE(key->message.find("never write the key itself"), std::string::npos);
  const ConfigIssue* path = find_issue(r, "models[3].path");
  ASSERT_NE(path, nullptr);
  EXPECT_NE(path->message.find("only for local models"), std::string::npos);
  const ConfigIssue* local_url = find_issue(r, "models[4].base_url");
  ASSERT_NE(local_url, nullptr);
  EXPECT_NE(local_url->message.find("only for remote models"), std::string::npos);
  EXPECT_NE(find_issue(r, "models[4].api_key_env"), nullptr);
  const ConfigIssue* type = find_issue(r, "models[5].type");
  ASSERT_NE(type, nullptr);
  EXPECT_NE(type->message.find("known: local, openai, ollama"), std::string::npos);
}

TEST(ConfigTest, UnknownCapabilityListsTheKnownTags) {
  LoadResult r = parse_config("models:\n  - name: a\n    path: /a.gguf\n    capabilities: [general, poetry, general]\n",
                              "c.yaml", false);
  const ConfigIssue* i = find_issue(r, "models[0].capabilities[1]");
  ASSERT_NE(i, nullptr);
  EXPECT_EQ(i->line, 4);
  EXPECT_EQ(i->column, 29);
  EXPECT_NE(i->message.find("unknown capability 'poetry' (known: general, code, reasoning, fast, embedding, "
                            "safety, vision, tools)"),
            std::string::npos);
  const ConfigIssue* twice = find_issue(r, "models[0].capabilities[2]");
  ASSERT_NE(twice, nullptr);
  EXPECT_NE(twice->message.find("twice"), std::string::npos);
}

TEST(ConfigTest, BoundsAndTypesOfTheNewFields) {
  LoadResult r = parse_config(R"(server:
  config_poll_ms: -5
pool:
  max_loaded_models: -1
  load_timeout_ms: 0
  watchdog_free_memory_percent: 100
  watchdog_interval_ms: 10
  colour: red
models:
  - name: a b
    path: /a.gguf
    priority: 5000
    pinned: maybe
    warm: [x]
    max_concurrent: -3
)", "b.yaml", false);
  for (const char* f : {"server.config_poll_ms", "pool.max_loaded_models", "pool.load_timeout_ms",
                        "pool.watchdog_free_memory_percent", "pool.watchdog_interval_ms", "pool.colour",
                        "models[0].name", "models[0].priority", "models[0].pinned", "models[0].warm",
                        "models[0].max_concurrent"})
    EXPECT_NE(find_issue(r, f), nullptr) << f;
  EXPECT_EQ(find_issue(r, "models[0].pinned")->line, 13);
  EXPECT_NE(find_issue(r, "models[0].pinned")->message.find("true or false"), std::string::npos);
  // Every issue, in file order.
  for (size_t i = 1; i < r.issues.size(); ++i) EXPECT_LE(r.issues[i - 1].line, r.issues[i].line);
}

TEST(ConfigTest, TenantsAreReadAndRoutingIsChecked) {
  LoadResult r = parse_config(R"(tenants:
  - name: main
    plan: pro
models:
  - name: a
    path: /a.gguf
)", "p.yaml", false);
  EXPECT_TRUE(r.ok()) << r.issues.front().to_string();
  r = parse_config(R"(routing:
  strategy: whatever
models:
  - name: a
    path: /a.gguf
)", "p.yaml", false);
  const ConfigIssue* i = find_issue(r, "routing.strategy");
  ASSERT_NE(i, nullptr);
  EXPECT_EQ(i->to_string().substr(0, 11), "p.yaml:2:3:");
}

TEST(ConfigTest, SameSettingsIgnoresWhereAModelIsWritten) {
  ModelConfig a;
  a.name = "a";
  a.path = "/a.gguf";
  a.line = 3;
  ModelConfig b = a;
  b.line = 30;
  EXPECT_TRUE(same_settings(a, b));
  b.keep_alive_ms = 1;
  EXPECT_FALSE(same_settings(a, b));
  b = a;
  b.capabilities = {"code"};
  EXPECT_FALSE(same_settings(a, b));
}


TEST(ConfigTest, ReadsTheRoutingSection) {
  LoadResult r = parse_config(R"(
models:
  - name: general
    path: /g.gguf
    capabilities: [general]
  - name: coder
    path: /c.gguf
    capabilities: [code]
    thinking: {supported: true, min_tokens: 128, max_tokens: 2048}
  - name: coder-next
    path: /n.gguf
routing:
  classifier: {weights: {reasoning: 0.5}, code_required: 0.6, tools_required: true}
  score: {weights: {latency: 0.5}, latency_ref_ms: 1000}
  instances: {slow_p95_ms: 800, min_samples: 3, recover_ratio: 0.5, max_sample_age_ms: 60000}
  breaker: {failure_threshold: 2, cooldown_ms: 500}
  retry_budget: {retry_ratio: 0.5, window_ms: 2000}
  admission: {max_active: 8, retry_after_seconds: 2}
  effort: {hint_weight: 0.6, high_tier_tokens: 1024, temperature_max: 0.8}
  groups:
    - name: auto
      models: [general, coder]
      fallbacks: [coder-next]
      strategy: voting
      k: 3
      consensus_threshold: 0.7
      hedge: {max_parallel: 3, default_delay_ms: 250}
    - name: judged
      models: [general, coder]
      strategy: judge
      judge: general
  canary:
    min_samples: 10
    max_helpful_drop: 0.2
    routes:
      - route: code
        baseline_model: coder
        arms: [{name: next, model: coder-next, percent: 5}]
  decision_log: logs/decisions.jsonl
)", "/etc/llmpool/config.yaml", false);
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  const RoutingConfig& rc = r.config.routing;
  EXPECT_DOUBLE_EQ(rc.classifier.weight_reasoning, 0.5);
  EXPECT_DOUBLE_EQ(rc.classifier.weight_code, 0.15);  // default kept
  EXPECT_DOUBLE_EQ(rc.classifier.code_required, 0.6);
  EXPECT_TRUE(rc.classifier.tools_required);
  EXPECT_DOUBLE_EQ(rc.score.weight_latency, 0.5);
  EXPECT_DOUBLE_EQ(rc.score.latency_ref_ms, 1000);
  EXPECT_DOUBLE_EQ(rc.instances.slow_p95_ms, 800);
  EXPECT_EQ(rc.instances.min_samples, 3);
  EXPECT_EQ(rc.instances.max_sample_age_ms, 60000);
  EXPECT_EQ(rc.breaker.failure_threshold, 2);
  EXPECT_EQ(rc.breaker.cooldown_ms, 500);
  EXPECT_DOUBLE_EQ(rc.retry_budget.retry_ratio, 0.5);
  EXPECT_EQ(rc.admission.max_active, 8);
  EXPECT_EQ(rc.effort.high_tier_tokens, 1024);
  ASSERT_EQ(rc.groups.size(), 2u);
  EXPECT_EQ(rc.groups[0].name, "auto");
  EXPECT_EQ(rc.groups[0].models, (std::vector<std::string>{"general", "coder"}));
  EXPECT_EQ(rc.groups[0].fallbacks, (std::vector<std::string>{"coder-next"}));
  EXPECT_EQ(rc.groups[0].strategy, "voting");
  EXPECT_EQ(rc.groups[0].k, 3);
  EXPECT_EQ(rc.groups[0].hedge_max_parallel, 3);
  EXPECT_EQ(rc.groups[0].hedge_default_delay_ms, 250);
  EXPECT_EQ(rc.groups[1].judge, "general");
  EXPECT_EQ(rc.find_group("judged"), &rc.groups[1]);
  EXPECT_EQ(rc.canary.min_samples, 10);
  ASSERT_EQ(rc.canary.routes.size(), 1u);
  EXPECT_EQ(rc.canary.routes[0].arms[0].model, "coder-next");
  EXPECT_DOUBLE_EQ(rc.canary.routes[0].arms[0].percent, 5);
  EXPECT_EQ(rc.decision_log, "/etc/llmpool/logs/decisions.jsonl");
  EXPECT_TRUE(r.config.models[1].thinking.supported);
  EXPECT_EQ(r.config.models[1].thinking.max_tokens, 2048);
  EXPECT_FALSE(r.config.models[0].thinking.supported);
}

TEST(ConfigTest, TheDecisionLogIsAPathOrAPathWithRotationLimits) {
  LoadResult plain = parse_config("models:\n  - name: a\n    path: /a.gguf\nrouting:\n  decision_log: d.jsonl\n",
                                  "/etc/llmpool/c.yaml", false);
  ASSERT_TRUE(plain.ok()) << plain.issues.front().to_string();
  EXPECT_EQ(plain.config.routing.decision_log, "/etc/llmpool/d.jsonl");
  EXPECT_EQ(plain.config.routing.decision_log_max_bytes, 64u << 20);  // the defaults
  EXPECT_EQ(plain.config.routing.decision_log_keep, 3);

  LoadResult r = parse_config(R"(models:
  - name: a
    path: /a.gguf
routing:
  decision_log: {path: logs/d.jsonl, max_bytes: 10MiB, keep: 5}
)", "/etc/llmpool/c.yaml", false);
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  EXPECT_EQ(r.config.routing.decision_log, "/etc/llmpool/logs/d.jsonl");
  EXPECT_EQ(r.config.routing.decision_log_max_bytes, 10u << 20);
  EXPECT_EQ(r.config.routing.decision_log_keep, 5);

  LoadResult bad = parse_config(R"(models:
  - name: a
    path: /a.gguf
routing:
  decision_log: {path: d.jsonl, keep: 1000, rotate: daily}
)", "c.yaml", false);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(find_issue(bad, "routing.decision_log.keep"), nullptr);
  EXPECT_NE(find_issue(bad, "routing.decision_log.rotate"), nullptr);
}

TEST(ConfigTest, RoutingReferencesAndValuesAreCheckedWithPositions) {
  LoadResult r = parse_config(R"(models:
  - name: a
    path: /a.gguf
routing:
  breaker: {failure_threshold: 0}
  groups:
    - name: g
      models: [a, missing]
      strategy: fastestest
    - name: a
      models: [a]
      strategy: judge
  canary:
    routes:
      - route: nowhere
        baseline_model: a
        arms: [{name: x, model: a, percent: 80}, {name: y, model: a, percent: 30}]
  bogus: 1
)", "c.yaml", false);
  ASSERT_FALSE(r.ok());
  const ConfigIssue* i = find_issue(r, "routing.groups[0].models[1]");
  ASSERT_NE(i, nullptr);
  EXPECT_EQ(i->line, 8);
  EXPECT_EQ(i->column, 19);
  EXPECT_NE(i->message.find("unknown model 'missing'"), std::string::npos);
  EXPECT_NE(find_issue(r, "routing.breaker.failure_threshold"), nullptr);
  EXPECT_NE(find_issue(r, "routing.groups[0].strategy"), nullptr);
  EXPECT_NE(find_issue(r, "routing.groups[1].name"), nullptr);   // clashes with a model
  EXPECT_NE(find_issue(r, "routing.groups[1].judge"), nullptr);  // judge strategy without a judge
  EXPECT_NE(find_issue(r, "routing.canary.routes[0].route"), nullptr);
  EXPECT_NE(find_issue(r, "routing.canary.routes[0].arms[1].percent"), nullptr);
  EXPECT_NE(find_issue(r, "routing.bogus"), nullptr);
}

TEST(ConfigTest, ThinkingBoundsAreChecked) {
  LoadResult r = parse_config(R"(models:
  - name: a
    path: /a.gguf
    thinking: {supported: yes, min_tokens: 900, max_tokens: 100, extra: 1}
)", "c.yaml", false);
  EXPECT_NE(find_issue(r, "models[0].thinking.min_tokens"), nullptr);
  EXPECT_NE(find_issue(r, "models[0].thinking.extra"), nullptr);
}

TEST(ConfigTest, ShippedConfigsAreValidApartFromModelFiles) {
  for (const char* name : {"demo.yaml", "seed-roles.yaml", "routing-demo.yaml"}) {
    std::string path = std::string(LLMPOOL_SOURCE_DIR) + "/configs/" + name;
    LoadResult r = load_config(path, false);
    EXPECT_TRUE(r.ok()) << path << ": " << (r.ok() ? "" : r.issues.front().to_string());
  }
}

// Found by the config fuzzer (tests/fuzz/config/crash-canary-route-without-arms):
// a canary route without `arms` threw YAML::InvalidNode out of parse_config.
TEST(ConfigTest, CanaryRouteWithoutArmsIsReadNotThrown) {
  LoadResult r = parse_config(R"(
models:
  - {name: coder, path: coder.gguf}
routing:
  canary:
    routes:
      - route: code
        baseline_model: coder
        aRms: [{name: next, model: coder, percent: 5}]
)", "x.yaml", false);
  EXPECT_NE(find_issue(r, "routing.canary.routes[0].aRms"), nullptr);
  LoadResult plain = parse_config("models:\n  - {name: coder, path: coder.gguf}\n"
                               "routing:\n  canary:\n    routes:\n      - {route: code, baseline_model: coder}\n",
                               "x.yaml", false);
  ASSERT_TRUE(plain.ok()) << plain.issues.front().to_string();
  ASSERT_EQ(plain.config.routing.canary.routes.size(), 1u);
  EXPECT_TRUE(plain.config.routing.canary.routes[0].arms.empty());
}

// engine: the KV cache element type, per model or in defaults.
TEST(ConfigTest, KvTypeIsF16ByDefaultTakesQ8AndRefusesOthersAtTheirLine) {
  LoadResult r = parse_config(R"(defaults:
  kv_type: q8_0
models:
  - name: a
    path: /a.gguf
  - name: b
    path: /b.gguf
    kv_type: f16
  - name: c
    path: /c.gguf
    kv_type: q4_k
  - name: d
    path: /d.gguf
    kv_type: [f16]
)", "k.yaml", false);
  ASSERT_EQ(r.config.models.size(), 4u);
  EXPECT_EQ(r.config.models[0].kv_type, "q8_0");
  EXPECT_EQ(r.config.models[1].kv_type, "f16");
  const ConfigIssue* bad = find_issue(r, "models[2].kv_type");
  ASSERT_NE(bad, nullptr);
  EXPECT_EQ(bad->line, 11);
  EXPECT_NE(bad->message.find("f16 or q8_0"), std::string::npos);
  EXPECT_NE(find_issue(r, "models[3].kv_type"), nullptr);
  EXPECT_EQ(parse_config("models:\n  - name: x\n    path: /x.gguf\n", "d.yaml", false).config.models[0].kv_type,
            "f16");
}

// engine: sampling defaults for requests that set none (llama-server's).
TEST(ConfigTest, TopKAndMinPDefaultToLlamaServersAndAreBounded) {
  LoadResult r = parse_config(R"(models:
  - name: a
    path: /a.gguf
  - name: b
    path: /b.gguf
    top_k: 0
    min_p: 0.1
  - name: c
    path: /c.gguf
    min_p: 2
)", "s.yaml", false);
  ASSERT_EQ(r.config.models.size(), 3u);
  EXPECT_EQ(r.config.models[0].top_k, 40);
  EXPECT_DOUBLE_EQ(r.config.models[0].min_p, 0.05);
  EXPECT_EQ(r.config.models[1].top_k, 0);
  EXPECT_DOUBLE_EQ(r.config.models[1].min_p, 0.1);
  const ConfigIssue* bad = find_issue(r, "models[2].min_p");
  ASSERT_NE(bad, nullptr);
  EXPECT_EQ(bad->line, 10);
}

// engine: `repack` (the CPU's extra weight layouts) is on unless turned off.
TEST(ConfigTest, RepackIsOnByDefaultAndABoolean) {
  LoadResult r = parse_config(R"(models:
  - name: a
    path: /a.gguf
  - name: b
    path: /b.gguf
    repack: false
  - name: c
    path: /c.gguf
    repack: sometimes
)", "r.yaml", false);
  ASSERT_EQ(r.config.models.size(), 3u);
  EXPECT_TRUE(r.config.models[0].repack);
  EXPECT_FALSE(r.config.models[1].repack);
  const ConfigIssue* bad = find_issue(r, "models[2].repack");
  ASSERT_NE(bad, nullptr);
  EXPECT_EQ(bad->line, 9);
}

}  // namespace
}  // namespace llmpool::config

namespace llmpool::config {
namespace {

// Speculative decoding: `draft:` names another local model or a file, or asks
// for prompt lookup.
TEST(ConfigDraftTest, ResolvesADraftByModelNameOrPath) {
  LoadResult r = parse_config(R"(
models:
  - name: big
    path: big.gguf
    draft: {model: small, max_tokens: 8, min_tokens: 2, p_min: 0.5, adaptive: false}
  - name: small
    path: models/small.gguf
  - name: other
    path: other.gguf
    draft: {model: drafts/d.gguf}
  - name: echo
    path: echo.gguf
    draft: {ngram: 4}
)", "/etc/llmpool/config.yaml", false);
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  const auto& m = r.config.models;
  EXPECT_EQ(m[0].draft.path, "/etc/llmpool/models/small.gguf");
  EXPECT_EQ(m[0].draft.max_tokens, 8);
  EXPECT_EQ(m[0].draft.min_tokens, 2);
  EXPECT_DOUBLE_EQ(m[0].draft.p_min, 0.5);
  EXPECT_FALSE(m[0].draft.adaptive);
  EXPECT_TRUE(m[2].draft.adaptive);  // the speculation gate is on by default
  EXPECT_TRUE(m[1].draft.model.empty());
  EXPECT_EQ(m[2].draft.path, "/etc/llmpool/drafts/d.gguf");
  EXPECT_EQ(m[3].draft.ngram, 4);
  EXPECT_TRUE(m[3].draft.path.empty());
}

TEST(ConfigDraftTest, ReportsBadDraftSettingsWithTheirLine) {
  LoadResult r = parse_config(R"(
models:
  - name: a
    path: a.gguf
    draft: {model: a}
  - name: b
    path: b.gguf
    draft: {model: missing.gguf, ngram: 2}
  - name: c
    path: c.gguf
    draft: {ngram: 65, max_tokens: 0, p_min: 1.5, min_tokens: 300, extra: 1,
            adaptive: sometimes}
  - name: d
    type: openai
    base_url: http://127.0.0.1:1/v1
    draft: {model: a}
)", "c.yaml", true);
  ASSERT_FALSE(r.ok());
  const ConfigIssue* self = find_issue(r, "models[0].draft.model");
  ASSERT_NE(self, nullptr);
  EXPECT_EQ(self->line, 5);
  EXPECT_NE(self->message.find("its own draft"), std::string::npos);
  const ConfigIssue* both = find_issue(r, "models[1].draft.ngram");
  ASSERT_NE(both, nullptr);
  const ConfigIssue* missing = find_issue(r, "models[1].draft.model");
  ASSERT_NE(missing, nullptr);
  EXPECT_NE(missing->message.find("no such file"), std::string::npos);
  for (const char* f : {"models[2].draft.ngram", "models[2].draft.max_tokens", "models[2].draft.p_min",
                        "models[2].draft.min_tokens", "models[2].draft.extra", "models[3].draft.model"})
    EXPECT_NE(find_issue(r, f), nullptr) << f;
  const ConfigIssue* adaptive = find_issue(r, "models[2].draft.adaptive");
  ASSERT_NE(adaptive, nullptr);
  EXPECT_EQ(adaptive->line, 12);
  EXPECT_NE(adaptive->message.find("true or false"), std::string::npos) << adaptive->message;
}

// The fabric: block and queue models (docs/config.md, "fabric").
TEST(ConfigTest, FabricBlockIsReadWithDurationsAndSizes) {
  LoadResult r = parse_config(R"(
models:
  - name: q
    type: queue
    upstream_model: tiny
fabric:
  nats_url: nats://10.0.0.1:4333
  tenants: [acme, globex]
  ack_wait: 10s
  max_deliver: 3
  dedupe_window: 5m
  heartbeat: 500ms
  max_message_bytes: 2MiB
  creds_file: fabric.creds
)", "/etc/llmpool/config.yaml", false);
  ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
  const FabricConfig& f = r.config.fabric;
  EXPECT_TRUE(f.enabled);
  EXPECT_EQ(f.nats_url, "nats://10.0.0.1:4333");
  EXPECT_EQ(f.tenants, (std::vector<std::string>{"acme", "globex"}));
  EXPECT_EQ(f.ack_wait_ms, 10000);
  EXPECT_EQ(f.max_deliver, 3);
  EXPECT_EQ(f.dedupe_window_ms, 300000);
  EXPECT_EQ(f.heartbeat_ms, 500);
  EXPECT_EQ(f.max_message_bytes, 2u << 20);
  EXPECT_EQ(f.creds_file, "/etc/llmpool/fabric.creds");
  EXPECT_EQ(r.config.models[0].upstream_model, "tiny");
}

TEST(ConfigTest, FabricValuesAndQueueModelsAreCheckedWithPositions) {
  LoadResult r = parse_config(R"(
models:
  - name: q
    type: queue
    base_url: http://x/v1
fabric:
  nats_url: http://x
  tenants: ["Bad.Tenant"]
  ack_wait: 1ms
  max_deliver: 0
  max_message_bytes: 1TiB
  user_env: "not a var"
  worker_id: "a b"
  colour: blue
)", "c.yaml", false);
  for (const char* field : {"models[0].base_url", "fabric.nats_url", "fabric.tenants[0]", "fabric.ack_wait",
                            "fabric.max_deliver", "fabric.max_message_bytes", "fabric.user_env", "fabric.worker_id",
                            "fabric.colour"}) {
    const ConfigIssue* i = find_issue(r, field);
    ASSERT_NE(i, nullptr) << field;
    EXPECT_GT(i->line, 0) << field;
  }
  LoadResult no_fabric = parse_config("models:\n  - name: q\n    type: queue\n", "c.yaml", false);
  const ConfigIssue* i = find_issue(no_fabric, "models[0].type");
  ASSERT_NE(i, nullptr);
  EXPECT_NE(i->message.find("fabric"), std::string::npos);
  EXPECT_EQ(i->line, 3);
}

TEST(ConfigTest, ShippedFabricConfigsAreValidApartFromModelFiles) {
  for (const char* name : {"fabric-api.yaml", "fabric-worker.yaml"}) {
    std::string path = std::string(LLMPOOL_SOURCE_DIR) + "/configs/" + name;
    LoadResult r = load_config(path, false);
    EXPECT_TRUE(r.ok()) << path << ": " << (r.ok() ? "" : r.issues.front().to_string());
    EXPECT_TRUE(r.config.fabric.enabled) << path;
  }
}

}  // namespace
}  // namespace llmpool::config
