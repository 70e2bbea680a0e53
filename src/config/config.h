// llmpool's configuration: one YAML file, loaded and validated in full.
//
// load_config() parses the file and checks every field, collecting every
// problem (not only the first) as a ConfigIssue with file:line:column and the
// field's path ("models[1].context"). Unknown fields are problems too, so a
// typo never passes silently. The result is a plain value; thread-compatible.
//
// The schema is documented field by field in docs/config.md; keep the two in
// step. Relative model paths are resolved against the config file's folder.
// A `defaults:` section gives values to every model that does not set them.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace llmpool::config {

struct ServerConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  int32_t io_threads = 2;                 // Asio threads for HTTP I/O
  int64_t max_body_bytes = 8 * 1024 * 1024;
  int32_t shutdown_grace_ms = 10000;      // drain time for in-flight work
  int32_t config_poll_ms = 1000;          // how often serve checks the config file; 0: only on SIGHUP
  // Limits of the HTTP server (src/api/http_server.h says what each does).
  int32_t max_connections = 1024;         // open client connections; more get 503 and are closed
  int32_t max_header_bytes = 65536;       // request line and headers; larger get 431
  int32_t header_timeout_ms = 10000;      // a request's headers must arrive within this
  int32_t idle_timeout_ms = 60000;        // keep-alive: longest wait for the next request
  int32_t body_timeout_ms = 20000;        // a body may take this long, plus 1 s per body_min_rate bytes
  int32_t body_min_rate = 1024;           // bytes/s a slow body must keep up; 0: body_timeout_ms is all

  bool operator==(const ServerConfig&) const = default;
};

// The model pool: how many models may be loaded at once and how much memory
// they may take (see src/pool/model_pool.h).
struct PoolConfig {
  uint64_t memory_budget_bytes = 0;       // 0: unlimited
  int32_t max_loaded_models = 0;          // 0: unlimited
  int32_t load_timeout_ms = 120000;       // how long a request waits for a loading model
  int32_t watchdog_free_memory_percent = 20;  // evict idle models under this much free RAM; 0: off
  int32_t watchdog_interval_ms = 5000;

  bool operator==(const PoolConfig&) const = default;
};

// How a model spends effort on thinking (router/effort.h ThinkingProfile).
struct ThinkingConfig {
  bool supported = false;                 // the model has a thinking block the engine can budget
  int32_t min_tokens = 256;               // budget at the lowest effort that thinks
  int32_t max_tokens = 8192;              // budget at effort 1

  bool operator==(const ThinkingConfig&) const = default;
};

// Speculative decoding for a local model (`draft:`): a draft model of the
// same vocabulary, or prompt lookup (`ngram`) without one.
struct DraftConfig {
  std::string model;        // a local model's name, or a GGUF path; "" for none
  std::string path;         // the draft's GGUF file, resolved from `model` at load
  int32_t ngram = 0;        // > 0 (no model): prompt lookup matching up to this many tokens
  int32_t max_tokens = 16;  // drafted tokens per round, at most
  int32_t min_tokens = 0;   // a shorter draft is not verified
  double p_min = 0.75;      // the draft model stops at a token it is less sure of
  bool adaptive = true;     // speculate only on the steps where it measured faster; false: every step

  bool operator==(const DraftConfig&) const = default;
};

// keep_alive_ms value meaning "never unload when idle".
inline constexpr int64_t kKeepAliveForever = -1;

