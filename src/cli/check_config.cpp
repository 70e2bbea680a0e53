// `llmpool check-config FILE`: validates a config file and prints every
// problem as file:line:column: field: message. Exit 0 when valid, 2 if not.
// A valid file is summarised, one line per model, with the values that the
// `defaults:` section and the built-in defaults filled in, then the route
// groups, canaries and the decision log.
#include <CLI/CLI.hpp>

#include <iostream>

#include "cli/commands.h"
#include "config/config.h"

namespace llmpool::cli {
namespace {

std::string summary(const config::ModelConfig& m) {
  std::string s = "  " + m.name + ": " + m.type;
  if (m.is_remote()) {
    s += " " + m.base_url + " (" + m.upstream_model + ")";
  } else {
    s += ", context " + std::to_string(m.context) + " x " + std::to_string(m.parallel);
  }
  if (m.max_concurrent > 0) s += ", max_concurrent " + std::to_string(m.max_concurrent);
  if (m.deadline_ms > 0) s += ", deadline " + config::format_duration_ms(m.deadline_ms);
  s += ", keep_alive " + config::format_duration_ms(m.keep_alive_ms);
  if (m.pinned) s += ", pinned";
  if (m.warm) s += ", warm";
  if (!m.capabilities.empty()) {
    s += ", [";
    for (size_t i = 0; i < m.capabilities.size(); ++i) s += (i ? ", " : "") + m.capabilities[i];
    s += "]";
  }
  if (m.thinking.supported)
    s += ", thinking " + std::to_string(m.thinking.min_tokens) + "-" + std::to_string(m.thinking.max_tokens);
  return s;
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& x : v) out += (out.empty() ? "" : ", ") + x;
  return out;
}

// One line per route group, one per canary route, and the decision log.
void print_routing(const config::RoutingConfig& r) {
  for (const auto& g : r.groups) {
    std::cout << "  route " << g.name << ": " << g.strategy << " over [" << join(g.models) << "]";
    if (!g.fallbacks.empty()) std::cout << ", fallbacks [" << join(g.fallbacks) << "]";
    if (!g.judge.empty()) std::cout << ", judge " << g.judge;
    std::cout << "\n";
  }
  for (const auto& c : r.canary.routes) {
    std::cout << "  canary " << c.route << ": baseline " << c.baseline_model;
    for (const auto& a : c.arms) std::cout << ", " << a.name << " " << a.percent << "% -> " << a.model;
    std::cout << "\n";
  }
  std::cout << "  decision log: " << (r.decision_log.empty() ? "off" : r.decision_log) << "\n";
}

// Authentication, the database and the YAML's tenants.
void print_tenancy(const config::Config& c) {
  const auto& a = c.auth;
  std::cout << "  auth: " << (a.enabled ? "on" : "off");
  if (a.enabled) {
    std::cout << " (api keys" << (c.data_dir.empty() ? " off" : "");
    if (a.jwt.enabled()) std::cout << ", jwt " << a.jwt.algorithm;
    if (a.hmac_enabled) std::cout << ", hmac";
    std::cout << ")";
  }
  std::cout << "\n";
  if (!c.data_dir.empty()) std::cout << "  data_dir: " << c.data_dir << "\n";
  if (!c.metrics_listen.empty()) std::cout << "  metrics on " << c.metrics_listen << "\n";
  for (const auto& t : c.tenants)
    std::cout << "  tenant " << t.name << ": plan " << (t.plan.empty() ? "-" : t.plan) << ", models ["
              << join(t.allowed_models) << "], route groups [" << join(t.route_groups) << "], rpm "
              << t.requests_per_minute << ", tpm " << t.tokens_per_minute << "\n";
}

// The make target that writes a missing model file this repository knows how
// to make (the demo, seed-role and benchmark models), or empty.
std::string make_target_for(const std::string& path) {
  std::string name = path.substr(path.find_last_of('/') + 1);
  for (const char* demo : {"tiny-q8_0.gguf", "small-q8_0.gguf", "coder-q8_0.gguf"})
    if (name == demo) return "make models";
  if (name.rfind("seed-", 0) == 0 && name.size() > 5 && name.find(".gguf") != std::string::npos) return "make seed-models";
  if (name == "bench-0.5b-q8_0.gguf") return "make bench-models";
  return {};
}

// "no such file: models/tiny-q8_0.gguf" gains "; `make models` creates it".
std::string with_hint(const config::ConfigIssue& issue) {
  std::string line = issue.to_string();
  static constexpr std::string_view kMissing = "no such file: ";
  if (issue.message.rfind(kMissing, 0) != 0 || issue.field.find(".path") == std::string::npos) return line;
  std::string target = make_target_for(issue.message.substr(kMissing.size()));
  if (!target.empty()) line += "; `" + target + "` creates it";
  return line;
}

}  // namespace

void add_check_config_command(CLI::App& app, int* exit_code) {
  auto path = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("check-config", "Validate a config file and list its problems");
  cmd->add_option("file", *path, "YAML config file")->required();
  cmd->callback([path, exit_code] {
    config::LoadResult r = config::load_config(*path);
    // Serving without auth on a non-loopback host is refused at start: say so here too.
    if (r.ok())
      if (Status st = config::check_exposure(r.config); !st)
        r.issues.push_back({*path, 0, 0, st.param(), st.message()});
    for (const auto& issue : r.issues) std::cout << with_hint(issue) << "\n";
    if (r.ok()) {
      std::cout << *path << ": ok (" << r.config.models.size() << " model(s))\n";
      for (const auto& m : r.config.models) std::cout << summary(m) << "\n";
      print_routing(r.config.routing);
      print_tenancy(r.config);
      *exit_code = 0;
    } else {
      std::cout << *path << ": " << r.issues.size() << " problem(s)\n";
      *exit_code = 2;
    }
  });
}

}  // namespace llmpool::cli
