#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
#include <tuple>
#include <unordered_set>

namespace llmpool::config {
namespace {

namespace fs = std::filesystem;

// Walks the YAML tree, reading typed fields and recording every problem
// with the position of the node it is about.
class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  void issue(const YAML::Node& node, const std::string& field, const std::string& message) {
    ConfigIssue i;
    i.file = file_;
    if (node.IsDefined() && node.Mark().line >= 0) {
      i.line = node.Mark().line + 1;
      i.column = node.Mark().column + 1;
    }
    i.field = field;
    i.message = message;
    issues_.push_back(std::move(i));
  }

  // Reports keys of `map` not in `known`.
  void check_keys(const YAML::Node& map, const std::string& prefix, const std::vector<std::string>& known) {
    std::unordered_set<std::string> k(known.begin(), known.end());
    for (const auto& kv : map) {
      std::string key = kv.first.Scalar();
      if (!k.count(key)) {
        std::string allowed;
        for (const auto& s : known) allowed += (allowed.empty() ? "" : ", ") + s;
        issue(kv.first, join(prefix, key), "unknown field (known: " + allowed + ")");
      }
    }
  }

  bool map_at(const YAML::Node& node, const std::string& field) {
    if (node.IsMap()) return true;
    issue(node, field, "must be a mapping");
    return false;
  }

  // The scalar at parent[key], or an undefined node (absent, null, or not a
  // scalar — the latter reported as `what`).
  std::optional<YAML::Node> scalar(const YAML::Node& parent, const char* key, const std::string& prefix,
                                   const char* what) {
    YAML::Node n = parent[key];
    if (!n.IsDefined() || n.IsNull()) return std::nullopt;
    if (!n.IsScalar()) {
      issue(n, join(prefix, key), std::string("must be ") + what);
      return std::nullopt;
    }
    return n;
  }

  void read_string(const YAML::Node& parent, const char* key, const std::string& prefix, std::string* out,
                   size_t max_len = 4096) {
    auto n = scalar(parent, key, prefix, "a string");
    if (!n) return;
    if (n->Scalar().size() > max_len)
      return issue(*n, join(prefix, key), "longer than " + std::to_string(max_len) + " characters");
    *out = n->Scalar();
  }