struct ModelConfig {
  std::string name;
  std::vector<std::string> aliases;
  std::string type = "local";             // provider type: "local", "openai", "ollama"
  std::string path;                       // local: GGUF file (absolute after load)
  // Remote providers ("openai": any OpenAI-compatible server; "ollama").
  std::string base_url;                   // e.g. http://127.0.0.1:8000/v1 or http://127.0.0.1:11434
  std::string upstream_model;             // the model's name upstream; set to `name` when not given
  std::string api_key_env;                // environment variable holding the API key (never the key)
  std::string ca_file;                    // https: PEM file of CAs to trust instead of the system store
  bool tls_insecure_skip_verify = false;  // https: accept any certificate (test rigs only)
  int32_t connect_timeout_ms = 5000;
  int32_t read_timeout_ms = 120000;       // longest silence while waiting for bytes
  int32_t max_concurrent = 0;             // requests in flight at once; 0: unlimited (local: parallel)
  int32_t context = 4096;                 // context window in tokens, per request
  int32_t parallel = 4;                   // local: sequences decoded together
  int32_t batch = 512;                    // local: per-step token budget
  int32_t prefill_chunk = 0;              // local: prompt tokens per step while others generate; 0: batch
  int32_t top_k = 40;                     // local: top_k of requests that set none (llama-server's); 0: off
  double min_p = 0.05;                    // local: min_p of requests that set none (llama-server's); 0: off
  bool kv_unified = false;                // local: one KV cache for all sequences instead of one each
  bool repack = true;                     // local: weights may use the CPU's extra layouts (AMX, repacked)
  int32_t prompt_cache_mb = -1;           // local: host memory for sequences the prefix cache overwrites; 0: off, -1: the KV cache's size
  std::string kv_type = "f16";            // local: KV cache element type, f16 or q8_0
  int32_t threads = 0;                    // 0: number of cores
  int32_t max_queue = 64;                 // waiting requests before 429
  int32_t deadline_ms = 0;                // > 0: a request ends this long after it arrives (step cutoff)
  int32_t priority = 0;                   // -1000..1000; lower is evicted first under memory pressure
  int64_t keep_alive_ms = 300000;         // idle time before unloading; 0: at once; kKeepAliveForever
  bool pinned = false;                    // never evicted or unloaded by the pool once loaded
  bool warm = false;                      // loaded at start (and on reload), never unloaded when idle
  std::vector<std::string> capabilities;  // general, code, reasoning, fast, embedding, safety, vision, tools
  ThinkingConfig thinking;                // effort regulation's thinking budget
  DraftConfig draft;                      // local: speculative decoding
  int line = 0;                           // where it is defined, for messages

  bool operator==(const ModelConfig&) const = default;
  bool is_remote() const { return type != "local"; }
};

// True when `a` and `b` configure the same model the same way (everything
// but where it is written in the file): a reload keeps such a model loaded.
bool same_settings(const ModelConfig& a, const ModelConfig& b);

// The router (docs/routing.md): plain mirrors of the router, qos and
// ensemble option structs, so that config depends on none of them. The
// router service converts them (router/service.h). Times are milliseconds.
struct ClassifierConfig {
  double weight_length = 0.15, weight_code = 0.15, weight_reasoning = 0.35, weight_multi_step = 0.20,
         weight_technical = 0.15;
  double code_preferred = 0.25, code_required = 0.5, reasoning_preferred = 0.3,
         reasoning_required_complexity = 0.5, fast_below = 0.15;
  bool tools_required = false;
  int32_t length_saturation_tokens = 2048;
  int32_t max_scan_bytes = 16384;
  bool operator==(const ClassifierConfig&) const = default;
};

struct ScoreConfig {
  double weight_latency = 0.35, weight_queue = 0.25, weight_fit = 0.15, weight_health = 0.15,
         weight_feedback = 0.10;
  double latency_ref_ms = 2000, ewma_share = 0.5, unknown_latency_ms = 2000, half_open_health = 0.5;
  bool operator==(const ScoreConfig&) const = default;
};

struct InstancesConfig {
  double ewma_alpha = 0.2;
  int32_t window_size = 128;
  int64_t max_sample_age_ms = 300000;
  int32_t min_samples = 5;
  double slow_p95_ms = 0;       // 0: no slow exclusion
  double recover_ratio = 0.8;
  double quality_prior = 0.5;
  double quality_alpha = 0.05;
  double success_alpha = 0.1;
  bool operator==(const InstancesConfig&) const = default;
};

