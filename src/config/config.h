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
  int32_t connect_timeout_ms = 5000;
  int32_t read_timeout_ms = 120000;       // longest silence while waiting for bytes
  int32_t max_concurrent = 0;             // requests in flight at once; 0: unlimited (local: parallel)
  int32_t context = 4096;                 // context window in tokens, per request
  int32_t parallel = 4;                   // local: sequences decoded together
  int32_t batch = 512;                    // local: per-step token budget
  int32_t prefill_chunk = 0;              // local: prompt tokens per step while others generate; 0: batch
  bool kv_unified = false;                // local: one KV cache for all sequences instead of one each
  int32_t threads = 0;                    // 0: number of cores
  int32_t max_queue = 64;                 // waiting requests before 429
  int32_t deadline_ms = 0;                // > 0: a request ends this long after it arrives (step cutoff)
  int32_t priority = 0;                   // -1000..1000; lower is evicted first under memory pressure
  int64_t keep_alive_ms = 300000;         // idle time before unloading; 0: at once; kKeepAliveForever
  bool pinned = false;                    // never evicted or unloaded by the pool once loaded
  bool warm = false;                      // loaded at start (and on reload), never unloaded when idle
  std::vector<std::string> capabilities;  // general, code, reasoning, fast, embedding, safety, vision
  int line = 0;                           // where it is defined, for messages

  bool operator==(const ModelConfig&) const = default;
  bool is_remote() const { return type != "local"; }
};

// True when `a` and `b` configure the same model the same way (everything
// but where it is written in the file): a reload keeps such a model loaded.
bool same_settings(const ModelConfig& a, const ModelConfig& b);

struct Config {
  std::string path;                       // the file it came from
  std::string log_level = "info";
  ServerConfig server;
  PoolConfig pool;
  std::vector<ModelConfig> models;
};

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
