#include "ensemble/strategies.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

namespace llmpool::ensemble {

namespace {

bool is_space(unsigned char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }
bool is_trailing_punct(unsigned char c) {
  return c == '.' || c == '!' || c == '?' || c == ',' || c == ';' || c == ':';
}

std::string fmt2(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

enum class Weighting { kCount, kWeight };

EnsembleDecision tally(const std::vector<CandidateAnswer>& answers, Weighting weighting, const char* strategy) {
  EnsembleDecision d;
  d.strategy = strategy;
  std::map<std::string, int32_t> group_of;  // normalised text -> group
  std::vector<double> group_votes;
  std::vector<size_t> group_first;          // earliest candidate of each group
  std::vector<int32_t> cand_group(answers.size(), -1);
  size_t valid = 0;

  for (size_t i = 0; i < answers.size(); ++i) {
    const auto& a = answers[i];
    if (!a.ok) continue;
    std::string key = normalize_answer(a.text);
    if (key.empty()) continue;
    ++valid;
    auto [it, inserted] = group_of.emplace(std::move(key), static_cast<int32_t>(group_votes.size()));
    if (inserted) {
      group_votes.push_back(0.0);
      group_first.push_back(i);
    }
    double v = weighting == Weighting::kCount ? 1.0 : std::max(0.0, a.weight);
    group_votes[static_cast<size_t>(it->second)] += v;
    d.total_votes += v;
    cand_group[i] = it->second;
  }

  for (size_t i = 0; i < answers.size(); ++i) {
    CandidateVote cv;
    cv.model = answers[i].model;
    cv.ok = answers[i].ok;
    cv.error = answers[i].ok ? std::string() : answers[i].error;
    if (answers[i].ok && cand_group[i] < 0) cv.error = "empty answer";
    cv.group = cand_group[i];
    cv.votes = cv.group >= 0 ? group_votes[static_cast<size_t>(cv.group)] : 0.0;
    cv.latency_ms = answers[i].latency_ms;
    d.candidates.push_back(std::move(cv));
  }

  if (group_votes.empty()) {
    d.reason = "no candidate answered";
    return d;
  }
  // Groups are numbered in order of first appearance, so the first group
  // with the top score is the earliest: ties go to it.
  size_t best = 0;
  for (size_t g = 1; g < group_votes.size(); ++g)
    if (group_votes[g] > group_votes[best] + 1e-12) best = g;
  d.winner = group_first[best];
  d.winner_model = answers[*d.winner].model;
  d.winner_votes = group_votes[best];

  size_t best_count = 0;
  for (size_t i = 0; i < answers.size(); ++i)
    if (cand_group[i] == static_cast<int32_t>(best)) ++best_count;
  d.agreement = answers.empty() ? 0.0 : static_cast<double>(best_count) / static_cast<double>(answers.size());

  bool tie = false;
  for (size_t g = 0; g < group_votes.size(); ++g)
    if (g != best && std::abs(group_votes[g] - group_votes[best]) <= 1e-12) tie = true;
  d.reason = (weighting == Weighting::kCount ? std::to_string(best_count) : fmt2(d.winner_votes)) + " of " +
             (weighting == Weighting::kCount ? std::to_string(valid) : fmt2(d.total_votes)) + " votes" +
             (tie ? " (tie, earliest answer wins)" : "");
  return d;
}

}  // namespace

Result<StrategyKind> parse_strategy(std::string_view name) {
  if (name == "fastest") return StrategyKind::kFastest;
  if (name == "voting") return StrategyKind::kVoting;
  if (name == "weighted") return StrategyKind::kWeighted;
  if (name == "consensus") return StrategyKind::kConsensus;
  if (name == "judge") return StrategyKind::kJudge;
  return Status::invalid_argument("strategy must be one of fastest, voting, weighted, consensus, judge; got '" +
                                      std::string(name.substr(0, 32)) + "'",
                                  "strategy");
}

const char* strategy_name(StrategyKind kind) {
  switch (kind) {
    case StrategyKind::kFastest: return "fastest";
    case StrategyKind::kVoting: return "voting";
    case StrategyKind::kWeighted: return "weighted";
    case StrategyKind::kConsensus: return "consensus";
    case StrategyKind::kJudge: return "judge";
  }
  return "fastest";
}

std::string normalize_answer(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  bool pending_space = false;
  for (unsigned char c : text) {
    if (is_space(c)) {
      pending_space = !out.empty();
      continue;
    }
    if (pending_space) out.push_back(' ');
    pending_space = false;
    out.push_back(static_cast<char>(c < 0x80 ? std::tolower(c) : c));
  }
  while (!out.empty() && (is_trailing_punct(static_cast<unsigned char>(out.back())) || out.back() == ' ')) {
    out.pop_back();
  }
  return out;
}

EnsembleDecision vote(const std::vector<CandidateAnswer>& answers) {
  return tally(answers, Weighting::kCount, "voting");
}

EnsembleDecision weighted_vote(const std::vector<CandidateAnswer>& answers) {
  return tally(answers, Weighting::kWeight, "weighted");
}

EnsembleDecision consensus(const std::vector<CandidateAnswer>& answers, double threshold) {
  EnsembleDecision d = tally(answers, Weighting::kCount, "consensus");
  d.escalate = d.agreement + 1e-12 < threshold;
  d.reason = "agreement " + fmt2(d.agreement) + (d.escalate ? " below " : " >= ") + fmt2(threshold) +
             (d.escalate ? ": escalate" : "") + (d.winner ? "" : " (no candidate answered)");
  return d;
}

namespace {

class VotingDecider final : public Decider {
 public:
  std::string_view type() const override { return "voting"; }
  EnsembleDecision decide(const std::vector<CandidateAnswer>& a) const override { return vote(a); }
};

class WeightedDecider final : public Decider {
 public:
  std::string_view type() const override { return "weighted"; }
  EnsembleDecision decide(const std::vector<CandidateAnswer>& a) const override { return weighted_vote(a); }
};

class ConsensusDecider final : public Decider {
 public:
  explicit ConsensusDecider(double threshold) : threshold_(threshold) {}
  std::string_view type() const override { return "consensus"; }
  EnsembleDecision decide(const std::vector<CandidateAnswer>& a) const override { return consensus(a, threshold_); }