struct BreakerConfig {
  int32_t failure_threshold = 5;
  int64_t cooldown_ms = 30000;
  bool operator==(const BreakerConfig&) const = default;
};

struct RetryBudgetConfig {
  double retry_ratio = 0.2;
  double min_retries_per_second = 1.0;
  int64_t window_ms = 10000;
  bool operator==(const RetryBudgetConfig&) const = default;
};

struct AdmissionConfig {
  int64_t max_active = 256;     // generations at once; 0: no limit
  int32_t retry_after_seconds = 1;
  bool operator==(const AdmissionConfig&) const = default;
};

struct EffortConfig {
  double hint_weight = 0.7;
  double minimal_value = 0.05, low_value = 0.2, medium_value = 0.5, high_value = 0.9;
  double low_tier_below = 0.3, medium_tier_below = 0.6;
  int32_t low_tier_tokens = 2048, medium_tier_tokens = 4096, high_tier_tokens = 8192;
  double temperature_min = 0.3, temperature_max = 0.9;
  double thinking_above = 0.4;
  bool operator==(const EffortConfig&) const = default;
};

// A route group: `model: <name>` routes among `models`; `fallbacks` are
// tried after them, in order, when they fail or are refused.
struct RouteGroupConfig {
  std::string name;
  std::vector<std::string> models;
  std::vector<std::string> fallbacks;
  std::string strategy = "fastest";       // fastest, voting, weighted, consensus, judge
  int32_t k = 0;                          // answers to gather; 0: one per model
  std::string judge;                      // judge model (strategy judge)
  double consensus_threshold = 0.6;
  int32_t hedge_max_parallel = 2;         // fastest: attempts at once (1: no hedging)
  int64_t hedge_default_delay_ms = 0;     // hedge delay without a p95 estimate; 0: none
  int line = 0;
  bool operator==(const RouteGroupConfig&) const = default;
};

struct CanaryArmConfig {
  std::string name;
  std::string model;
  double percent = 0;
  bool operator==(const CanaryArmConfig&) const = default;
};

struct CanaryRouteConfig {
  std::string route;                      // a route group name or a classifier tag (code, reasoning, ...)
  std::string baseline_model;
  std::vector<CanaryArmConfig> arms;
  bool operator==(const CanaryRouteConfig&) const = default;
};

struct CanaryConfig {
  int64_t min_samples = 50;
  double max_helpful_drop = 0.10;
  std::vector<CanaryRouteConfig> routes;
  bool operator==(const CanaryConfig&) const = default;
};

struct RoutingConfig {
  ClassifierConfig classifier;
  ScoreConfig score;
  InstancesConfig instances;
  BreakerConfig breaker;
  RetryBudgetConfig retry_budget;
  AdmissionConfig admission;
  EffortConfig effort;
  std::vector<RouteGroupConfig> groups;
  std::string judge_prompt;               // judge template file (relative: to the config file); "": built-in
  CanaryConfig canary;
  std::string decision_log;               // JSON-lines file; empty: off
  uint64_t decision_log_max_bytes = 64ull << 20;  // rotate past this size; 0: never
  int32_t decision_log_keep = 3;          // rotated files kept (path.1 newest .. path.keep)
  bool operator==(const RoutingConfig&) const = default;

  const RouteGroupConfig* find_group(const std::string& name) const;
};

// The route group name that always exists: `model: "auto"` routes among its
// models, or among every model when no group of that name is configured.
inline constexpr const char* kAutoRoute = "auto";

