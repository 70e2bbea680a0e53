#include "ensemble/strategies.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

namespace llmpool::ensemble {
namespace {

CandidateAnswer ans(std::string model, std::string text, double weight = 1.0) {
  CandidateAnswer a;
  a.model = std::move(model);
  a.text = std::move(text);
  a.weight = weight;
  return a;
}
CandidateAnswer failed(std::string model, std::string error) {
  CandidateAnswer a;
  a.model = std::move(model);
  a.ok = false;
  a.error = std::move(error);
  return a;
}

class StrategiesTest : public ::testing::Test {};

TEST_F(StrategiesTest, NormalizeTrimsLowercasesCollapsesAndStripsTrailingPunctuation) {
  EXPECT_EQ(normalize_answer("  Hello,   World!!  "), "hello, world");
  EXPECT_EQ(normalize_answer("Paris.\n"), "paris");
  EXPECT_EQ(normalize_answer("a\t\tb\r\nc ?"), "a b c");
  EXPECT_EQ(normalize_answer("...!"), "");
  EXPECT_EQ(normalize_answer(""), "");
  EXPECT_EQ(normalize_answer("\xc3\x87" "A VA?"), "\xc3\x87" "a va");  // non-ASCII bytes stay as they are
  EXPECT_EQ(normalize_answer("3.14"), "3.14");
}

TEST_F(StrategiesTest, ParsesStrategyNames) {
  for (auto k : {StrategyKind::kFastest, StrategyKind::kVoting, StrategyKind::kWeighted, StrategyKind::kConsensus,
                 StrategyKind::kJudge}) {
    EXPECT_EQ(*parse_strategy(strategy_name(k)), k);
  }
  auto bad = parse_strategy("majority");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.status().param(), "strategy");
}

TEST_F(StrategiesTest, VotingPicksTheMajorityOfNormalisedAnswers) {
  auto d = vote({ans("a", "Lyon"), ans("b", "Paris."), ans("c", "  paris"), ans("d", "Nice")});
  ASSERT_TRUE(d.winner);
  EXPECT_EQ(*d.winner, 1u);  // the earliest answer of the winning group
  EXPECT_EQ(d.winner_model, "b");
  EXPECT_DOUBLE_EQ(d.winner_votes, 2.0);
  EXPECT_DOUBLE_EQ(d.total_votes, 4.0);
  EXPECT_DOUBLE_EQ(d.agreement, 0.5);
  EXPECT_EQ(d.strategy, "voting");
  EXPECT_EQ(d.candidates[2].group, d.candidates[1].group);
  EXPECT_DOUBLE_EQ(d.candidates[2].votes, 2.0);
  EXPECT_DOUBLE_EQ(d.candidates[0].votes, 1.0);
  EXPECT_EQ(d.reason, "2 of 4 votes");
}

TEST_F(StrategiesTest, VotingTieGoesToTheEarliestAnswer) {
  auto d = vote({ans("a", "x"), ans("b", "y"), ans("c", "Y"), ans("d", "X")});
  EXPECT_EQ(*d.winner, 0u);
  EXPECT_EQ(d.reason, "2 of 4 votes (tie, earliest answer wins)");
}

TEST_F(StrategiesTest, FailedAndEmptyAnswersGetNoVote) {
  auto d = vote({failed("a", "timeout"), ans("b", " . "), ans("c", "42"), failed("d", "503")});
  EXPECT_EQ(*d.winner, 2u);
  EXPECT_DOUBLE_EQ(d.total_votes, 1.0);
  EXPECT_DOUBLE_EQ(d.agreement, 0.25);  // failures count as disagreement
  EXPECT_EQ(d.candidates[0].error, "timeout");
  EXPECT_EQ(d.candidates[1].error, "empty answer");
  EXPECT_EQ(d.candidates[1].group, -1);
}

TEST_F(StrategiesTest, NoVotesMeansNoWinner) {
  auto d = vote({failed("a", "x"), failed("b", "y")});
  EXPECT_FALSE(d.winner);
  EXPECT_EQ(d.reason, "no candidate answered");
  EXPECT_FALSE(vote({}).winner);
}

TEST_F(StrategiesTest, WeightedVotesFollowQuality) {
  std::vector<CandidateAnswer> a{ans("good", "A", 0.9), ans("meh1", "B", 0.3), ans("meh2", "b", 0.3)};
  auto w = weighted_vote(a);
  EXPECT_EQ(w.winner_model, "good");
  EXPECT_DOUBLE_EQ(w.winner_votes, 0.9);
  EXPECT_NEAR(w.total_votes, 1.5, 1e-12);
  EXPECT_EQ(w.reason, "0.90 of 1.50 votes");
  EXPECT_EQ(vote(a).winner_model, "meh1");  // unweighted, B wins 2:1
  a[0].weight = -5;                         // negative counts as zero
  EXPECT_EQ(weighted_vote(a).winner_model, "meh1");
}

TEST_F(StrategiesTest, ConsensusEscalatesBelowTheThreshold) {
  auto low = consensus({ans("a", "1"), ans("b", "2"), ans("c", "3")}, 0.6);
  EXPECT_TRUE(low.escalate);
  EXPECT_EQ(*low.winner, 0u);  // still the best guess
  EXPECT_EQ(low.reason, "agreement 0.33 below 0.60: escalate");
  auto ok = consensus({ans("a", "1"), ans("b", "2"), ans("c", "2")}, 0.6);
  EXPECT_FALSE(ok.escalate);
  EXPECT_EQ(ok.reason, "agreement 0.67 >= 0.60");
  auto exact = consensus({ans("a", "1"), ans("b", "1"), ans("c", "2"), ans("d", "2"), ans("e", "1")}, 0.6);
  EXPECT_FALSE(exact.escalate);  // 3/5 = 0.6 meets 0.6
  auto failures = consensus({ans("a", "1"), ans("b", "1"), failed("c", "x")}, 0.7);
  EXPECT_TRUE(failures.escalate);  // 2/3: the failure counts against
}

TEST_F(StrategiesTest, FactoryBuildsDecidersByType) {
  for (const char* t : {"voting", "weighted", "consensus"}) {
    auto d = make_decider(t);
    ASSERT_TRUE(d) << t;
    EXPECT_EQ((*d)->type(), t);
  }
  auto c = make_decider("consensus", {0.9});
  EXPECT_TRUE((*c)->decide({ans("a", "1"), ans("b", "1"), ans("c", "2")}).escalate);
  EXPECT_EQ(make_decider("judge").status().param(), "strategy");
  EXPECT_EQ(make_decider("fastest").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(make_decider("consensus", {0.0}).status().param(), "consensus_threshold");
  EXPECT_EQ(make_decider("consensus", {1.5}).status().param(), "consensus_threshold");
}

TEST_F(StrategiesTest, RendersTheJudgePrompt) {
  std::string p = render_judge_prompt("Q: {{question}}\nN={{count}}\n{{candidates}}\n{{unknown}}", "2+2?",
                                      {"four", "5"});
  EXPECT_EQ(p, "Q: 2+2?\nN=2\nCandidate 1:\nfour\n\nCandidate 2:\n5\n{{unknown}}");
}

TEST_F(StrategiesTest, JudgePromptCutsLongCandidatesOnACharacterBoundary) {
  std::string p = render_judge_prompt("{{candidates}}", "", {"ab\xc3\xa9" "cd"}, 3);  // the cut lands inside é
  EXPECT_EQ(p, "Candidate 1:\nab [...]");
}

TEST_F(StrategiesTest, ParsesTheJudgesChoiceRobustly) {
  EXPECT_EQ(parse_judge_choice(R"({"winner": 2})", 3), 2u);
  EXPECT_EQ(parse_judge_choice("```json\n{ \"winner\" : 3 }\n```", 3), 3u);
  EXPECT_EQ(parse_judge_choice("2", 3), 2u);
  EXPECT_EQ(parse_judge_choice(" [3] ", 3), 3u);
  EXPECT_EQ(parse_judge_choice("**1**", 3), 1u);
  EXPECT_EQ(parse_judge_choice("Candidate 2.", 3), 2u);
  EXPECT_EQ(parse_judge_choice("The best answer is candidate 3, because it is complete.", 3), 3u);
  EXPECT_EQ(parse_judge_choice("I choose candidate #2", 3), 2u);
  EXPECT_EQ(parse_judge_choice("Candidate 1 is wrong, 3 is vague. {\"winner\": 2}", 3), 2u);
  EXPECT_EQ(parse_judge_choice("<think>1 looks fine, or maybe 3</think>{\"winner\": 3}", 3), 3u);
  EXPECT_EQ(parse_judge_choice("gpt4 would say 2", 3), 2u);  // "4" is part of a word
  EXPECT_EQ(parse_judge_choice("WINNER: 1", 2), 1u);
}

TEST_F(StrategiesTest, JudgesChoiceIsNulloptWhenAmbiguousOrOutOfRange) {
  EXPECT_FALSE(parse_judge_choice("I cannot decide.", 3));
  EXPECT_FALSE(parse_judge_choice(R"({"winner": 7})", 3));
  EXPECT_FALSE(parse_judge_choice("Both 1 and 2 are fine", 3));
  EXPECT_FALSE(parse_judge_choice("answer: 1.5", 3));
  EXPECT_FALSE(parse_judge_choice("<think>1 2 3", 3));  // thinking that never ended
  EXPECT_FALSE(parse_judge_choice("1", 0));
}

TEST_F(StrategiesTest, DecisionSerialisesForTheResponse) {
  auto d = vote({ans("a", "x"), failed("b", "down"), ans("c", "x")});
  nlohmann::json j = d;
  EXPECT_EQ(j["strategy"], "voting");
  EXPECT_EQ(j["winner"], 0);
  EXPECT_EQ(j["winner_model"], "a");
  EXPECT_EQ(j["votes"], 2.0);
  EXPECT_EQ(j["candidates"].size(), 3u);
  EXPECT_EQ(j["candidates"][1]["error"], "down");
  EXPECT_EQ(j["candidates"][1]["ok"], false);
  EXPECT_FALSE(j["escalate"].get<bool>());
  nlohmann::json none = vote({});
  EXPECT_TRUE(none["winner"].is_null());
}

}  // namespace
}  // namespace llmpool::ensemble
