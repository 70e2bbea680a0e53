#include "config/config.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>
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
  void check_keys(const YAML::Node& map, const std::string& prefix,
                  std::initializer_list<const char*> known) {
    std::unordered_set<std::string> k(known.begin(), known.end());
    for (const auto& kv : map) {
      std::string key = kv.first.Scalar();
      if (!k.count(key)) {
        std::string allowed;
        for (const char* s : known) allowed += std::string(allowed.empty() ? "" : ", ") + s;
        issue(kv.first, join(prefix, key), "unknown field (known: " + allowed + ")");
      }
    }
  }

  bool map_at(const YAML::Node& node, const std::string& field) {
    if (node.IsMap()) return true;
    issue(node, field, "must be a mapping");
    return false;
  }

  void read_string(const YAML::Node& parent, const char* key, const std::string& prefix,
                   std::string* out, size_t max_len = 4096) {
    YAML::Node n = parent[key];
    if (!n.IsDefined() || n.IsNull()) return;
    std::string field = join(prefix, key);
    if (!n.IsScalar()) return issue(n, field, "must be a string");
    if (n.Scalar().size() > max_len)
      return issue(n, field, "longer than " + std::to_string(max_len) + " characters");
    *out = n.Scalar();
  }

  template <typename Int>
  void read_int(const YAML::Node& parent, const char* key, const std::string& prefix, Int* out,
                int64_t lo, int64_t hi) {
    YAML::Node n = parent[key];
    if (!n.IsDefined() || n.IsNull()) return;
    std::string field = join(prefix, key);
    if (!n.IsScalar()) return issue(n, field, "must be an integer");
    int64_t v = 0;
    try {
      size_t used = 0;
      v = std::stoll(n.Scalar(), &used, 10);
      if (used != n.Scalar().size()) throw std::invalid_argument("trailing");
    } catch (const std::exception&) {
      return issue(n, field, "must be an integer, got '" + n.Scalar() + "'");
    }
    if (v < lo || v > hi)
      return issue(n, field, "must be between " + std::to_string(lo) + " and " +
                                 std::to_string(hi) + ", got " + std::to_string(v));
    *out = static_cast<Int>(v);
  }

  void read_string_list(const YAML::Node& parent, const char* key, const std::string& prefix,
                        std::vector<std::string>* out) {
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

constexpr std::initializer_list<const char*> kTopKeys = {"log_level", "server", "models",
                                                        "routing", "tenants", "defaults"};
constexpr std::initializer_list<const char*> kServerKeys = {"host", "port", "io_threads",
                                                           "max_body_bytes", "shutdown_grace_ms"};
constexpr std::initializer_list<const char*> kModelKeys = {
    "name", "aliases", "type", "path", "context", "parallel", "batch", "threads", "max_queue",
    "deadline_ms", "capabilities"};
const std::set<std::string> kLogLevels = {"trace", "debug", "info", "warn", "error", "off"};
const std::set<std::string> kProviderTypes = {"local"};

void read_server(Reader& r, const YAML::Node& n, ServerConfig* s) {
  if (!r.map_at(n, "server")) return;
  r.check_keys(n, "server", kServerKeys);
  r.read_string(n, "host", "server", &s->host, 255);
  r.read_int(n, "port", "server", &s->port, 0, 65535);
  r.read_int(n, "io_threads", "server", &s->io_threads, 1, 256);
  r.read_int(n, "max_body_bytes", "server", &s->max_body_bytes, 1024, int64_t{1} << 30);
  r.read_int(n, "shutdown_grace_ms", "server", &s->shutdown_grace_ms, 0, 600000);
}

void read_model(Reader& r, const YAML::Node& n, const std::string& prefix, const fs::path& base,
                bool check_files, ModelConfig* m) {
  if (!r.map_at(n, prefix)) return;
  m->line = n.Mark().line + 1;
  r.check_keys(n, prefix, kModelKeys);
  r.read_string(n, "name", prefix, &m->name, 256);
  r.read_string_list(n, "aliases", prefix, &m->aliases);
  r.read_string(n, "type", prefix, &m->type, 64);
  r.read_string(n, "path", prefix, &m->path);
  r.read_int(n, "context", prefix, &m->context, 64, 1 << 24);
  r.read_int(n, "parallel", prefix, &m->parallel, 1, 256);
  r.read_int(n, "batch", prefix, &m->batch, 1, 1 << 16);
  r.read_int(n, "threads", prefix, &m->threads, 0, 1024);
  r.read_int(n, "max_queue", prefix, &m->max_queue, 0, 1 << 20);
  r.read_int(n, "deadline_ms", prefix, &m->deadline_ms, 0, 86400000);
  r.read_string_list(n, "capabilities", prefix, &m->capabilities);

  if (m->name.empty()) r.issue(n, prefix + ".name", "is required");
  if (!kProviderTypes.count(m->type))
    r.issue(n["type"], prefix + ".type", "unknown provider type '" + m->type + "' (known: local)");
  if (m->type == "local") {
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
  }
}

}  // namespace

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
  if (root["server"].IsDefined()) read_server(r, root["server"], &out.config.server);

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
      ModelConfig m;
      read_model(r, models[i], prefix, base, check_files, &m);
      if (!m.name.empty() && !names.insert(m.name).second)
        r.issue(models[i]["name"], prefix + ".name", "duplicate model name '" + m.name + "'");
      for (size_t a = 0; a < m.aliases.size(); ++a) {
        if (!names.insert(m.aliases[a]).second)
          r.issue(models[i]["aliases"][a], prefix + ".aliases[" + std::to_string(a) + "]",
                  "name '" + m.aliases[a] + "' is already used by another model or alias");
      }
      out.config.models.push_back(std::move(m));
    }
    if (models.size() == 0) r.issue(models, "models", "is empty: list at least one model");
  }
  out.issues = r.take_issues();
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