// Tenancy (docs/tenancy.md): who may call the server and with what limits.
// Plain values, like the routing mirrors above: config depends on nothing
// of tenancy; the CLI turns these into tenancy's types.
struct JwtAuthConfig {
  std::string algorithm = "HS256";        // HS256, RS256 or ES256
  std::string hs256_secret_env;           // HS256: the variable that holds the secret
  std::string public_key_file;            // RS256/ES256: one PEM public key (absolute after load) ...
  std::string jwks_file;                  // ... or a JWKS file (absolute after load)
  std::string issuer;                     // "": `iss` not checked
  std::string audience;                   // "": `aud` not checked
  std::string tenant_claim = "tenant";
  int32_t leeway_s = 30;                  // 0..60
  bool operator==(const JwtAuthConfig&) const = default;
  // True when a JWT key source is configured (JWTs are accepted).
  bool enabled() const { return !hs256_secret_env.empty() || !public_key_file.empty() || !jwks_file.empty(); }
};

struct AuthConfig {
  bool enabled = false;                   // every route but /health needs credentials
  JwtAuthConfig jwt;
  bool hmac_enabled = false;              // accept HMAC-signed requests (X-Llmpool-*)
  bool allow_unauthenticated_non_loopback = false;  // serve with auth off on a non-loopback host
  bool operator==(const AuthConfig&) const = default;
};

// The rate limiter (ratelimit::make_limiter): "" / "local" in-process, or
// redis://host:port. `url_env` names a variable holding the URL instead
// (a URL with a password stays out of the file); it wins when set.
struct RateLimitConfig {
  std::string url;
  std::string url_env;
  bool fail_open = false;                 // Redis down: admit (true) or answer 503 (false)
  int64_t lease_ttl_ms = 30000;           // a concurrency lease of a dead instance expires after this
  int32_t pool_size = 4;                  // Redis connections, and threads that check HMAC signatures (1..64)
  int64_t allotment_ms = 0;               // Redis: 0 checks each request there; > 0 admits from slices (0..10000)
  bool operator==(const RateLimitConfig&) const = default;
};

// A tenant declared in the YAML. These are read-only for the CLI and the
// admin API and win over a database tenant of the same name (docs/tenancy.md).
struct TenantConfig {
  std::string name;                       // [a-z0-9_-]{1,64}
  std::string plan;
  std::string throughput;                 // seed 000's quotas
  int64_t storage_days = 0;
  int64_t max_consumers = 0;
  std::vector<std::string> allowed_models;  // "*" : all
  std::vector<std::string> route_groups;    // "*" : all
  int32_t max_priority = 0;
  int64_t requests_per_minute = 0;        // 0: no limit
  int64_t tokens_per_minute = 0;
  int64_t max_concurrent_requests = 0;
  int64_t daily_token_budget = 0;
  int64_t monthly_token_budget = 0;
  int line = 0;
  bool operator==(const TenantConfig&) const = default;
};

// The JetStream fabric (docs/fabric.md): where NATS is, how its streams and
// consumers are set up, and what the workers and API nodes publish.
struct FabricConfig {
  bool enabled = false;                   // a `fabric:` block is present
  std::string nats_url = "nats://127.0.0.1:4222";  // `--nats-url` overrides it
  std::string creds_file;                 // NATS .creds file (relative: to the config file)
  std::string user_env = "LLMPOOL_NATS_USER";          // environment variables holding
  std::string password_env = "LLMPOOL_NATS_PASSWORD";  // a user and password (never the values)
  std::vector<std::string> tenants = {"default"};      // whose subjects a worker serves / a node watches
  int64_t ack_wait_ms = 30000;            // a job not acked (nor marked in progress) this long is redelivered
  int32_t max_deliver = 5;                // deliveries before a job goes to the dead-letter stream
  int64_t dedupe_window_ms = 120000;      // Nats-Msg-Id duplicate window of the streams
  int32_t max_ack_pending = 1024;         // jobs of one consumer out at once, fleet-wide
  int64_t heartbeat_ms = 2000;            // worker heartbeat period
  int64_t request_timeout_ms = 600000;    // queue models: longest wait for a result (a model's deadline_ms wins)
  int64_t nak_delay_ms = 1000;            // redelivery delay after a transient failure
  uint64_t max_message_bytes = 1u << 20;  // largest job, result or event read
  int32_t slots = 0;                      // worker: jobs per model at once; 0: the model's max_concurrent or parallel
  std::string worker_id;                  // worker: "" = <hostname>-<pid>
  int64_t results_max_age_ms = 7 * 24 * 3600 * 1000LL;  // how long results stay in the results stream
  int line = 0;
  bool operator==(const FabricConfig&) const = default;
};