 private:
  double threshold_;
};

}  // namespace

Result<std::unique_ptr<Decider>> make_decider(std::string_view type, const DeciderOptions& options) {
  if (type == "voting") return std::unique_ptr<Decider>(new VotingDecider());
  if (type == "weighted") return std::unique_ptr<Decider>(new WeightedDecider());
  if (type == "consensus") {
    if (!(options.consensus_threshold > 0.0 && options.consensus_threshold <= 1.0))
      return Status::invalid_argument("consensus threshold must be in (0, 1]", "consensus_threshold");
    return std::unique_ptr<Decider>(new ConsensusDecider(options.consensus_threshold));
  }
  return Status::invalid_argument("no decision strategy '" + std::string(type.substr(0, 32)) +
                                      "' (voting, weighted, consensus)",
                                  "strategy");
}

std::string render_judge_prompt(std::string_view templ, std::string_view question,
                                const std::vector<std::string>& candidates, size_t max_chars) {
  std::string list;
  for (size_t i = 0; i < candidates.size(); ++i) {
    std::string_view c = candidates[i];
    bool cut = false;
    if (c.size() > max_chars) {
      size_t end = max_chars;
      while (end > 0 && (static_cast<unsigned char>(c[end]) & 0xC0) == 0x80) --end;
      c = c.substr(0, end);
      cut = true;
    }
    list += "Candidate " + std::to_string(i + 1) + ":\n";
    list += c;
    if (cut) list += " [...]";
    list += "\n\n";
  }
  while (!list.empty() && list.back() == '\n') list.pop_back();

  std::string out;
  out.reserve(templ.size() + list.size() + question.size());
  size_t i = 0;
  while (i < templ.size()) {
    if (templ.compare(i, 2, "{{") == 0) {
      size_t end = templ.find("}}", i + 2);
      if (end != std::string_view::npos) {
        std::string_view key = templ.substr(i + 2, end - i - 2);
        if (key == "question") {
          out += question;
          i = end + 2;
          continue;
        }
        if (key == "candidates") {
          out += list;
          i = end + 2;
          continue;
        }
        if (key == "count") {
          out += std::to_string(candidates.size());
          i = end + 2;
          continue;
        }
      }
    }
    out.push_back(templ[i]);
    ++i;
  }
  return out;
}

namespace {

struct Number {
  size_t pos;
  size_t end;
  long long value;
};

// Stand-alone integers: not part of a word ("gpt4") or a decimal ("1.5").
std::vector<Number> integers(std::string_view s) {
  std::vector<Number> out;
  size_t i = 0;
  while (i < s.size()) {
    if (!std::isdigit(static_cast<unsigned char>(s[i]))) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
    bool glued_before = i > 0 && (std::isalpha(static_cast<unsigned char>(s[i - 1])) || s[i - 1] == '.');
    bool decimal_after = j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]));
    bool glued_after = j < s.size() && std::isalpha(static_cast<unsigned char>(s[j]));
    if (!glued_before && !decimal_after && !glued_after && j - i <= 6) {
      out.push_back({i, j, std::stoll(std::string(s.substr(i, j - i)))});
    }
    i = j;
  }
  return out;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (auto& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string strip_think(std::string_view s) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    size_t open = s.find("<think>", i);
    if (open == std::string_view::npos) {
      out += s.substr(i);
      break;
    }
    out += s.substr(i, open - i);
    size_t close = s.find("</think>", open);
    if (close == std::string_view::npos) break;  // unfinished thinking: nothing after it
    i = close + 8;
  }
  return out;
}

