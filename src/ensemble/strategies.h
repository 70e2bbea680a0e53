// Ensemble decisions: pure functions that pick one answer out of several
// candidates' answers, and the metadata that says how (models, votes,
// winner) for the response and the decision log.
//
//   VOTING     majority over normalised text; ties go to the group whose
//              first answer came earliest in candidate order.
//   WEIGHTED   as VOTING, each vote weighted by its model's quality score.
//   CONSENSUS  as VOTING, and escalate = agreement < threshold, where
//              agreement = winner's votes / all candidates (failures count
//              as disagreement).
//   JUDGE      a judge model picks; here only its prompt and the parsing of
//              its answer (the runner makes the call).
//   FASTEST    the first good answer; the runner decides it from timing.
//
// Failed candidates and answers that normalise to "" get no vote. With no
// votes at all there is no winner. Deciders are immutable and thread-safe;
// make_decider() is the factory keyed by the config's strategy string.
#pragma once

#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "common/status.h"

namespace llmpool::ensemble {

enum class StrategyKind { kFastest, kVoting, kWeighted, kConsensus, kJudge };

// "fastest", "voting", "weighted", "consensus", "judge". InvalidArgument
// (param "strategy") for anything else.
Result<StrategyKind> parse_strategy(std::string_view name);
const char* strategy_name(StrategyKind kind);

// Trim, ASCII lower-case, collapse whitespace runs to one space, and strip
// trailing punctuation (. ! ? , ; :) with any whitespace around it.
std::string normalize_answer(std::string_view text);

struct CandidateAnswer {
  std::string model;       // who answered
  std::string text;        // the answer
  bool ok = true;          // false: the candidate failed (error says why)
  std::string error;
  double weight = 1.0;     // quality score, used by WEIGHTED (negative counts as 0)
  double latency_ms = 0.0;
};

struct CandidateVote {
  std::string model;
  bool ok = true;
  std::string error;
  double votes = 0.0;      // support of this candidate's answer group (0 if it had no vote)
  int32_t group = -1;      // answer group, numbered in order of first appearance; -1: no vote
  double latency_ms = 0.0;
};

struct EnsembleDecision {
  std::string strategy;                 // strategy_name()
  std::vector<CandidateVote> candidates;
  std::optional<size_t> winner;         // index into candidates
  std::string winner_model;
  double winner_votes = 0.0;
  double total_votes = 0.0;             // votes cast (count, or weight for WEIGHTED)
  double agreement = 0.0;               // winner's share of all candidates (count-based)
  bool escalate = false;                // CONSENSUS below threshold
  std::string reason;                   // one line for logs and the response
};

EnsembleDecision vote(const std::vector<CandidateAnswer>& answers);
EnsembleDecision weighted_vote(const std::vector<CandidateAnswer>& answers);
EnsembleDecision consensus(const std::vector<CandidateAnswer>& answers, double threshold);

// A decision strategy over gathered answers (VOTING, WEIGHTED, CONSENSUS).
class Decider {
 public:
  virtual ~Decider() = default;
  virtual std::string_view type() const = 0;
  virtual EnsembleDecision decide(const std::vector<CandidateAnswer>& answers) const = 0;
};

struct DeciderOptions {
  double consensus_threshold = 0.6;
};

// "voting", "weighted", "consensus". InvalidArgument (param "strategy") for
// other names, including "fastest" and "judge", which need live providers.
Result<std::unique_ptr<Decider>> make_decider(std::string_view type, const DeciderOptions& options = {});

// JUDGE: the prompt for the judge model. `templ` may use {{question}},
// {{count}} and {{candidates}}; candidates are listed as "Candidate N:"
// blocks, each cut to `max_chars_per_candidate` bytes (on a UTF-8 boundary).
std::string render_judge_prompt(std::string_view templ, std::string_view question,
                                const std::vector<std::string>& candidates, size_t max_chars_per_candidate = 4000);

// JUDGE: the candidate (1-based, 1..count) a judge's answer names, or
// nullopt if it names none unambiguously. Looks, in order, for: a number
// after the last "winner"; an answer that is only a number (e.g. "2",
// "[2]", "Candidate 2."); a number after the first "best", "choice",
// "answer", "choose", "pick", "select" or "candidate"; the only distinct
// in-range number in the text. <think>...</think> blocks are ignored.
std::optional<size_t> parse_judge_choice(std::string_view answer, size_t count);

// {"strategy","candidates":[{"model","ok","votes","group",...}],"winner","winner_model",
//  "votes","total_votes","agreement","escalate","reason"}
void to_json(nlohmann::json& j, const EnsembleDecision& d);

}  // namespace llmpool::ensemble