  template <typename Int>
  void read_int(const YAML::Node& parent, const char* key, const std::string& prefix, Int* out, int64_t lo,
                int64_t hi) {
    auto n = scalar(parent, key, prefix, "an integer");
    if (!n) return;
    std::string field = join(prefix, key);
    int64_t v = 0;
    try {
      size_t used = 0;
      v = std::stoll(n->Scalar(), &used, 10);
      if (used != n->Scalar().size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      return issue(*n, field, "must be an integer, got '" + n->Scalar() + "'");
    }
    if (v < lo || v > hi)
      return issue(*n, field, "must be between " + std::to_string(lo) + " and " + std::to_string(hi) + ", got " +
                                  std::to_string(v));
    *out = static_cast<Int>(v);
  }

  void read_double(const YAML::Node& parent, const char* key, const std::string& prefix, double* out, double lo,
                   double hi) {
    auto n = scalar(parent, key, prefix, "a number");
    if (!n) return;
    std::string field = join(prefix, key);
    double v = 0;
    try {
      size_t used = 0;
      v = std::stod(n->Scalar(), &used);
      if (used != n->Scalar().size() || !std::isfinite(v)) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      return issue(*n, field, "must be a number, got '" + n->Scalar() + "'");
    }
    if (v < lo || v > hi) {
      std::ostringstream os;
      os << "must be between " << lo << " and " << hi << ", got " << n->Scalar();
      return issue(*n, field, os.str());
    }
    *out = v;
  }

  // The mapping at parent[key] (checked against `known`), or nullopt when
  // absent or null; a non-mapping is reported.
  std::optional<YAML::Node> section(const YAML::Node& parent, const char* key, const std::string& prefix,
                                    const std::vector<std::string>& known) {
    YAML::Node n = parent[key];
    if (!n.IsDefined() || n.IsNull()) return std::nullopt;
    std::string field = join(prefix, key);
    if (!map_at(n, field)) return std::nullopt;
    check_keys(n, field, known);
    return n;
  }

  void read_bool(const YAML::Node& parent, const char* key, const std::string& prefix, bool* out) {
    auto n = scalar(parent, key, prefix, "true or false");
    if (!n) return;
    bool v = false;
    if (!YAML::convert<bool>::decode(*n, v))
      return issue(*n, join(prefix, key), "must be true or false, got '" + n->Scalar() + "'");
    *out = v;
  }

  void read_duration(const YAML::Node& parent, const char* key, const std::string& prefix, int64_t* out) {
    auto n = scalar(parent, key, prefix, "a duration");
    if (!n) return;
    auto v = parse_duration_ms(n->Scalar());
    if (!v)
      return issue(*n, join(prefix, key),
                   "must be a duration such as 30s, 5m, 1h30m or 250ms (a bare number is seconds), 0 to unload "
                   "as soon as idle, or -1 / forever to never unload; got '" + n->Scalar() + "'");
    *out = *v;
  }

  void read_size(const YAML::Node& parent, const char* key, const std::string& prefix, uint64_t* out) {
    auto n = scalar(parent, key, prefix, "a size");
    if (!n) return;
    auto v = parse_size_bytes(n->Scalar());
    if (!v)
      return issue(*n, join(prefix, key),
                   "must be a size in bytes, optionally with a unit (512MiB, 4GiB, 8GB; 0 = unlimited), got '" +
                       n->Scalar() + "'");
    *out = *v;
  }

  void read_string_list(const YAML::Node& parent, const char* key, const std::string& prefix,
                        std::vector<std::string>* out, size_t max_len = 256) {
    YAML::Node n = parent[key];
    if (!n.IsDefined() || n.IsNull()) return;
    std::string field = join(prefix, key);
    if (!n.IsSequence()) return issue(n, field, "must be a list of strings");
    out->clear();
    for (size_t i = 0; i < n.size(); ++i) {
      if (!n[i].IsScalar() || n[i].Scalar().empty()) {
        issue(n[i], field + "[" + std::to_string(i) + "]", "must be a non-empty string");
        continue;
      }
      if (n[i].Scalar().size() > max_len) {
        issue(n[i], field + "[" + std::to_string(i) + "]", "longer than " + std::to_string(max_len) + " characters");
        continue;
      }
      out->push_back(n[i].Scalar());
    }
  }

  std::vector<ConfigIssue> take_issues() { return std::move(issues_); }
  const std::string& file() const { return file_; }

  static std::string join(const std::string& prefix, const std::string& key) {
    return prefix.empty() ? key : prefix + "." + key;
  }

 private:
  std::string file_;
  std::vector<ConfigIssue> issues_;
};

const std::vector<std::string> kTopKeys = {"log_level", "server",  "pool",     "defaults",       "models",
                                           "routing",   "tenants", "data_dir", "batch",          "auth",
                                           "metrics_listen", "rate_limits", "fabric"};
const std::vector<std::string> kServerKeys = {
    "host",           "port",          "io_threads",      "max_body_bytes",  "shutdown_grace_ms",
    "config_poll_ms", "max_connections", "max_header_bytes", "header_timeout_ms", "idle_timeout_ms",
    "body_timeout_ms", "body_min_rate"};
const std::vector<std::string> kPoolKeys = {"memory_budget", "max_loaded_models", "load_timeout_ms",
                                            "watchdog_free_memory_percent", "watchdog_interval_ms"};
// Fields a model may set; `defaults:` takes the same except those naming one model.
const std::vector<std::string> kModelKeys = {
    "name",     "aliases",       "type",         "path",      "base_url",     "upstream_model",
    "api_key_env", "ca_file", "tls_insecure_skip_verify", "connect_timeout_ms", "read_timeout_ms", "capabilities", "context", "parallel",
    "batch",    "threads",       "max_queue",    "deadline_ms", "max_concurrent", "priority",
    "keep_alive", "pinned",      "warm",         "prefill_chunk", "kv_unified", "repack", "prompt_cache_mb", "thinking", "kv_type", "top_k", "min_p",
    "draft"};
const std::set<std::string> kPerModelOnly = {"name", "aliases", "path", "upstream_model"};
const std::set<std::string> kLogLevels = {"trace", "debug", "info", "warn", "error", "off"};
const std::vector<std::string> kProviderTypes = {"local", "openai", "ollama", "queue"};
// "tools": the router's classifier asks for it on requests with tools.
const std::vector<std::string> kCapabilities = {"general",   "code",   "reasoning", "fast",
                                                "embedding", "safety", "vision",    "tools"};

std::vector<std::string> defaults_keys() {
  std::vector<std::string> out;
  for (const auto& k : kModelKeys)
    if (!kPerModelOnly.count(k)) out.push_back(k);
  return out;
}

std::string join_list(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out;
}

bool is_env_var_name(const std::string& s) {
  if (s.empty() || s.size() > 128) return false;
  if (!(std::isalpha(static_cast<unsigned char>(s[0])) || s[0] == '_')) return false;
  for (char c : s)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_')) return false;
  return true;
}

// Names travel in JSON and in URL paths (/api/models/{name}/load): printable,
// no whitespace.
bool is_model_name(const std::string& s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return false;
  return !s.empty();
}

void read_server(Reader& r, const YAML::Node& n, ServerConfig* s) {
  if (!r.map_at(n, "server")) return;
  r.check_keys(n, "server", kServerKeys);
  r.read_string(n, "host", "server", &s->host, 255);
  r.read_int(n, "port", "server", &s->port, 0, 65535);
  r.read_int(n, "io_threads", "server", &s->io_threads, 1, 256);
  r.read_int(n, "max_body_bytes", "server", &s->max_body_bytes, 1024, int64_t{1} << 30);
  r.read_int(n, "shutdown_grace_ms", "server", &s->shutdown_grace_ms, 0, 600000);
  r.read_int(n, "config_poll_ms", "server", &s->config_poll_ms, 0, 3600000);
  r.read_int(n, "max_connections", "server", &s->max_connections, 1, 1000000);
  r.read_int(n, "max_header_bytes", "server", &s->max_header_bytes, 1024, 1 << 20);
  r.read_int(n, "header_timeout_ms", "server", &s->header_timeout_ms, 10, 600000);
  r.read_int(n, "idle_timeout_ms", "server", &s->idle_timeout_ms, 10, 3600000);
  r.read_int(n, "body_timeout_ms", "server", &s->body_timeout_ms, 10, 3600000);
  r.read_int(n, "body_min_rate", "server", &s->body_min_rate, 0, 1 << 30);
}

// The `fabric:` block (docs/config.md, "fabric").
const std::vector<std::string> kFabricKeys = {
    "nats_url",   "creds_file",   "user_env",        "password_env", "tenants",    "ack_wait",
    "max_deliver", "dedupe_window", "max_ack_pending", "heartbeat",    "request_timeout", "nak_delay",
    "max_message_bytes", "slots", "worker_id", "results_max_age"};

void read_fabric(Reader& r, const YAML::Node& n, const fs::path& base, FabricConfig* f) {
  if (!r.map_at(n, "fabric")) return;
  r.check_keys(n, "fabric", kFabricKeys);
  f->enabled = true;
  f->line = n.Mark().line + 1;
  const std::string p = "fabric";
  r.read_string(n, "nats_url", p, &f->nats_url, 1024);
  if (f->nats_url.rfind("nats://", 0) != 0 && f->nats_url.rfind("tls://", 0) != 0)
    r.issue(n["nats_url"], "fabric.nats_url", "must start with nats:// or tls://, got '" + f->nats_url + "'");
  r.read_string(n, "creds_file", p, &f->creds_file, 4096);
  if (!f->creds_file.empty() && fs::path(f->creds_file).is_relative()) f->creds_file = (base / f->creds_file).string();
  r.read_string(n, "user_env", p, &f->user_env, 128);
  r.read_string(n, "password_env", p, &f->password_env, 128);
  for (const char* key : {"user_env", "password_env"}) {
    const std::string& v = std::string(key) == "user_env" ? f->user_env : f->password_env;
    if (!v.empty() && !is_env_var_name(v))
      r.issue(n[key], p + "." + key, "must be an environment variable name ([A-Za-z_][A-Za-z0-9_]*), got '" + v + "'");
  }
  r.read_string_list(n, "tenants", p, &f->tenants, 64);
  for (size_t i = 0; i < f->tenants.size(); ++i) {
    const std::string& t = f->tenants[i];
    bool ok = !t.empty();
    for (char c : t) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-');
    if (!ok)
      r.issue(n["tenants"][i], p + ".tenants[" + std::to_string(i) + "]",
              "must be 1-64 of [a-z0-9_-] (a NATS subject token), got '" + t + "'");
  }
  if (n["tenants"].IsDefined() && f->tenants.empty()) r.issue(n["tenants"], p + ".tenants", "must list at least one tenant");
  auto duration = [&](const char* key, int64_t* out, int64_t lo, int64_t hi) {
    int64_t v = *out;
    r.read_duration(n, key, p, &v);
    if (v < lo || v > hi) {
      r.issue(n[key], p + "." + key, "must be between " + format_duration_ms(lo) + " and " + format_duration_ms(hi));
      return;
    }
    *out = v;
  };
  duration("ack_wait", &f->ack_wait_ms, 1000, 3600000);
  duration("dedupe_window", &f->dedupe_window_ms, 1000, 7 * 24 * 3600000LL);
  duration("heartbeat", &f->heartbeat_ms, 100, 60000);
  duration("request_timeout", &f->request_timeout_ms, 100, 24 * 3600000LL);
  duration("nak_delay", &f->nak_delay_ms, 0, 3600000);
  duration("results_max_age", &f->results_max_age_ms, 60000, 365 * 24 * 3600000LL);
  r.read_int(n, "max_deliver", p, &f->max_deliver, 1, 1000);
  r.read_int(n, "max_ack_pending", p, &f->max_ack_pending, 1, 1000000);
  r.read_int(n, "slots", p, &f->slots, 0, 4096);
  r.read_string(n, "worker_id", p, &f->worker_id, 64);
  if (!f->worker_id.empty()) {
    bool ok = true;
    for (char c : f->worker_id) ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-');
    if (!ok) r.issue(n["worker_id"], p + ".worker_id", "must be [A-Za-z0-9_-], got '" + f->worker_id + "'");
  }
  uint64_t bytes = f->max_message_bytes;
  r.read_size(n, "max_message_bytes", p, &bytes);
  if (bytes < 1024 || bytes > (64u << 20))
    r.issue(n["max_message_bytes"], p + ".max_message_bytes", "must be between 1KiB and 64MiB");
  else
    f->max_message_bytes = bytes;
}

const std::vector<std::string> kBatchKeys = {"max_file_bytes", "max_lines", "max_line_bytes", "max_concurrent",
                                             "cancel_grace_ms"};

void read_batch(Reader& r, const YAML::Node& n, BatchConfig* b) {
  if (!r.map_at(n, "batch")) return;
  r.check_keys(n, "batch", kBatchKeys);
  r.read_size(n, "max_file_bytes", "batch", &b->max_file_bytes);
  if (b->max_file_bytes == 0 || b->max_file_bytes > (1ull << 30))
    r.issue(n["max_file_bytes"], "batch.max_file_bytes", "must be between 1 byte and 1GiB");
  r.read_int(n, "max_lines", "batch", &b->max_lines, 1, 1000000);
  r.read_int(n, "max_line_bytes", "batch", &b->max_line_bytes, 64, 64 << 20);
  r.read_int(n, "max_concurrent", "batch", &b->max_concurrent, 1, 4096);
  r.read_int(n, "cancel_grace_ms", "batch", &b->cancel_grace_ms, 0, 86400000);
}

void read_pool(Reader& r, const YAML::Node& n, PoolConfig* p) {
  if (!r.map_at(n, "pool")) return;
  r.check_keys(n, "pool", kPoolKeys);
  r.read_size(n, "memory_budget", "pool", &p->memory_budget_bytes);
  r.read_int(n, "max_loaded_models", "pool", &p->max_loaded_models, 0, 4096);
  r.read_int(n, "load_timeout_ms", "pool", &p->load_timeout_ms, 1, 3600000);
  r.read_int(n, "watchdog_free_memory_percent", "pool", &p->watchdog_free_memory_percent, 0, 99);
  r.read_int(n, "watchdog_interval_ms", "pool", &p->watchdog_interval_ms, 100, 3600000);
}

// Reads the fields present in `n` over `m` (which holds the defaults). Used
// for `defaults:` and for each model; checks that need the merged result
// (required fields, type-specific ones) are in finish_model().
void read_model_fields(Reader& r, const YAML::Node& n, const std::string& prefix, ModelConfig* m) {
  r.read_string(n, "name", prefix, &m->name, 256);
  r.read_string_list(n, "aliases", prefix, &m->aliases);
  r.read_string(n, "type", prefix, &m->type, 64);
  r.read_string(n, "path", prefix, &m->path);
  r.read_string(n, "base_url", prefix, &m->base_url, 2048);
  r.read_string(n, "upstream_model", prefix, &m->upstream_model, 256);
  r.read_string(n, "api_key_env", prefix, &m->api_key_env, 128);
  r.read_string(n, "ca_file", prefix, &m->ca_file);
  r.read_bool(n, "tls_insecure_skip_verify", prefix, &m->tls_insecure_skip_verify);
  r.read_int(n, "connect_timeout_ms", prefix, &m->connect_timeout_ms, 1, 600000);
  r.read_int(n, "read_timeout_ms", prefix, &m->read_timeout_ms, 1, 86400000);
  r.read_int(n, "context", prefix, &m->context, 64, 1 << 24);
  r.read_int(n, "parallel", prefix, &m->parallel, 1, 256);
  r.read_int(n, "batch", prefix, &m->batch, 1, 1 << 16);
  r.read_int(n, "prefill_chunk", prefix, &m->prefill_chunk, 0, 1 << 16);
  r.read_int(n, "top_k", prefix, &m->top_k, 0, 1 << 20);
  r.read_double(n, "min_p", prefix, &m->min_p, 0.0, 1.0);
  r.read_bool(n, "kv_unified", prefix, &m->kv_unified);
  r.read_bool(n, "repack", prefix, &m->repack);
  r.read_int(n, "prompt_cache_mb", prefix, &m->prompt_cache_mb, -1, 1 << 20);
  r.read_string(n, "kv_type", prefix, &m->kv_type, 16);
  if (YAML::Node k = n["kv_type"]; k.IsDefined() && k.IsScalar() && m->kv_type != "f16" && m->kv_type != "q8_0")
    r.issue(k, prefix + ".kv_type", "must be f16 or q8_0");
  r.read_int(n, "threads", prefix, &m->threads, 0, 1024);
  r.read_int(n, "max_queue", prefix, &m->max_queue, 0, 1 << 20);
  r.read_int(n, "deadline_ms", prefix, &m->deadline_ms, 0, 86400000);
  r.read_int(n, "max_concurrent", prefix, &m->max_concurrent, 0, 100000);
  r.read_int(n, "priority", prefix, &m->priority, -1000, 1000);
  r.read_duration(n, "keep_alive", prefix, &m->keep_alive_ms);
  r.read_bool(n, "pinned", prefix, &m->pinned);
  r.read_bool(n, "warm", prefix, &m->warm);
  r.read_string_list(n, "capabilities", prefix, &m->capabilities, 64);
  if (auto t = r.section(n, "thinking", prefix, {"supported", "min_tokens", "max_tokens"})) {
    std::string tp = Reader::join(prefix, "thinking");
    r.read_bool(*t, "supported", tp, &m->thinking.supported);
    r.read_int(*t, "min_tokens", tp, &m->thinking.min_tokens, 0, 1 << 20);
    r.read_int(*t, "max_tokens", tp, &m->thinking.max_tokens, 0, 1 << 20);
    if (m->thinking.min_tokens > m->thinking.max_tokens)
      r.issue(*t, tp + ".min_tokens", "must not be above max_tokens (" + std::to_string(m->thinking.max_tokens) + ")");
  }
  if (auto d = r.section(n, "draft", prefix, {"model", "ngram", "max_tokens", "min_tokens", "p_min", "adaptive"})) {
    std::string dp = Reader::join(prefix, "draft");
    r.read_string(*d, "model", dp, &m->draft.model, 4096);
    r.read_int(*d, "ngram", dp, &m->draft.ngram, 0, 64);
    r.read_int(*d, "max_tokens", dp, &m->draft.max_tokens, 1, 256);
    r.read_int(*d, "min_tokens", dp, &m->draft.min_tokens, 0, 256);
    r.read_double(*d, "p_min", dp, &m->draft.p_min, 0.0, 1.0);
    r.read_bool(*d, "adaptive", dp, &m->draft.adaptive);
    if (m->draft.min_tokens > m->draft.max_tokens)
      r.issue(*d, dp + ".min_tokens", "must not be above max_tokens (" + std::to_string(m->draft.max_tokens) + ")");
    if (!m->draft.model.empty() && m->draft.ngram > 0)
      r.issue(*d, dp + ".ngram", "drafts without a model: leave out either `model` or `ngram`");
  }

  // Checks of single values, reported where the value is written.
  if (YAML::Node t = n["type"]; t.IsDefined() && t.IsScalar()) {
    if (std::find(kProviderTypes.begin(), kProviderTypes.end(), m->type) == kProviderTypes.end())
      r.issue(t, prefix + ".type", "unknown provider type '" + m->type + "' (known: " + join_list(kProviderTypes) + ")");
  }
  if (YAML::Node u = n["base_url"]; u.IsDefined() && u.IsScalar()) {
    // The scheme is case-insensitive; http and https (TLS, certificates
    // checked) are the two the remote providers speak.
    std::string url = m->base_url;
    for (size_t i = 0; i < url.size() && i < 8; ++i)
      url[i] = static_cast<char>(std::tolower(static_cast<unsigned char>(url[i])));
    size_t scheme = url.rfind("http://", 0) == 0 ? 7 : url.rfind("https://", 0) == 0 ? 8 : 0;
    if (scheme == 0)
      r.issue(u, prefix + ".base_url",
              "must start with http:// or https:// (the schemes remote providers speak), got '" + m->base_url + "'");
    else if (url.size() == scheme || url[scheme] == '/' || url[scheme] == ':' || url[scheme] == '?')
      r.issue(u, prefix + ".base_url", "has no host: '" + m->base_url + "'");
    else if (url.find_first_of(" \t\r\n#@") != std::string::npos)
      r.issue(u, prefix + ".base_url",
              "must not contain spaces, a fragment (#) or user info (@): '" + m->base_url + "'");
  }
  if (YAML::Node k = n["api_key_env"]; k.IsDefined() && k.IsScalar() && !is_env_var_name(m->api_key_env)) {
    r.issue(k, prefix + ".api_key_env",
            "must name an environment variable (letters, digits and _, not starting with a digit) that holds "
            "the key; never write the key itself in the config");
  }
  if (YAML::Node c = n["capabilities"]; c.IsDefined() && c.IsSequence()) {
    std::set<std::string> seen;
    for (size_t i = 0; i < c.size(); ++i) {
      if (!c[i].IsScalar()) continue;
      const std::string& tag = c[i].Scalar();
      std::string field = prefix + ".capabilities[" + std::to_string(i) + "]";
      if (std::find(kCapabilities.begin(), kCapabilities.end(), tag) == kCapabilities.end())
        r.issue(c[i], field, "unknown capability '" + tag + "' (known: " + join_list(kCapabilities) + ")");
      else if (!seen.insert(tag).second)
        r.issue(c[i], field, "capability '" + tag + "' is listed twice");
    }
  }
  if (YAML::Node a = n["name"]; a.IsDefined() && a.IsScalar() && !m->name.empty() && !is_model_name(m->name))
    r.issue(a, prefix + ".name", "must not contain spaces or control characters");
}

void finish_model(Reader& r, const YAML::Node& n, const std::string& prefix, const fs::path& base,
                  bool check_files, ModelConfig* m) {
  if (m->name.empty()) r.issue(n, prefix + ".name", "is required");
  bool known_type = std::find(kProviderTypes.begin(), kProviderTypes.end(), m->type) != kProviderTypes.end();
  if (!known_type) return;  // reported where the type is written
  if (!m->is_remote()) {
    for (const char* key : {"base_url", "upstream_model", "api_key_env", "ca_file", "tls_insecure_skip_verify"})
      if (n[key].IsDefined())
        r.issue(n[key], prefix + "." + key, "is only for remote models (type openai or ollama), not local ones");
    // Remote settings inherited from `defaults:` do not apply to local models.
    m->base_url.clear();
    m->upstream_model.clear();
    m->api_key_env.clear();
    m->ca_file.clear();
    m->tls_insecure_skip_verify = false;
    if (m->path.empty()) {
      r.issue(n, prefix + ".path", "is required for a local model");
    } else {
      fs::path p(m->path);
      if (p.is_relative()) p = base / p;
      m->path = p.lexically_normal().string();
      std::error_code ec;
      if (check_files && !fs::is_regular_file(p, ec))
        r.issue(n["path"], prefix + ".path", "no such file: " + m->path);
    }
  } else if (m->type == "queue") {
    // Served by the fabric's workers (docs/fabric.md): nothing to reach here.
    for (const char* key : {"path", "base_url", "api_key_env", "ca_file", "tls_insecure_skip_verify"})
      if (n[key].IsDefined())
        r.issue(n[key], prefix + "." + key, "is not for a queue model (its workers are reached through the fabric)");
    m->base_url.clear();
    m->api_key_env.clear();
    m->ca_file.clear();
    if (m->upstream_model.empty()) m->upstream_model = m->name;
  } else {
    if (n["path"].IsDefined())
      r.issue(n["path"], prefix + ".path", "is only for local models; a model of type " + m->type + " is reached by base_url");
    if (m->base_url.empty())
      r.issue(n, prefix + ".base_url", "is required for a " + m->type + " model (http:// or https:// URL)");
    if (m->upstream_model.empty()) m->upstream_model = m->name;
    if (!m->ca_file.empty()) {
      fs::path p(m->ca_file);
      if (p.is_relative()) p = base / p;
      m->ca_file = p.lexically_normal().string();
      std::error_code ec;
      YAML::Node at = n["ca_file"].IsDefined() ? n["ca_file"] : n;
      if (check_files && !fs::is_regular_file(p, ec)) r.issue(at, prefix + ".ca_file", "no such file: " + m->ca_file);
    }
  }
}

const std::vector<std::string> kRoutingKeys = {"classifier", "score",  "instances", "breaker",      "retry_budget",
                                               "admission",  "effort", "groups",    "judge_prompt", "canary",
                                               "decision_log"};
const std::vector<std::string> kStrategies = {"fastest", "voting", "weighted", "consensus", "judge"};

std::string resolve_path(const fs::path& base, const std::string& path) {
  fs::path p(path);
  if (p.is_relative()) p = base / p;
  return p.lexically_normal().string();
}

// Reports `name` at `node` unless it names a configured model (or alias).
void check_model_ref(Reader& r, const Config& cfg, const YAML::Node& node, const std::string& field,
                     const std::string& name) {
  if (!name.empty() && cfg.find_model(name) == nullptr)
    r.issue(node, field, "unknown model '" + name + "' (not a model name or alias in `models`)");
}

void read_groups(Reader& r, const YAML::Node& n, Config* cfg) {
  if (!n.IsSequence()) return r.issue(n, "routing.groups", "must be a list");
  std::set<std::string> names;
  for (size_t i = 0; i < n.size(); ++i) {
    std::string prefix = "routing.groups[" + std::to_string(i) + "]";
    const YAML::Node& g = n[i];
    if (!r.map_at(g, prefix)) continue;
    r.check_keys(g, prefix,
                 {"name", "models", "fallbacks", "strategy", "k", "judge", "consensus_threshold", "hedge"});
    RouteGroupConfig group;
    group.line = g.Mark().line + 1;
    r.read_string(g, "name", prefix, &group.name, 256);
    r.read_string_list(g, "models", prefix, &group.models);
    r.read_string_list(g, "fallbacks", prefix, &group.fallbacks);
    r.read_string(g, "strategy", prefix, &group.strategy, 32);
    r.read_int(g, "k", prefix, &group.k, 0, 16);
    r.read_string(g, "judge", prefix, &group.judge, 256);
    r.read_double(g, "consensus_threshold", prefix, &group.consensus_threshold, 0.01, 1.0);
    if (auto h = r.section(g, "hedge", prefix, {"max_parallel", "default_delay_ms"})) {
      r.read_int(*h, "max_parallel", prefix + ".hedge", &group.hedge_max_parallel, 1, 16);
      r.read_int(*h, "default_delay_ms", prefix + ".hedge", &group.hedge_default_delay_ms, 0, 600000);
    }
    if (group.name.empty()) {
      r.issue(g, prefix + ".name", "is required");
    } else if (!is_model_name(group.name)) {
      r.issue(g["name"], prefix + ".name", "must not contain spaces or control characters");
    } else if (!names.insert(group.name).second) {
      r.issue(g["name"], prefix + ".name", "duplicate route group name '" + group.name + "'");
    } else if (cfg->find_model(group.name) != nullptr) {
      r.issue(g["name"], prefix + ".name",
              "'" + group.name + "' is already a model name or alias; a request could not say which it means");
    }
    if (group.models.empty()) r.issue(g, prefix + ".models", "is required: list at least one model");
    for (const char* key : {"models", "fallbacks"}) {
      const auto& list = std::string(key) == "models" ? group.models : group.fallbacks;
      for (size_t m = 0; m < list.size(); ++m)
        check_model_ref(r, *cfg, g[key][m], prefix + "." + key + "[" + std::to_string(m) + "]", list[m]);
    }
    if (std::find(kStrategies.begin(), kStrategies.end(), group.strategy) == kStrategies.end())
      r.issue(g["strategy"], prefix + ".strategy",
              "unknown strategy '" + group.strategy + "' (known: " + join_list(kStrategies) + ")");
    if (group.strategy == "judge" && group.judge.empty())
      r.issue(g, prefix + ".judge", "is required with strategy judge");
    check_model_ref(r, *cfg, g["judge"], prefix + ".judge", group.judge);
    cfg->routing.groups.push_back(std::move(group));
  }
}

void read_canary(Reader& r, const YAML::Node& c, Config* cfg) {
  CanaryConfig& canary = cfg->routing.canary;
  const std::string prefix = "routing.canary";
  r.read_int(c, "min_samples", prefix, &canary.min_samples, 1, 1000000);
  r.read_double(c, "max_helpful_drop", prefix, &canary.max_helpful_drop, 0.0, 1.0);
  YAML::Node routes = c["routes"];
  if (!routes.IsDefined() || routes.IsNull()) return;
  if (!routes.IsSequence()) return r.issue(routes, prefix + ".routes", "must be a list");
  std::set<std::string> seen;
  for (size_t i = 0; i < routes.size(); ++i) {
    std::string rp = prefix + ".routes[" + std::to_string(i) + "]";
    const YAML::Node& n = routes[i];
    if (!r.map_at(n, rp)) continue;
    r.check_keys(n, rp, {"route", "baseline_model", "arms"});
    CanaryRouteConfig route;
    r.read_string(n, "route", rp, &route.route, 256);
    r.read_string(n, "baseline_model", rp, &route.baseline_model, 256);
    if (route.route.empty()) r.issue(n, rp + ".route", "is required");
    else if (!seen.insert(route.route).second) r.issue(n["route"], rp + ".route", "duplicate route '" + route.route + "'");
    static const std::set<std::string> kTagRoutes = {kAutoRoute, "code", "reasoning", "fast", "tools"};
    if (!route.route.empty() && !kTagRoutes.count(route.route) && cfg->routing.find_group(route.route) == nullptr)
      r.issue(n["route"], rp + ".route",
              "'" + route.route + "' is neither a route group nor a classifier tag (auto, code, reasoning, fast, tools)");
    if (route.baseline_model.empty()) r.issue(n, rp + ".baseline_model", "is required");
    check_model_ref(r, *cfg, n["baseline_model"], rp + ".baseline_model", route.baseline_model);
    // A missing key gives an invalid node, whose IsSequence() throws: ask
    // IsDefined() first (a route without arms is like `arms: null`).
    YAML::Node arms = n["arms"];
    const bool has_arms = arms.IsDefined() && arms.IsSequence();
    if (arms.IsDefined() && !arms.IsNull() && !has_arms) r.issue(arms, rp + ".arms", "must be a list");
    double total = 0;
    std::set<std::string> arm_names = {"baseline"};
    for (size_t a = 0; has_arms && a < arms.size(); ++a) {
      std::string ap = rp + ".arms[" + std::to_string(a) + "]";
      const YAML::Node& an = arms[a];
      if (!r.map_at(an, ap)) continue;
      r.check_keys(an, ap, {"name", "model", "percent"});
      CanaryArmConfig arm;
      r.read_string(an, "name", ap, &arm.name, 128);
      r.read_string(an, "model", ap, &arm.model, 256);
      r.read_double(an, "percent", ap, &arm.percent, 0.0, 100.0);
      if (arm.name.empty()) r.issue(an, ap + ".name", "is required");
      else if (!arm_names.insert(arm.name).second)
        r.issue(an["name"], ap + ".name", "arm name '" + arm.name + "' is used twice (\"baseline\" is reserved)");
      if (arm.model.empty()) r.issue(an, ap + ".model", "is required");
      check_model_ref(r, *cfg, an["model"], ap + ".model", arm.model);
      total += arm.percent;
      if (total > 100.0 + 1e-9) r.issue(an["percent"], ap + ".percent", "the arms' percents add up to more than 100");
      route.arms.push_back(std::move(arm));
    }
    canary.routes.push_back(std::move(route));
  }
}

// `weights: {name: number, ...}` under `parent`; each 0-1000 (only ratios matter).
void read_weights(Reader& r, const YAML::Node& parent, const std::string& prefix,
                  const std::vector<std::pair<std::string, double*>>& fields) {
  std::vector<std::string> keys;
  for (const auto& f : fields) keys.push_back(f.first);
  auto w = r.section(parent, "weights", prefix, keys);
  if (!w) return;
  for (const auto& [key, out] : fields) r.read_double(*w, key.c_str(), prefix + ".weights", out, 0, 1000);
}

// `routing:`; read after `models:` so that references can be checked.
void read_routing(Reader& r, const YAML::Node& n, const fs::path& base, bool check_files, Config* cfg) {
  if (!r.map_at(n, "routing")) return;
  r.check_keys(n, "routing", kRoutingKeys);
  RoutingConfig& rc = cfg->routing;
  const std::string p = "routing";
  if (auto c = r.section(n, "classifier", p,
                         {"weights", "code_preferred", "code_required", "reasoning_preferred",
                          "reasoning_required_complexity", "fast_below", "tools_required", "length_saturation_tokens",
                          "max_scan_bytes"})) {
    const std::string cp = "routing.classifier";
    ClassifierConfig& k = rc.classifier;
    read_weights(r, *c, cp, {{"length", &k.weight_length}, {"code", &k.weight_code},
                             {"reasoning", &k.weight_reasoning}, {"multi_step", &k.weight_multi_step},
                             {"technical", &k.weight_technical}});
    r.read_double(*c, "code_preferred", cp, &k.code_preferred, 0, 1);
    r.read_double(*c, "code_required", cp, &k.code_required, 0, 1);
    r.read_double(*c, "reasoning_preferred", cp, &k.reasoning_preferred, 0, 1);
    r.read_double(*c, "reasoning_required_complexity", cp, &k.reasoning_required_complexity, 0, 1);
    r.read_double(*c, "fast_below", cp, &k.fast_below, 0, 1);
    r.read_bool(*c, "tools_required", cp, &k.tools_required);
    r.read_int(*c, "length_saturation_tokens", cp, &k.length_saturation_tokens, 1, 1 << 24);
    r.read_int(*c, "max_scan_bytes", cp, &k.max_scan_bytes, 256, 1 << 24);
  }
  if (auto s = r.section(n, "score", p,
                         {"weights", "latency_ref_ms", "ewma_share", "unknown_latency_ms", "half_open_health"})) {
    const std::string sp = "routing.score";
    ScoreConfig& k = rc.score;
    read_weights(r, *s, sp, {{"latency", &k.weight_latency}, {"queue", &k.weight_queue}, {"fit", &k.weight_fit},
                             {"health", &k.weight_health}, {"feedback", &k.weight_feedback}});
    r.read_double(*s, "latency_ref_ms", sp, &k.latency_ref_ms, 1, 3.6e6);
    r.read_double(*s, "ewma_share", sp, &k.ewma_share, 0, 1);
    r.read_double(*s, "unknown_latency_ms", sp, &k.unknown_latency_ms, 0, 3.6e6);
    r.read_double(*s, "half_open_health", sp, &k.half_open_health, 0, 1);
  }
  if (auto s = r.section(n, "instances", p,
                         {"ewma_alpha", "window_size", "max_sample_age_ms", "min_samples", "slow_p95_ms",
                          "recover_ratio", "quality_prior", "quality_alpha", "success_alpha"})) {
    const std::string ip = "routing.instances";
    InstancesConfig& k = rc.instances;
    r.read_double(*s, "ewma_alpha", ip, &k.ewma_alpha, 0.001, 1);
    r.read_int(*s, "window_size", ip, &k.window_size, 1, 100000);
    r.read_int(*s, "max_sample_age_ms", ip, &k.max_sample_age_ms, 1, 86400000);
    r.read_int(*s, "min_samples", ip, &k.min_samples, 1, 100000);
    r.read_double(*s, "slow_p95_ms", ip, &k.slow_p95_ms, 0, 3.6e6);
    r.read_double(*s, "recover_ratio", ip, &k.recover_ratio, 0.01, 1);
    r.read_double(*s, "quality_prior", ip, &k.quality_prior, 0, 1);
    r.read_double(*s, "quality_alpha", ip, &k.quality_alpha, 0.001, 1);
    r.read_double(*s, "success_alpha", ip, &k.success_alpha, 0.001, 1);
  }
  if (auto s = r.section(n, "breaker", p, {"failure_threshold", "cooldown_ms"})) {
    r.read_int(*s, "failure_threshold", "routing.breaker", &rc.breaker.failure_threshold, 1, 100000);
    r.read_int(*s, "cooldown_ms", "routing.breaker", &rc.breaker.cooldown_ms, 1, 86400000);
  }
  if (auto s = r.section(n, "retry_budget", p, {"retry_ratio", "min_retries_per_second", "window_ms"})) {
    r.read_double(*s, "retry_ratio", "routing.retry_budget", &rc.retry_budget.retry_ratio, 0, 100);
    r.read_double(*s, "min_retries_per_second", "routing.retry_budget", &rc.retry_budget.min_retries_per_second, 0,
                  1e6);
    r.read_int(*s, "window_ms", "routing.retry_budget", &rc.retry_budget.window_ms, 100, 3600000);
  }
  if (auto s = r.section(n, "admission", p, {"max_active", "retry_after_seconds"})) {
    r.read_int(*s, "max_active", "routing.admission", &rc.admission.max_active, 0, 1000000);
    r.read_int(*s, "retry_after_seconds", "routing.admission", &rc.admission.retry_after_seconds, 1, 3600);
  }
  if (auto s = r.section(n, "effort", p,
                         {"hint_weight", "minimal_value", "low_value", "medium_value", "high_value", "low_tier_below",
                          "medium_tier_below", "low_tier_tokens", "medium_tier_tokens", "high_tier_tokens",
                          "temperature_min", "temperature_max", "thinking_above"})) {
    const std::string ep = "routing.effort";
    EffortConfig& k = rc.effort;
    for (auto [key, out] : {std::pair{"hint_weight", &k.hint_weight}, std::pair{"minimal_value", &k.minimal_value},
                            std::pair{"low_value", &k.low_value}, std::pair{"medium_value", &k.medium_value},
                            std::pair{"high_value", &k.high_value}, std::pair{"low_tier_below", &k.low_tier_below},
                            std::pair{"medium_tier_below", &k.medium_tier_below},
                            std::pair{"thinking_above", &k.thinking_above}})
      r.read_double(*s, key, ep, out, 0, 1);
    r.read_int(*s, "low_tier_tokens", ep, &k.low_tier_tokens, 1, 1 << 20);
    r.read_int(*s, "medium_tier_tokens", ep, &k.medium_tier_tokens, 1, 1 << 20);
    r.read_int(*s, "high_tier_tokens", ep, &k.high_tier_tokens, 1, 1 << 20);
    r.read_double(*s, "temperature_min", ep, &k.temperature_min, 0, 2);
    r.read_double(*s, "temperature_max", ep, &k.temperature_max, 0, 2);
    if (k.low_tier_below > k.medium_tier_below)
      r.issue(*s, ep + ".low_tier_below", "must not be above medium_tier_below");
    if (k.temperature_min > k.temperature_max)
      r.issue(*s, ep + ".temperature_min", "must not be above temperature_max");
  }
  if (YAML::Node g = n["groups"]; g.IsDefined() && !g.IsNull()) read_groups(r, g, cfg);
  r.read_string(n, "judge_prompt", p, &rc.judge_prompt);
  if (!rc.judge_prompt.empty()) {
    rc.judge_prompt = resolve_path(base, rc.judge_prompt);
    std::error_code ec;
    if (check_files && !fs::is_regular_file(rc.judge_prompt, ec))
      r.issue(n["judge_prompt"], "routing.judge_prompt", "no such file: " + rc.judge_prompt);
  }
  if (auto c = r.section(n, "canary", p, {"min_samples", "max_helpful_drop", "routes"})) read_canary(r, *c, cfg);
  // decision_log: a path, or {path, max_bytes, keep} (size rotation).
  if (YAML::Node d = n["decision_log"]; d.IsDefined() && d.IsMap()) {
    if (auto s = r.section(n, "decision_log", p, {"path", "max_bytes", "keep"})) {
      r.read_string(*s, "path", p + ".decision_log", &rc.decision_log);
      r.read_size(*s, "max_bytes", p + ".decision_log", &rc.decision_log_max_bytes);
      r.read_int(*s, "keep", p + ".decision_log", &rc.decision_log_keep, 0, 100);
    }
  } else {
    r.read_string(n, "decision_log", p, &rc.decision_log);
  }
  if (!rc.decision_log.empty()) rc.decision_log = resolve_path(base, rc.decision_log);
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// A non-negative decimal number at the start of `s`; advances `s`.
std::optional<double> take_number(std::string_view& s) {
  size_t i = 0;
  bool digits = false, dot = false;
  while (i < s.size()) {
    char c = s[i];
    if (std::isdigit(static_cast<unsigned char>(c))) {
      digits = true;
    } else if (c == '.' && !dot) {
      dot = true;
    } else {
      break;
    }
    ++i;
  }
  if (!digits) return std::nullopt;
  double v = std::strtod(std::string(s.substr(0, i)).c_str(), nullptr);
  s.remove_prefix(i);
  return v;
}


// ------------------------------------------------------------- tenancy
// `data_dir`, `auth`, `tenants` and `metrics_listen` (docs/config.md).

const std::vector<std::string> kAuthKeys = {"enabled", "jwt", "hmac", "allow_unauthenticated_non_loopback"};
const std::vector<std::string> kJwtKeys = {"algorithm", "hs256_secret_env", "public_keys", "public_key_file",
                                           "jwks_file", "issuer",           "audience",    "tenant_claim",
                                           "leeway_s"};
const std::vector<std::string> kTenantKeys = {
    "name",   "plan",         "throughput",   "storage_days",        "max_consumers",
    "models", "route_groups", "max_priority", "requests_per_minute", "tokens_per_minute",
    "max_concurrent_requests", "daily_token_budget", "monthly_token_budget"};

// The same rule as tenancy::validate_tenant_name (config depends on nothing of tenancy).
bool is_tenant_name(const std::string& s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-')) return false;
  return true;
}

void read_jwt(Reader& r, const YAML::Node& n, const fs::path& base, bool check_files, JwtAuthConfig* j) {
  const std::string p = "auth.jwt";
  r.read_string(n, "algorithm", p, &j->algorithm, 16);
  if (j->algorithm != "HS256" && j->algorithm != "RS256" && j->algorithm != "ES256")
    r.issue(n["algorithm"], p + ".algorithm", "must be HS256, RS256 or ES256; got '" + j->algorithm + "'");
  r.read_string(n, "hs256_secret_env", p, &j->hs256_secret_env, 128);
  if (!j->hs256_secret_env.empty() && !is_env_var_name(j->hs256_secret_env))
    r.issue(n["hs256_secret_env"], p + ".hs256_secret_env",
            "must be an environment variable name (letters, digits, _), not the secret itself");
  // `public_keys` is another name of `public_key_file`.
  r.read_string(n, "public_key_file", p, &j->public_key_file);
  const char* key_field = "public_key_file";
  if (n["public_keys"].IsDefined() && !n["public_keys"].IsNull()) {
    if (!j->public_key_file.empty())
      r.issue(n["public_keys"], p + ".public_keys", "give public_key_file or public_keys, not both");
    r.read_string(n, "public_keys", p, &j->public_key_file);
    key_field = "public_keys";
  }
  r.read_string(n, "jwks_file", p, &j->jwks_file);
  r.read_string(n, "issuer", p, &j->issuer, 1024);
  r.read_string(n, "audience", p, &j->audience, 1024);
  r.read_string(n, "tenant_claim", p, &j->tenant_claim, 128);
  if (j->tenant_claim.empty()) r.issue(n["tenant_claim"], p + ".tenant_claim", "must not be empty");
  r.read_int(n, "leeway_s", p, &j->leeway_s, 0, 60);
  for (auto [key, file] : {std::pair{key_field, &j->public_key_file}, std::pair{"jwks_file", &j->jwks_file}}) {
    if (file->empty()) continue;
    *file = resolve_path(base, *file);
    std::error_code ec;
    if (check_files && !fs::is_regular_file(*file, ec)) r.issue(n[key], p + "." + key, "no such file: " + *file);
  }
  const bool hs = j->algorithm == "HS256";
  if (hs && (!j->public_key_file.empty() || !j->jwks_file.empty()))
    r.issue(n, p, "HS256 takes hs256_secret_env; public_key_file and jwks_file are for RS256 and ES256");
  else if (!hs && !j->hs256_secret_env.empty())
    r.issue(n, p, j->algorithm + " takes public_key_file or jwks_file; hs256_secret_env is for HS256");
  else if (!hs && !j->public_key_file.empty() && !j->jwks_file.empty())
    r.issue(n, p, "give public_key_file or jwks_file, not both");
  else if (!j->enabled())
    r.issue(n, p, hs ? "needs hs256_secret_env" : "needs public_key_file or jwks_file");
}

void read_auth(Reader& r, const YAML::Node& n, const fs::path& base, bool check_files, AuthConfig* a) {
  if (!r.map_at(n, "auth")) return;
  r.check_keys(n, "auth", kAuthKeys);
  r.read_bool(n, "enabled", "auth", &a->enabled);
  r.read_bool(n, "allow_unauthenticated_non_loopback", "auth", &a->allow_unauthenticated_non_loopback);
  if (auto j = r.section(n, "jwt", "auth", kJwtKeys)) read_jwt(r, *j, base, check_files, &a->jwt);
  if (auto h = r.section(n, "hmac", "auth", {"enabled"})) r.read_bool(*h, "enabled", "auth.hmac", &a->hmac_enabled);
}

void read_tenants(Reader& r, const YAML::Node& n, Config* cfg) {
  if (n.IsMap() && n.size() == 0) return;  // `tenants: {}`, the placeholder older configs carry
  if (!n.IsSequence()) return r.issue(n, "tenants", "must be a list of tenants (name, plan, models, limits, ...)");
  std::set<std::string> names;
  constexpr int64_t kMaxLimit = int64_t{1} << 50;
  for (size_t i = 0; i < n.size(); ++i) {
    const std::string p = "tenants[" + std::to_string(i) + "]";
    const YAML::Node& t = n[i];
    if (!r.map_at(t, p)) continue;
    r.check_keys(t, p, kTenantKeys);
    TenantConfig tc;
    tc.line = t.Mark().line + 1;
    r.read_string(t, "name", p, &tc.name, 64);
    if (!t["name"].IsDefined()) r.issue(t, p + ".name", "is required");
    else if (!is_tenant_name(tc.name))
      r.issue(t["name"], p + ".name", "must be 1 to 64 characters of a-z, 0-9, '_' and '-' (it becomes a label)");
    else if (!names.insert(tc.name).second)
      r.issue(t["name"], p + ".name", "duplicate tenant name '" + tc.name + "'");
    r.read_string(t, "plan", p, &tc.plan, 64);
    r.read_string(t, "throughput", p, &tc.throughput, 64);
    r.read_int(t, "storage_days", p, &tc.storage_days, 0, 100000);
    r.read_int(t, "max_consumers", p, &tc.max_consumers, 0, 1000000);
    r.read_string_list(t, "models", p, &tc.allowed_models);
    r.read_string_list(t, "route_groups", p, &tc.route_groups);
    r.read_int(t, "max_priority", p, &tc.max_priority, -1000, 1000);
    r.read_int(t, "requests_per_minute", p, &tc.requests_per_minute, 0, kMaxLimit);
    r.read_int(t, "tokens_per_minute", p, &tc.tokens_per_minute, 0, kMaxLimit);
    r.read_int(t, "max_concurrent_requests", p, &tc.max_concurrent_requests, 0, 1000000);
    r.read_int(t, "daily_token_budget", p, &tc.daily_token_budget, 0, kMaxLimit);
    r.read_int(t, "monthly_token_budget", p, &tc.monthly_token_budget, 0, kMaxLimit);
    for (size_t m = 0; m < tc.allowed_models.size(); ++m)
      if (tc.allowed_models[m] != "*")
        check_model_ref(r, *cfg, t["models"][m], p + ".models[" + std::to_string(m) + "]", tc.allowed_models[m]);
    for (size_t g = 0; g < tc.route_groups.size(); ++g) {
      const std::string& name = tc.route_groups[g];
      if (name != "*" && name != kAutoRoute && !cfg->routing.find_group(name))
        r.issue(t["route_groups"][g], p + ".route_groups[" + std::to_string(g) + "]",
                "unknown route group '" + name + "' (not in routing.groups, and not auto)");
    }
    cfg->tenants.push_back(std::move(tc));
  }
}

void read_tenancy(Reader& r, const YAML::Node& root, const fs::path& base, bool check_files, Config* cfg) {
  // data_dir is read with the batch section (parse_config); auth needs it.
  if (YAML::Node a = root["auth"]; a.IsDefined() && !a.IsNull()) read_auth(r, a, base, check_files, &cfg->auth);
  if (YAML::Node t = root["tenants"]; t.IsDefined() && !t.IsNull()) read_tenants(r, t, cfg);
  if (auto rl = r.section(root, "rate_limits", "", {"url", "url_env", "fail_open", "lease_ttl_ms", "pool_size", "allotment_ms"})) {
    RateLimitConfig& c = cfg->rate_limits;
    r.read_string(*rl, "url", "rate_limits", &c.url, 1024);
    if (!c.url.empty() && c.url != "local" && c.url.rfind("redis://", 0) != 0)
      r.issue((*rl)["url"], "rate_limits.url", "must be local or redis://host[:port][/db]");
    r.read_string(*rl, "url_env", "rate_limits", &c.url_env, 128);
    if (!c.url_env.empty() && !is_env_var_name(c.url_env))
      r.issue((*rl)["url_env"], "rate_limits.url_env", "must be an environment variable name");
    r.read_bool(*rl, "fail_open", "rate_limits", &c.fail_open);
    r.read_int(*rl, "lease_ttl_ms", "rate_limits", &c.lease_ttl_ms, 1000, 3600000);
    r.read_int(*rl, "pool_size", "rate_limits", &c.pool_size, 1, 64);
    r.read_int(*rl, "allotment_ms", "rate_limits", &c.allotment_ms, 0, 10000);
  }
  r.read_string(root, "metrics_listen", "", &cfg->metrics_listen, 300);
  std::string host;
  uint16_t port = 0;
  if (!cfg->metrics_listen.empty() && !split_host_port(cfg->metrics_listen, &host, &port))
    r.issue(root["metrics_listen"], "metrics_listen", "must be host:port with a port of 1..65535, e.g. 127.0.0.1:9100");
  if (cfg->auth.enabled && cfg->data_dir.empty() && !cfg->auth.jwt.enabled())
    r.issue(root["auth"], "auth.enabled", "needs data_dir (where API keys live) or auth.jwt");
  if (cfg->auth.hmac_enabled && cfg->data_dir.empty())
    r.issue(root["auth"], "auth.hmac.enabled", "needs data_dir (where HMAC keys live)");
}

}  // namespace

bool is_loopback_host(const std::string& host) {
  if (host == "localhost" || host == "::1" || host == "[::1]") return true;
  // 127.0.0.0/8 in dotted-quad form.
  if (host.rfind("127.", 0) != 0) return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.') ++dots;
    else if (c < '0' || c > '9') return false;
  }
  return dots == 3;
}

bool split_host_port(const std::string& s, std::string* host, uint16_t* port) {
  auto colon = s.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == s.size() || s.size() - colon > 6) return false;
  std::string h = s.substr(0, colon), p = s.substr(colon + 1);
  for (char c : p)
    if (c < '0' || c > '9') return false;
  int v = std::stoi(p);
  if (v < 1 || v > 65535) return false;
  if (h.front() == '[') {
    if (h.back() != ']' || h.size() < 3) return false;
    h = h.substr(1, h.size() - 2);
  }
  *host = h;
  *port = static_cast<uint16_t>(v);
  return true;
}

