#include "router/scorer.h"

#include <algorithm>
#include <cmath>

#include <nlohmann/json.hpp>

namespace llmpool::router {

namespace {

bool has_tag(const std::vector<std::string>& tags, const std::string& tag) {
  return std::find(tags.begin(), tags.end(), tag) != tags.end();
}

void add_reason(std::string& reasons, const std::string& r) {
  if (!reasons.empty()) reasons += "; ";
  reasons += r;
}

std::string fmt_ms(double ms) { return std::to_string(static_cast<int64_t>(std::llround(ms))) + " ms"; }

}  // namespace

Requirements requirements_from(const Classification& c, int64_t reserve_tokens) {
  Requirements r;
  r.required = c.required;
  r.preferred = c.preferred;
  r.prompt_tokens = c.features.estimated_tokens;
  r.reserve_tokens = reserve_tokens;
  return r;
}

Candidate make_candidate(const providers::Provider& provider, InstanceStats& stats) {
  Candidate c;
  const providers::ModelInfo& info = provider.info();
  c.id = stats.id();
  c.model = info.name;
  c.tags = info.capabilities;
  c.context = info.context;
  c.load = provider.stats();
  c.stats = stats.snapshot();
  return c;
}

std::vector<ScoredCandidate> score_candidates(const Requirements& req, const std::vector<Candidate>& candidates,
                                              const ScoreWeights& w, const ScoreOptions& o) {
  std::vector<ScoredCandidate> out;
  out.reserve(candidates.size());
  const double ref = o.latency_ref_ms > 0 ? o.latency_ref_ms : 1.0;
  const double share = std::clamp(o.ewma_share, 0.0, 1.0);

  for (size_t i = 0; i < candidates.size(); ++i) {
    const Candidate& c = candidates[i];
    ScoredCandidate s;
    s.id = c.id;
    s.model = c.model;
    s.index = i;

    // Hard exclusions.
    std::string missing;
    for (const auto& tag : req.required) {
      if (!has_tag(c.tags, tag)) missing += (missing.empty() ? "" : ",") + tag;
    }
    if (!missing.empty()) add_reason(s.reason, "missing required tags: " + missing);
    const int64_t needed = req.prompt_tokens + std::max<int64_t>(0, req.reserve_tokens);
    if (c.context > 0 && needed > c.context) {
      add_reason(s.reason, "prompt needs ~" + std::to_string(needed) + " tokens, context is " +
                               std::to_string(c.context));
    }
    if (!c.stats.breaker_allows) {
      add_reason(s.reason, c.stats.breaker == qos::BreakerState::kHalfOpen ? "breaker half_open, probe in flight"
                                                                            : "breaker open");
    }
    if (c.stats.slow_excluded) add_reason(s.reason, "p95 latency " + fmt_ms(c.stats.p95_ms) + " over threshold");

    // Terms (computed for excluded candidates too: the log shows them).
    double latency;
    if (c.stats.samples > 0) {
      latency = share * c.stats.ewma_ms + (1.0 - share) * c.stats.p95_ms;
    } else if (c.stats.ewma_ms > 0) {
      latency = c.stats.ewma_ms;  // the window aged out; the EWMA is all that is left
    } else {
      latency = std::max(0.0, o.unknown_latency_ms);
    }
    s.latency_ms = latency;
    s.terms.latency = ref / (ref + std::max(0.0, latency));

    s.queue_depth = std::max<int64_t>(c.load.queued + c.load.active_sequences, c.stats.in_flight);
    double slots = static_cast<double>(std::max<int64_t>(1, c.load.parallel));
    s.terms.queue = 1.0 / (1.0 + static_cast<double>(std::max<int64_t>(0, s.queue_depth)) / slots);

    if (req.preferred.empty()) {
      s.terms.fit = 1.0;
    } else {
      size_t hit = 0;
      for (const auto& tag : req.preferred) hit += has_tag(c.tags, tag) ? 1 : 0;
      s.terms.fit = static_cast<double>(hit) / static_cast<double>(req.preferred.size());
    }

    double health = std::clamp(c.stats.success_rate, 0.0, 1.0);
    if (c.stats.breaker == qos::BreakerState::kHalfOpen) health *= std::clamp(o.half_open_health, 0.0, 1.0);
    s.terms.health = health;
    s.terms.feedback = std::clamp(c.stats.quality, 0.0, 1.0);

    s.excluded = !s.reason.empty();
    if (!s.excluded) {
      s.score = w.latency * s.terms.latency + w.queue * s.terms.queue + w.fit * s.terms.fit +
                w.health * s.terms.health + w.feedback * s.terms.feedback;
    }
    out.push_back(std::move(s));
  }

  std::stable_sort(out.begin(), out.end(), [](const ScoredCandidate& a, const ScoredCandidate& b) {
    if (a.excluded != b.excluded) return !a.excluded;
    if (a.excluded) return false;  // excluded keep input order
    return a.score > b.score;
  });
  return out;
}

void to_json(nlohmann::json& j, const ScoredCandidate& c) {
  j = nlohmann::json{
      {"id", c.id},
      {"model", c.model},
      {"score", c.score},
      {"terms",
       {{"latency", c.terms.latency},
        {"queue", c.terms.queue},
        {"fit", c.terms.fit},
        {"health", c.terms.health},
        {"feedback", c.terms.feedback}}},
      {"latency_ms", c.latency_ms},
      {"queue_depth", c.queue_depth},
      {"excluded", c.excluded},
  };
  if (c.excluded) j["reason"] = c.reason;
}

}  // namespace llmpool::router
