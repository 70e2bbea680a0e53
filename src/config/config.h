// llmpool's configuration: one YAML file, loaded and validated in full.
//
// load_config() parses the file and checks every field, collecting every
// problem (not only the first) as a ConfigIssue with file:line:column and the
// field's path ("models[1].context"). Unknown fields are problems too, so a
// typo never passes silently. The result is a plain value; thread-compatible.
//
// The schema is documented field by field in docs/config.md; keep the two in
// step. Relative model paths are resolved against the config file's folder.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"

namespace llmpool::config {

struct ServerConfig {
  std::string host = "127.0.0.1";
  uint16_t port = 8080;
  int32_t io_threads = 2;                 // Asio threads for HTTP I/O
  int64_t max_body_bytes = 8 * 1024 * 1024;
  int32_t shutdown_grace_ms = 10000;      // drain time for in-flight work
};

struct ModelConfig {
  std::string name;
  std::vector<std::string> aliases;
  std::string type = "local";             // provider type: "local", "openai", "ollama"
  std::string path;                       // local: GGUF file (absolute after load)
  // Remote providers ("openai": any OpenAI-compatible server; "ollama").
  std::string base_url;                   // e.g. http://127.0.0.1:8000/v1 or http://127.0.0.1:11434
  std::string upstream_model;             // the model's name upstream; default: `name`
  std::string api_key_env;                // environment variable holding the API key (never the key)
  int32_t connect_timeout_ms = 5000;
  int32_t read_timeout_ms = 120000;       // longest silence while waiting for bytes
  int32_t max_concurrent = 0;             // requests in flight at once; 0: unlimited (local: parallel)
  int32_t context = 4096;                 // context window in tokens, per request
  int32_t parallel = 4;                   // local: sequences decoded together
  int32_t batch = 512;                    // local: per-step token budget
  int32_t threads = 0;                    // 0: number of cores
  int32_t max_queue = 64;                 // waiting requests before 429
  int32_t deadline_ms = 0;                // > 0: a request ends this long after it arrives
  std::vector<std::string> capabilities;  // general, code, reasoning, fast, ...
  int line = 0;                           // where it is defined, for messages
};

struct Config {
  std::string path;                       // the file it came from
  std::string log_level = "info";
  ServerConfig server;
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

}  // namespace llmpool::config