Status check_exposure(const Config& cfg) {
  if (cfg.auth.enabled || cfg.auth.allow_unauthenticated_non_loopback || is_loopback_host(cfg.server.host))
    return Status::ok();
  return Status::invalid_argument("refusing to serve on non-loopback host '" + cfg.server.host +
                                      "' with authentication off: set auth.enabled: true, or "
                                      "auth.allow_unauthenticated_non_loopback: true to really do it",
                                  "server.host");
}

const RouteGroupConfig* RoutingConfig::find_group(const std::string& name) const {
  for (const auto& g : groups)
    if (g.name == name) return &g;
  return nullptr;
}

const ModelConfig* Config::find_model(const std::string& name) const {
  for (const auto& m : models) {
    if (m.name == name) return &m;
    if (std::find(m.aliases.begin(), m.aliases.end(), name) != m.aliases.end()) return &m;
  }
  return nullptr;
}

bool same_settings(const ModelConfig& a, const ModelConfig& b) {
  ModelConfig x = a, y = b;
  x.line = y.line = 0;
  return x == y;
}

const std::vector<std::string>& known_capabilities() { return kCapabilities; }

std::optional<int64_t> parse_duration_ms(std::string_view text) {
  std::string s = lower(trim(text));
  if (s == "-1" || s == "forever" || s == "never") return kKeepAliveForever;
  if (s.empty()) return std::nullopt;
  constexpr double kMax = 100.0 * 86400 * 1000;  // 100 days
  std::string_view rest = s;
  double total = 0;
  bool bare = true;
  while (!rest.empty()) {
    auto num = take_number(rest);
    if (!num) return std::nullopt;
    size_t u = 0;
    while (u < rest.size() && std::isalpha(static_cast<unsigned char>(rest[u]))) ++u;
    std::string unit(rest.substr(0, u));
    rest.remove_prefix(u);
    double scale = 0;
    if (unit.empty()) {
      if (!bare || !rest.empty()) return std::nullopt;  // a bare number stands alone
      scale = 1000;                                      // seconds, as in Ollama
    } else if (unit == "ms") {
      scale = 1;
    } else if (unit == "s") {
      scale = 1000;
    } else if (unit == "m") {
      scale = 60000;
    } else if (unit == "h") {
      scale = 3600000;
    } else if (unit == "d") {
      scale = 86400000;
    } else {
      return std::nullopt;
    }
    bare = false;
    total += *num * scale;
    if (total > kMax) return std::nullopt;
  }
  return static_cast<int64_t>(std::llround(total));
}

