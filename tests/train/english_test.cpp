// The trained demo model answers in English: over 20 questions, at least
// 60% of the answers' words are in Debian's word list (wamerican), and at
// least half of the answers reach 60% on their own. Runs
// the model the demo config serves (LLMPOOL_DEMO_MODEL, made or taken from
// the cache by scripts/demo-models) through the engine, at the API's
// default sampling (temperature 1) with fixed seeds.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <future>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine/local_model.h"

namespace llmpool::engine {
namespace {

constexpr const char* kWordList = "/usr/share/dict/american-english";

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Runs of letters (and inner apostrophes) in `text`.
std::vector<std::string> words_of(const std::string& text) {
  std::vector<std::string> out;
  std::string w;
  auto flush = [&] {
    while (!w.empty() && w.back() == '\'') w.pop_back();
    if (!w.empty()) out.push_back(lower(w));
    w.clear();
  };
  for (char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (std::isalpha(u) || (c == '\'' && !w.empty())) {
      w.push_back(c);
    } else {
      flush();
    }
  }
  flush();
  return out;
}

class EnglishTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::ifstream in(kWordList);
    ASSERT_TRUE(in) << kWordList << " is missing (scripts/setup installs wamerican)";
    dict_ = new std::unordered_set<std::string>();
    for (std::string line; std::getline(in, line);) dict_->insert(lower(line));
  }
  static void TearDownTestSuite() {
    delete dict_;
    dict_ = nullptr;
  }
  static std::unordered_set<std::string>* dict_;
};
std::unordered_set<std::string>* EnglishTest::dict_ = nullptr;

TEST_F(EnglishTest, WordsCountsLettersAndApostrophes) {
  EXPECT_EQ(words_of("Don't panic -- it's 42, Mr. Smith's!"),
            (std::vector<std::string>{"don't", "panic", "it's", "mr", "smith's"}));
}

TEST_F(EnglishTest, TheDemoModelAnswersMostlyInEnglishWords) {
  const char* path = std::getenv("LLMPOOL_DEMO_MODEL");
  ASSERT_TRUE(path != nullptr && *path != '\0') << "set LLMPOOL_DEMO_MODEL (ctest does)";
  LocalModelSpec spec;
  spec.name = "demo";
  spec.path = path;
  spec.context = 1024;
  spec.parallel = 4;
  spec.threads = 2;
  auto model = LocalModel::load(spec);
  ASSERT_TRUE(model.is_ok()) << model.status().to_string();

  const std::vector<std::string> questions = {
      "What is the meaning of life?", "How do I make friends?",     "What is love?",
      "Why is the sky blue?",         "What should I eat today?",   "Tell me about computers.",
      "What is the best advice?",     "How can I be happy?",        "What do you know about work?",
      "Is money important?",          "What makes a good teacher?", "Why do people lie?",
      "What is science?",             "Tell me about your day.",    "What is the secret of success?",
      "How should I live?",           "What is a friend?",          "Why do we sleep?",
      "What is wisdom?",              "Hello, who are you?",
  };
  std::vector<std::future<Result<Completion>>> futures;
  std::vector<std::shared_ptr<std::promise<Result<Completion>>>> promises;
  for (size_t i = 0; i < questions.size(); ++i) {
    GenerateRequest r;
    r.messages = {{"user", questions[i]}};
    r.sampling.max_tokens = 64;
    r.sampling.seed = static_cast<uint32_t>(1000 + i);  // temperature stays at the API default, 1
    auto p = std::make_shared<std::promise<Result<Completion>>>();
    futures.push_back(p->get_future());
    GenerateCallbacks cb;
    cb.on_done = [p](Result<Completion> c) { p->set_value(std::move(c)); };
    (*model)->submit(std::move(r), nullptr, std::move(cb));
    promises.push_back(std::move(p));
  }
  size_t total_words = 0, total_known = 0, answers_over = 0;
  for (size_t i = 0; i < futures.size(); ++i) {
    auto c = futures[i].get();
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    const std::string& answer = c->choices.at(0).text;
    const auto words = words_of(answer);
    size_t known = 0;
    for (const auto& w : words) known += dict_->count(w) > 0 || (w.size() > 2 && w.ends_with("'s") && dict_->count(w.substr(0, w.size() - 2)) > 0);
    total_words += words.size();
    total_known += known;
    std::printf("[%zu/%zu] %s -> %s\n", known, words.size(), questions[i].c_str(), answer.c_str());
    EXPECT_GE(words.size(), 1u) << "answer to '" << questions[i] << "' has no words: " << answer;
    answers_over += static_cast<double>(known) >= 0.6 * static_cast<double>(words.size()) && !words.empty();
  }
  std::printf("overall: %zu of %zu words in the word list (%.1f%%); %zu of %zu answers at 60%% or more\n",
              total_known, total_words, 100.0 * static_cast<double>(total_known) / static_cast<double>(total_words),
              answers_over, questions.size());
  // Over the 20 answers together; single answers at temperature 1 vary.
  EXPECT_GE(static_cast<double>(total_known), 0.6 * static_cast<double>(total_words));
  EXPECT_GE(answers_over, questions.size() / 2);
}

}  // namespace
}  // namespace llmpool::engine
