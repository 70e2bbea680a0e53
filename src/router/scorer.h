// Scorer: ranks the candidate instances for one request with the composite
// score of seed 001 §6, normalised so every term is in [0, 1]:
//
//   score = w_latency  * L_ref / (L_ref + latency_ms)
//         + w_queue    * 1 / (1 + queue_depth / max(1, parallel))
//         + w_fit      * (preferred tags present / preferred tags)      (1 if none)
//         + w_health   * success_rate * (half_open ? half_open_health : 1)
//         + w_feedback * quality
//
// with latency_ms = ewma_share * EWMA + (1 - ewma_share) * p95 (or
// unknown_latency_ms before the first sample). Hard exclusions, in this
// order, each with a reason for the decision log: a required tag missing;
// the prompt's estimated tokens (+ reserve) not fitting the context window;
// the breaker open (or half-open with its probe taken); the instance
// excluded for a p95 above its threshold (see InstanceStats).
//
// score_candidates() is a pure function of its arguments: thread-safe and
// deterministic. make_candidate() reads a provider and an InstanceStats,
// both thread-safe. Defaults and their reasons: docs/routing.md.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "providers/provider.h"
#include "router/classifier.h"
#include "router/instance_stats.h"

namespace llmpool::router {

struct ScoreWeights {
  double latency = 0.35;
  double queue = 0.25;
  double fit = 0.15;
  double health = 0.15;
  double feedback = 0.10;
};

struct ScoreOptions {
  double latency_ref_ms = 2000.0;      // latency at which the latency term is 0.5
  double ewma_share = 0.5;             // EWMA's share of the blended latency (rest: p95)
  double unknown_latency_ms = 2000.0;  // assumed before the first sample
  double half_open_health = 0.5;       // health factor while the breaker is half-open
};

// What the request needs, usually from a Classification.
struct Requirements {
  std::vector<std::string> required;
  std::vector<std::string> preferred;
  int64_t prompt_tokens = 0;
  int64_t reserve_tokens = 0;  // room to keep for the answer when checking the context window
};
Requirements requirements_from(const Classification& c, int64_t reserve_tokens = 0);

// One candidate instance as the scorer sees it.
struct Candidate {
  std::string id;                   // instance id, unique among candidates
  std::string model;                // the model it serves
  std::vector<std::string> tags;    // capability tags
  int32_t context = 0;              // context window in tokens; 0 = unknown, never excluded for fit
  providers::ProviderStats load;    // from Provider::stats()
  InstanceSnapshot stats;           // from InstanceStats::snapshot()
};
// Reads info() and stats() of `provider` and a snapshot of `stats`. The
// candidate id is the stats' id.
Candidate make_candidate(const providers::Provider& provider, InstanceStats& stats);

struct ScoreTerms {
  double latency = 0.0;
  double queue = 0.0;
  double fit = 0.0;
  double health = 0.0;
  double feedback = 0.0;
};

struct ScoredCandidate {
  std::string id;
  std::string model;
  size_t index = 0;           // position in the input
  double score = 0.0;         // weighted sum of terms; 0 when excluded
  ScoreTerms terms;           // unweighted, each in [0, 1]
  double latency_ms = 0.0;    // the blended latency used
  int64_t queue_depth = 0;
  bool excluded = false;
  std::string reason;         // why excluded ("; "-joined if several); empty otherwise
};

// Scores every candidate. The result has the eligible candidates first,
// best score first (ties: input order), then the excluded ones in input order.
std::vector<ScoredCandidate> score_candidates(const Requirements& req, const std::vector<Candidate>& candidates,
                                              const ScoreWeights& weights = {}, const ScoreOptions& options = {});

// {"id","model","score","terms":{...},"latency_ms","queue_depth","excluded","reason"}:
// one candidate's entry in the routing decision log.
void to_json(nlohmann::json& j, const ScoredCandidate& c);

}  // namespace llmpool::router