std::string format_duration_ms(int64_t ms) {
  if (ms < 0) return "forever";
  if (ms == 0) return "0";
  std::string out;
  struct Unit {
    int64_t ms;
    const char* name;
  };
  for (Unit u : {Unit{86400000, "d"}, Unit{3600000, "h"}, Unit{60000, "m"}, Unit{1000, "s"}, Unit{1, "ms"}}) {
    if (ms >= u.ms) {
      out += std::to_string(ms / u.ms) + u.name;
      ms %= u.ms;
    }
  }
  return out;
}

std::optional<uint64_t> parse_size_bytes(std::string_view text) {
  std::string s = lower(trim(text));
  std::string_view rest = s;
  auto num = take_number(rest);
  if (!num) return std::nullopt;
  std::string unit(trim(rest));
  double scale = 0;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "k" || unit == "kb") scale = 1e3;
  else if (unit == "m" || unit == "mb") scale = 1e6;
  else if (unit == "g" || unit == "gb") scale = 1e9;
  else if (unit == "t" || unit == "tb") scale = 1e12;
  else if (unit == "ki" || unit == "kib") scale = 1024.0;
  else if (unit == "mi" || unit == "mib") scale = 1024.0 * 1024;
  else if (unit == "gi" || unit == "gib") scale = 1024.0 * 1024 * 1024;
  else if (unit == "ti" || unit == "tib") scale = 1024.0 * 1024 * 1024 * 1024;
  else return std::nullopt;
  double v = *num * scale;
  if (v > std::ldexp(1.0, 60)) return std::nullopt;
  return static_cast<uint64_t>(std::llround(v));
}

