// The arithmetic of bench/routing.sh: how the share of traffic of each model
// moved when one turned slow (from llmpool-loadgen's --record-header
// windows), and the router's own time per request (from llmpool's routing
// decision log). Plain functions of their inputs; no global state.
#pragma once

#include <istream>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "workload.h"

namespace llmpool::bench {

// Requests per header value over the windows of a loadgen run that lie
// wholly inside [from_s, to_s). "(failed)" and "(none)" are kept apart from
// the models: `answered` counts only requests a model answered.
struct TrafficShare {
  double from_s = 0, to_s = 0;
  std::map<std::string, int> counts;  // every value, "(failed)" and "(none)" included
  int answered = 0;                   // counts of real header values
  int windows = 0;                    // windows used

  // counts[value] / answered; 0 when nothing was answered.
  double share(const std::string& value) const;
};

// `header_counts` is the "header_counts" object of a loadgen JSON result.
TrafficShare traffic_share(const nlohmann::json& header_counts, double from_s, double to_s);

// router_us of every decision-log line that has it (a number), and how many
// lines had none or were not JSON.
struct RouterOverhead {
  Summary us;                              // p50, p99, mean, max of router_us
  int lines = 0;
  int without_router_us = 0;
  std::map<std::string, int> chosen;       // decisions per "chosen" model
};
RouterOverhead router_overhead(std::istream& decision_log);

}  // namespace llmpool::bench