// The Files and Batch APIs (docs/batch.md); on when `data_dir` is set.
struct BatchConfig {
  uint64_t max_file_bytes = 8ull << 20;   // one upload (server.max_body_bytes bounds it too)
  int32_t max_lines = 50000;              // requests in one input file
  int32_t max_line_bytes = 1 << 20;       // one line of an input file
  int32_t max_concurrent = 4;             // lines run at once without a fabric
  int32_t cancel_grace_ms = 60000;        // a cancel waits this long for running lines

  bool operator==(const BatchConfig&) const = default;
};

struct Config {
  std::string path;                       // the file it came from
  std::string log_level = "info";
  ServerConfig server;
  PoolConfig pool;
  std::vector<ModelConfig> models;
  RoutingConfig routing;
  FabricConfig fabric;
  std::string data_dir;                   // state (batch.db, llmpool.db); relative: to the config file; "": none
  BatchConfig batch;
  // Tenancy: authentication, YAML tenants, the rate limiter, and an
  // optional separate listener for /metrics ("host:port"; "": none).
  AuthConfig auth;
  std::vector<TenantConfig> tenants;
  std::string metrics_listen;
  RateLimitConfig rate_limits;            // used with auth on

  // The model with this name or alias, or nullptr.
  const ModelConfig* find_model(const std::string& name) const;
};

// True for 127.0.0.0/8 (dotted quad), ::1 and "localhost".
bool is_loopback_host(const std::string& host);
// Splits "host:port" ("[::1]:9100" for IPv6); false unless the port is 1..65535.
bool split_host_port(const std::string& text, std::string* host, uint16_t* port);
// InvalidArgument (param server.host) when the server would listen on a
// non-loopback host with auth off and allow_unauthenticated_non_loopback
// unset. Not a load_config() issue (a file may be served with --host):
// `serve` refuses to start and check-config reports it.
Status check_exposure(const Config& config);

struct ConfigIssue {
  std::string file;
  int line = 0;     // 1-based; 0 when unknown
  int column = 0;   // 1-based; 0 when unknown
  std::string field;  // "models[0].path"
  std::string message;

  // "file:line:column: field: message"
  std::string to_string() const;
};

struct LoadResult {
  Config config;
  std::vector<ConfigIssue> issues;  // empty when the config is valid
  bool ok() const { return issues.empty(); }
};

// Reads and validates `path`. Never throws; a missing or unparsable file is
// reported as an issue. `check_files` also checks that local model files exist.
LoadResult load_config(const std::string& path, bool check_files = true);

// Same, from text (for tests); `path` only names the source in messages and
// anchors relative paths.
LoadResult parse_config(const std::string& text, const std::string& path, bool check_files = true);

// The capability tags a model may declare.
const std::vector<std::string>& known_capabilities();

// "5m", "30s", "1h30m", "250ms", "1.5h"; a bare number is seconds; "0" is
// zero; "-1", "forever" and "never" give kKeepAliveForever. nullopt if
// malformed or past 100 days.
std::optional<int64_t> parse_duration_ms(std::string_view text);
// The inverse, for reports: "5m", "1h30m", "250ms", "0", "forever".
std::string format_duration_ms(int64_t ms);

// "4GiB", "512MiB", "1.5G", "2000000", "64 KB" (K/M/G/T and KB/MB/... are
// powers of 1000, KiB/MiB/... of 1024; B optional). nullopt if malformed or
// past 2^60.
std::optional<uint64_t> parse_size_bytes(std::string_view text);

}  // namespace llmpool::config