std::string ConfigIssue::to_string() const {
  std::ostringstream os;
  os << file;
  if (line > 0) os << ":" << line << ":" << column;
  os << ": ";
  if (!field.empty()) os << field << ": ";
  os << message;
  return os.str();
}

LoadResult parse_config(const std::string& text, const std::string& path, bool check_files) {
  LoadResult out;
  out.config.path = path;
  Reader r(path);
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    ConfigIssue i{path, e.mark.line + 1, e.mark.column + 1, "", "invalid YAML: " + e.msg};
    out.issues.push_back(std::move(i));
    return out;
  }
  if (root.IsNull()) {
    out.issues.push_back({path, 0, 0, "", "the file is empty"});
    return out;
  }
  if (!root.IsMap()) {
    r.issue(root, "", "the top level must be a mapping");
    out.issues = r.take_issues();
    return out;
  }
  r.check_keys(root, "", kTopKeys);
  r.read_string(root, "log_level", "", &out.config.log_level, 16);
  if (!kLogLevels.count(out.config.log_level))
    r.issue(root["log_level"], "log_level",
            "must be one of trace, debug, info, warn, error, off; got '" + out.config.log_level + "'");
  if (root["server"].IsDefined() && !root["server"].IsNull()) read_server(r, root["server"], &out.config.server);
  if (root["pool"].IsDefined() && !root["pool"].IsNull()) read_pool(r, root["pool"], &out.config.pool);

  ModelConfig defaults;
  if (YAML::Node d = root["defaults"]; d.IsDefined() && !d.IsNull()) {
    if (r.map_at(d, "defaults")) {
      r.check_keys(d, "defaults", defaults_keys());
      read_model_fields(r, d, "defaults", &defaults);
      // check_keys has refused the per-model fields here; none is inherited.
      defaults.name.clear();
      defaults.aliases.clear();
      defaults.path.clear();
      defaults.upstream_model.clear();
    }
  }

  fs::path base = fs::path(path).parent_path();
  YAML::Node models = root["models"];
  if (!models.IsDefined() || models.IsNull()) {
    r.issue(root, "models", "is required: list at least one model");
  } else if (!models.IsSequence()) {
    r.issue(models, "models", "must be a list");
  } else {
    std::set<std::string> names;
    for (size_t i = 0; i < models.size(); ++i) {
      std::string prefix = "models[" + std::to_string(i) + "]";
      const YAML::Node& n = models[i];
      if (!r.map_at(n, prefix)) continue;
      ModelConfig m = defaults;
      m.line = n.Mark().line + 1;
      r.check_keys(n, prefix, kModelKeys);
      read_model_fields(r, n, prefix, &m);
      finish_model(r, n, prefix, base, check_files, &m);
      if (!m.name.empty() && !names.insert(m.name).second)
        r.issue(n["name"], prefix + ".name", "duplicate model name '" + m.name + "'");
      for (size_t a = 0; a < m.aliases.size(); ++a) {
        if (!names.insert(m.aliases[a]).second)
          r.issue(n["aliases"].IsSequence() && a < n["aliases"].size() ? n["aliases"][a] : n,
                  prefix + ".aliases[" + std::to_string(a) + "]",
                  "name '" + m.aliases[a] + "' is already used by another model or alias");
      }
      out.config.models.push_back(std::move(m));
    }
    if (models.size() == 0) r.issue(models, "models", "is empty: list at least one model");
    // Draft models: another local model's name, or a GGUF path.
    for (size_t i = 0; i < out.config.models.size() && i < models.size(); ++i) {
      ModelConfig& m = out.config.models[i];
      if (m.draft.model.empty()) continue;
      const std::string field = "models[" + std::to_string(i) + "].draft.model";
      const YAML::Node& mn = models[i];
      const YAML::Node dn = mn["draft"];
      const YAML::Node at = dn.IsMap() && dn["model"].IsDefined() ? dn["model"] : mn;
      if (m.is_remote()) {
        r.issue(at, field, "is only for local models");
        continue;
      }
      const ModelConfig* named = out.config.find_model(m.draft.model);
      if (named == &m) {
        r.issue(at, field, "a model cannot be its own draft");
      } else if (named) {
        if (named->is_remote()) r.issue(at, field, "'" + m.draft.model + "' is a remote model; a draft runs locally");
        m.draft.path = named->path;
      } else {
        m.draft.path = resolve_path(base, m.draft.model);
        std::error_code ec;
        if (check_files && !fs::is_regular_file(m.draft.path, ec))
          r.issue(at, field, "not a model name and no such file: " + m.draft.path);
      }
    }
  }
  if (YAML::Node routing = root["routing"]; routing.IsDefined() && !routing.IsNull())
    read_routing(r, routing, base, check_files, &out.config);
  if (YAML::Node fabric = root["fabric"]; fabric.IsDefined() && !fabric.IsNull())
    read_fabric(r, fabric, base, &out.config.fabric);
  for (size_t i = 0; i < out.config.models.size() && !out.config.fabric.enabled; ++i)
    if (out.config.models[i].type == "queue")
      r.issue(models[i]["type"], "models[" + std::to_string(i) + "].type", "a queue model needs a fabric: block (nats_url)");
  r.read_string(root, "data_dir", "", &out.config.data_dir);
  if (!out.config.data_dir.empty()) out.config.data_dir = resolve_path(base, out.config.data_dir);
  if (root["batch"].IsDefined() && !root["batch"].IsNull()) read_batch(r, root["batch"], &out.config.batch);
  read_tenancy(r, root, base, check_files, &out.config);
  out.issues = r.take_issues();
  // In file order, so a long list reads top to bottom.
  std::stable_sort(out.issues.begin(), out.issues.end(), [](const ConfigIssue& a, const ConfigIssue& b) {
    auto key = [](const ConfigIssue& i) { return std::make_tuple(i.line == 0, i.line, i.column); };
    return key(a) < key(b);
  });
  return out;
}

LoadResult load_config(const std::string& path, bool check_files) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    LoadResult out;
    out.config.path = path;
    out.issues.push_back({path, 0, 0, "", "cannot open the config file"});
    return out;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_config(ss.str(), path, check_files);
}

}  // namespace llmpool::config
