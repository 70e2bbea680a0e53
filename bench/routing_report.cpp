// llmpool-routing-report: the Markdown tables of bench/routing.sh from one
// llmpool-loadgen JSON result (run with --record-header x-llmpool-model) and
// llmpool's routing decision log. The arithmetic half of routing.sh, like
// llmpool-bench-report is for compare.sh.
//
// Exit status: 0 when both targets were met, 1 when one was not (the tables
// are written either way), 2 on bad options or unreadable inputs.
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <set>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "routing_stats.h"

namespace llmpool::bench {
namespace {

using nlohmann::json;

std::string pct(double share) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f %%", 100 * share);
  return buf;
}

std::string num(double v, int decimals = 0) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

int run_main(int argc, char** argv) {
  std::string loadgen_path, log_path, slow;
  std::vector<std::string> upstreams;
  double switch_at = 0, settle = 10, min_move = 0.10, target_p99_us = 100;
  CLI::App app{"llmpool-routing-report: traffic shares before/after an upstream turned slow, and router overhead"};
  app.option_defaults()->always_capture_default();
  app.add_option("--loadgen", loadgen_path, "llmpool-loadgen --json result with header_counts")->required();
  app.add_option("--decision-log", log_path, "llmpool's routing decision log (JSON lines with router_us)");
  app.add_option("--slow", slow, "the header value (model) that turned slow")->required();
  app.add_option("--switch-at", switch_at, "seconds after the measured phase began when it turned slow")->required();
  app.add_option("--settle", settle, "seconds after the switch left out of the 'settled' span");
  app.add_option("--min-move", min_move, "acceptance: the slow one's share must fall by at least this much");
  app.add_option("--target-p99-us", target_p99_us, "target for the router's p99 overhead");
  app.add_option("--upstream", upstreams, "NAME=FILE: an llmpool-fake-upstream's GET /control answer (repeatable)");
  CLI11_PARSE(app, argc, argv);

  std::ifstream in(loadgen_path);
  json doc = json::parse(in, nullptr, false);
  if (!doc.is_object() || !doc.contains("header_counts")) {
    std::cerr << "llmpool-routing-report: " << loadgen_path << " is not a loadgen result with header_counts\n";
    return 2;
  }
  const json& hc = doc["header_counts"];
  const double end = 1e18;
  TrafficShare before = traffic_share(hc, 0, switch_at);
  TrafficShare after = traffic_share(hc, switch_at, end);
  TrafficShare settled = traffic_share(hc, switch_at + settle, end);
  std::set<std::string> values;
  for (const auto& [value, n] : hc["total"].items()) values.insert(value);

  const json& machine = doc.value("machine", json::object());
  if (machine.contains("cpu_pressure_some_pct")) {
    std::printf("CPU pressure during the measured phase: %s %% (the share of time some task waited for a CPU; "
                "above ~10 %% other work on the machine inflates latencies, the router's p99 first).\n\n",
                num(machine["cpu_pressure_some_pct"].get<double>(), 1).c_str());
  }
  if (!upstreams.empty()) {
    std::printf("Seen by the upstreams themselves (warm-up included):");
    for (const std::string& u : upstreams) {
      size_t eq = u.find('=');
      std::ifstream f(eq == std::string::npos ? std::string() : u.substr(eq + 1));
      json state = json::parse(f, nullptr, false);
      if (eq == std::string::npos || !state.is_object() || !state.contains("counts")) {
        std::cerr << "llmpool-routing-report: --upstream " << u << ": not NAME=FILE with a /control answer\n";
        return 2;
      }
      const json& c = state["counts"];
      std::printf("%s %s %s requests (%s ok, %s cancelled, %s errors)", &u == &upstreams.front() ? "" : ";",
                  u.substr(0, eq).c_str(),
                  c.value("requests", json(0)).dump().c_str(), c.value("ok", json(0)).dump().c_str(),
                  c.value("cancelled", json(0)).dump().c_str(), c.value("errors", json(0)).dump().c_str());
    }
    std::printf(".\n\n");
  }
  std::printf("| span | windows | answered |");
  for (const std::string& v : values) std::printf(" %s |", v.c_str());
  std::printf("\n| --- | ---: | ---: |");
  for (size_t i = 0; i < values.size(); ++i) std::printf(" ---: |");
  std::printf("\n");
  auto row = [&](const std::string& name, const TrafficShare& t) {
    std::printf("| %s | %d | %d |", name.c_str(), t.windows, t.answered);
    for (const std::string& v : values) {
      auto it = t.counts.find(v);
      int n = it == t.counts.end() ? 0 : it->second;
      bool model = v != "(failed)" && v != "(none)";
      std::printf(" %d%s |", n, model ? (" (" + pct(t.share(v)) + ")").c_str() : "");
    }
    std::printf("\n");
  };
  const double wall = doc["results"].value("wall_s", 0.0);
  row("before: 0–" + num(switch_at) + " s", before);
  row("after: " + num(switch_at) + "–" + num(wall) + " s", after);
  row("settled: " + num(switch_at + settle) + "–" + num(wall) + " s", settled);

  const double moved = before.share(slow) - after.share(slow);
  const bool moved_ok = before.answered > 0 && after.answered > 0 && moved >= min_move;
  std::printf("\nShare of `%s` (the one made slow): %s before, %s after (%s once settled): "
              "moved %s points away (acceptance: at least %s points) — **%s**.\n",
              slow.c_str(), pct(before.share(slow)).c_str(), pct(after.share(slow)).c_str(),
              pct(settled.share(slow)).c_str(), num(100 * moved, 1).c_str(), num(100 * min_move, 0).c_str(),
              moved_ok ? "met" : "not met");

  bool overhead_ok = true;
  if (!log_path.empty()) {
    std::ifstream log(log_path);
    if (!log) {
      std::cerr << "llmpool-routing-report: cannot read " << log_path << "\n";
      return 2;
    }
    RouterOverhead o = router_overhead(log);
    overhead_ok = o.us.n > 0 && o.us.p99 < target_p99_us;
    std::printf("\nRouter overhead (`router_us` of %zu decisions in the decision log, warm-up included): "
                "p50 %s µs, p99 %s µs, mean %s µs, max %s µs (target: p99 under %s µs) — **%s**.",
                o.us.n, num(o.us.p50, 1).c_str(), num(o.us.p99, 1).c_str(), num(o.us.mean, 1).c_str(),
                num(o.us.max, 1).c_str(), num(target_p99_us).c_str(), overhead_ok ? "met" : "not met");
    if (o.without_router_us > 0) std::printf(" %d lines had no `router_us`.", o.without_router_us);
    std::printf("\n");
  }

  std::printf("\nPer window (requests by start time, %s s each):\n\n| window s |", num(hc.value("window_s", 0.0), 1).c_str());
  for (const std::string& v : values) std::printf(" %s |", v.c_str());
  std::printf("\n| --- |");
  for (size_t i = 0; i < values.size(); ++i) std::printf(" ---: |");
  std::printf("\n");
  for (const json& w : hc["windows"]) {
    double s = w.value("start_s", 0.0);
    std::printf("| %s–%s%s |", num(s).c_str(), num(w.value("end_s", 0.0)).c_str(),
                std::fabs(s - switch_at) < 1e-9 ? " (slow from here)" : "");
    for (const std::string& v : values) std::printf(" %d |", w["counts"].value(v, 0));
    std::printf("\n");
  }
  return moved_ok && overhead_ok ? 0 : 1;
}

}  // namespace
}  // namespace llmpool::bench

int main(int argc, char** argv) { return llmpool::bench::run_main(argc, argv); }
