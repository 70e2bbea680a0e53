#include "routing_stats.h"

namespace llmpool::bench {

double TrafficShare::share(const std::string& value) const {
  auto it = counts.find(value);
  return answered == 0 || it == counts.end() ? 0.0 : static_cast<double>(it->second) / answered;
}

TrafficShare traffic_share(const nlohmann::json& header_counts, double from_s, double to_s) {
  TrafficShare t;
  t.from_s = from_s;
  t.to_s = to_s;
  if (!header_counts.is_object() || !header_counts.contains("windows")) return t;
  for (const nlohmann::json& w : header_counts["windows"]) {
    double start = w.value("start_s", -1.0), end = w.value("end_s", -1.0);
    if (start < from_s || end > to_s + 1e-9) continue;
    t.windows++;
    for (const auto& [value, n] : w["counts"].items()) {
      int count = n.get<int>();
      t.counts[value] += count;
      if (value != "(failed)" && value != "(none)") t.answered += count;
    }
  }
  return t;
}

RouterOverhead router_overhead(std::istream& in) {
  RouterOverhead o;
  std::vector<double> us;
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    o.lines++;
    nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (!j.is_object() || !j.contains("router_us") || !j["router_us"].is_number()) {
      o.without_router_us++;
      continue;
    }
    us.push_back(j["router_us"].get<double>());
    if (j.contains("chosen") && j["chosen"].is_string()) o.chosen[j["chosen"].get<std::string>()]++;
  }
  o.us = summarize(std::move(us));
  return o;
}

}  // namespace llmpool::bench