// The first in-range number within `window` bytes after `from`.
std::optional<size_t> number_after(const std::vector<Number>& nums, size_t from, size_t window, size_t count) {
  for (const auto& n : nums) {
    if (n.pos < from) continue;
    if (n.pos > from + window) break;
    if (n.value >= 1 && static_cast<size_t>(n.value) <= count) return static_cast<size_t>(n.value);
    return std::nullopt;  // the nearest number is out of range: not this mention
  }
  return std::nullopt;
}

}  // namespace

std::optional<size_t> parse_judge_choice(std::string_view answer, size_t count) {
  if (count == 0) return std::nullopt;
  const std::string text = lower(strip_think(answer));
  const std::vector<Number> nums = integers(text);
  if (nums.empty()) return std::nullopt;
  constexpr size_t kWindow = 30;

  // 1. "winner": the format the template asks for; the last one is the verdict.
  for (size_t pos = text.rfind("winner"); pos != std::string::npos;) {
    if (auto n = number_after(nums, pos + 6, kWindow, count)) return n;
    if (pos == 0) break;
    pos = text.rfind("winner", pos - 1);
  }

  // 2. Nothing but a number, maybe dressed: "2", "[2]", "**2**", "Candidate 2."
  {
    std::string rest;
    for (char c : text)
      if (std::isalnum(static_cast<unsigned char>(c))) rest.push_back(c);
    if (rest.rfind("candidate", 0) == 0) rest = rest.substr(9);
    if (nums.size() == 1 && rest == std::to_string(nums[0].value) && nums[0].value >= 1 &&
        static_cast<size_t>(nums[0].value) <= count)
      return static_cast<size_t>(nums[0].value);
  }

  // 3. A number right after a word that names the choice; the earliest mention.
  std::optional<std::pair<size_t, size_t>> earliest;  // (position, choice)
  for (const char* kw : {"best", "choice", "answer", "choose", "chose", "pick", "select", "candidate"}) {
    std::string k(kw);
    for (size_t pos = text.find(k); pos != std::string::npos; pos = text.find(k, pos + 1)) {
      if (auto n = number_after(nums, pos + k.size(), kWindow, count)) {
        if (!earliest || pos < earliest->first) earliest = std::make_pair(pos, *n);
        break;
      }
    }
  }
  if (earliest) return earliest->second;

  // 4. The only distinct in-range number.
  std::set<long long> distinct;
  for (const auto& n : nums)
    if (n.value >= 1 && static_cast<size_t>(n.value) <= count) distinct.insert(n.value);
  if (distinct.size() == 1) return static_cast<size_t>(*distinct.begin());
  return std::nullopt;
}

void to_json(nlohmann::json& j, const EnsembleDecision& d) {
  nlohmann::json cands = nlohmann::json::array();
  for (const auto& c : d.candidates) {
    nlohmann::json e{{"model", c.model}, {"ok", c.ok}, {"votes", c.votes}, {"group", c.group},
                     {"latency_ms", c.latency_ms}};
    if (!c.error.empty()) e["error"] = c.error;
    cands.push_back(std::move(e));
  }
  j = nlohmann::json{{"strategy", d.strategy},
                     {"candidates", std::move(cands)},
                     {"winner", d.winner ? nlohmann::json(*d.winner) : nlohmann::json(nullptr)},
                     {"winner_model", d.winner_model},
                     {"votes", d.winner_votes},
                     {"total_votes", d.total_votes},
                     {"agreement", d.agreement},
                     {"escalate", d.escalate},
                     {"reason", d.reason}};
}

}  // namespace llmpool::ensemble
