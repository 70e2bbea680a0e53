// Per-request isolation in the engine, the slot bookkeeping of n > 1
// requests at every phase, and preparation off the caller's thread. Loads
// the generated `tiny` model (made by the make_test_models fixture). Every
// model here checks its slot invariants after each step (a break aborts).
#include "engine/local_model.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <atomic>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>
#include <thread>

namespace llmpool::engine {
namespace {

const std::string kTiny = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-q8_0.gguf";

// One request's answer: how often on_done ran, on which thread, and what it said.
struct Answer {
  std::atomic<int32_t> calls{0};
  std::atomic<int32_t> deltas{0};
  std::mutex mu;
  std::optional<Result<Completion>> result;  // the first one
  std::thread::id thread;
  std::promise<void> first;
  std::future<void> first_future = first.get_future();
  std::once_flag streaming_once;
  std::promise<void> streaming;  // set at the first delta

  GenerateCallbacks callbacks(std::function<void(const Delta&)> on_delta = nullptr) {
    GenerateCallbacks cb;
    cb.on_delta = [this, on_delta = std::move(on_delta)](Delta d) {
      deltas.fetch_add(1);
      std::call_once(streaming_once, [this] { streaming.set_value(); });
      if (on_delta) on_delta(d);
    };
    cb.on_done = [this](Result<Completion> r) {
      bool first_call = false;
      {
        std::lock_guard<std::mutex> lock(mu);
        if (!result) {
          result = std::move(r);
          thread = std::this_thread::get_id();
          first_call = true;
        }
      }
      calls.fetch_add(1);
      if (first_call) first.set_value();
    };
    return cb;
  }
  bool answered() const { return calls.load() > 0; }
  const Result<Completion>& wait() {
    first_future.wait();
    return *result;
  }
};

GenerateRequest request(std::string text, int32_t max_tokens) {
  GenerateRequest r;
  r.messages = {{"user", std::move(text)}};
  r.sampling.temperature = 0.0f;
  r.sampling.max_tokens = max_tokens;
  return r;
}

GenerateRequest endless(std::string text) {
  auto r = request(std::move(text), 100000);
  r.sampling.ignore_eos = true;
  return r;
}

std::string words(int32_t n, const std::string& word = "lorem") {
  std::string s;
  for (int32_t i = 0; i < n; ++i) s += word + " " + std::to_string(i % 10) + " ";
  return s;
}

LocalModelSpec tiny_spec(int32_t context, int32_t parallel, int32_t batch, int32_t max_queue) {
  LocalModelSpec spec;
  spec.name = "tiny";
  spec.context = context;
  spec.parallel = parallel;
  spec.batch = batch;
  spec.max_queue = max_queue;
  return spec;
}

std::unique_ptr<LocalModel> load(LocalModelSpec spec) {
  spec.path = kTiny;
  spec.threads = 1;
  spec.check_invariants = true;
  auto m = LocalModel::load(spec);
  EXPECT_TRUE(m.is_ok()) << m.status().to_string();
  return m.is_ok() ? std::move(m).value() : nullptr;
}

// Waits (with a ceiling, not a timing assertion) until `cond` holds.
template <class Cond>
bool eventually(Cond cond) {
  for (int i = 0; i < 3000; ++i) {
    if (cond()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return cond();
}

// The vocabulary's size: the first id detokenize() refuses.
int32_t vocab_size(const LocalModel& m) {
  int32_t lo = 1, hi = 1 << 20;  // lo is a token, hi is not
  while (hi - lo > 1) {
    int32_t mid = lo + (hi - lo) / 2;
    (m.detokenize({mid}).is_ok() ? lo : hi) = mid;
  }
  return hi;
}

// Starts a request that generates until cancelled, and waits for its first token.
void start_endless(LocalModel& m, std::string text, CancelTokenPtr cancel, Answer& a) {
  auto streaming = a.streaming.get_future();
  m.submit(endless(std::move(text)), std::move(cancel), a.callbacks());
  streaming.wait();
}

bool idle(const LocalModel& m) {
  auto s = m.stats();
  return s.active_sequences == 0 && s.queued == 0;
}

// The model still serves an ordinary request, with the right token count.
void expect_serves(LocalModel& m) {
  Answer a;
  auto req = request("Still there?", 5);
  req.sampling.ignore_eos = true;
  m.submit(req, nullptr, a.callbacks());
  const auto& r = a.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(r->usage.completion_tokens, 5);
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kLength);
}

class LocalModelIsolationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    model_ = load(tiny_spec(2048, 4, 8, 16));  // batch 8: long prompts take many steps to prefill
    ASSERT_TRUE(model_);
  }

  std::unique_ptr<LocalModel> model_;
};

TEST_F(LocalModelIsolationTest, GrammarWithIgnoreEosEndsWhenTheGrammarIsComplete) {
  // Before: the end-of-generation ban left the complete grammar no token, and
  // the step failed with "Unexpected empty grammar stack" (500).
  for (const char* schema : {R"({"type":"boolean"})",
                             R"({"type":"object","properties":{"ok":{"type":"boolean"}},"required":["ok"],"additionalProperties":false})"}) {
    Answer a;
    auto req = request("Answer in JSON", 300);
    req.sampling.ignore_eos = true;
    req.sampling.json_schema = schema;
    model_->submit(req, nullptr, a.callbacks());
    const auto& r = a.wait();
    ASSERT_TRUE(r.is_ok()) << schema << ": " << r.status().to_string();
    EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kStop) << schema;
    EXPECT_LT(r->usage.completion_tokens, 300) << schema;
    auto j = nlohmann::json::parse(r->choices[0].text, nullptr, false);
    EXPECT_FALSE(j.is_discarded()) << schema << ": " << r->choices[0].text;
  }
  EXPECT_TRUE(eventually([&] { return idle(*model_); }));
}

TEST_F(LocalModelIsolationTest, APromptThatCannotFitIsRefusedBeforeItIsTokenized) {
  // Megabytes of text are refused from their length alone (the longest token
  // bounds how few tokens they can be); a prompt just over the context is
  // still counted exactly.
  Answer huge, over;
  model_->submit(request(words(200000), 4), nullptr, huge.callbacks());
  model_->submit(request(words(800), 4), nullptr, over.callbacks());
  const auto& rh = huge.wait();
  ASSERT_FALSE(rh.is_ok());
  EXPECT_EQ(rh.status().error_code(), "context_length_exceeded");
  EXPECT_NE(rh.status().message().find("at least"), std::string::npos) << rh.status().message();
  const auto& ro = over.wait();
  ASSERT_FALSE(ro.is_ok());
  EXPECT_EQ(ro.status().error_code(), "context_length_exceeded");
  EXPECT_EQ(ro.status().message().find("at least"), std::string::npos) << ro.status().message();
  expect_serves(*model_);
}

TEST_F(LocalModelIsolationTest, AConstraintThatFailsEndsOnlyItsOwnRequest) {
  // A runs on; B's grammar meets a bias that bans every token, so B cannot
  // go on. Before, that threw out of the step and failed A with it.
  Answer a;
  auto cancel_a = std::make_shared<CancelToken>();
  start_endless(*model_, "Keep talking", cancel_a, a);

  Answer b;
  auto req = request("Answer in JSON", 20);
  req.sampling.json_schema = R"({"type":"boolean"})";
  const int32_t n_vocab = vocab_size(*model_);
  for (int32_t t = 0; t < n_vocab; ++t) req.sampling.logit_bias.push_back({t, -INFINITY});
  model_->submit(req, nullptr, b.callbacks());
  const auto& rb = b.wait();
  ASSERT_FALSE(rb.is_ok());
  EXPECT_EQ(rb.status().code(), StatusCode::kInvalidArgument) << rb.status().to_string();
  EXPECT_EQ(rb.status().param(), "response_format");

  EXPECT_FALSE(a.answered()) << "the other request ended with the failing one";
  const int32_t before = a.deltas.load();
  EXPECT_TRUE(eventually([&] { return a.deltas.load() > before + 3; })) << "the other request stopped generating";
  cancel_a->cancel();
  const auto& ra = a.wait();
  ASSERT_TRUE(ra.is_ok()) << ra.status().to_string();
  EXPECT_EQ(ra->choices[0].finish_reason, FinishReason::kCancelled);
  EXPECT_TRUE(eventually([&] { return idle(*model_); }));
  EXPECT_EQ(model_->stats().active_sequences, 0);
  expect_serves(*model_);
}

TEST_F(LocalModelIsolationTest, SeveralChoicesCancelledDuringPrefillEndOnce) {
  // The leader of an n = 2 request must sit on a higher slot than its
  // follower: the cancellation then reaches the follower first, and again
  // through its leader. Before, that counted the follower down twice.
  Answer r0;
  auto cancel0 = std::make_shared<CancelToken>();
  start_endless(*model_, "zebra crossing", cancel0, r0);  // r0 holds slot 0
  const std::string shared = words(40, "apple");
  Answer r1;
  model_->submit(request(shared, 2), nullptr, r1.callbacks());  // slot 1, which keeps its prefix
  ASSERT_TRUE(r1.wait().is_ok());
  cancel0->cancel();
  ASSERT_TRUE(r0.wait().is_ok());
  ASSERT_TRUE(eventually([&] { return idle(*model_); }));

  Answer j;
  auto cancel = std::make_shared<CancelToken>();
  auto req = request(shared + words(180, "pear"), 20);
  req.n = 2;
  model_->submit(req, cancel, j.callbacks());
  ASSERT_TRUE(eventually([&] { return model_->stats().active_sequences == 2; }));
  cancel->cancel();  // the prompt takes about 200 steps of 8 tokens
  const auto& r = j.wait();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->choices.size(), 2u);
  EXPECT_EQ(r->usage.completion_tokens, 0) << "the cancellation came after the prefill";
  for (const auto& c : r->choices) EXPECT_EQ(c.finish_reason, FinishReason::kCancelled);
  EXPECT_TRUE(eventually([&] { return idle(*model_); }));
  EXPECT_EQ(model_->stats().active_sequences, 0);
  EXPECT_EQ(j.calls.load(), 1);
  expect_serves(*model_);
  EXPECT_EQ(j.calls.load(), 1);
}

TEST_F(LocalModelIsolationTest, SeveralChoicesCancelledAtEveryPhaseAreAnsweredOnce) {
  std::vector<std::unique_ptr<Answer>> answers;
  std::vector<CancelTokenPtr> cancels;
  answers.reserve(32);  // callbacks on the engine thread read these: no reallocation
  cancels.reserve(32);
  auto submit = [&](GenerateRequest req, std::function<void(const Delta&)> on_delta = nullptr) {
    answers.push_back(std::make_unique<Answer>());
    cancels.push_back(std::make_shared<CancelToken>());
    req.n = 2;
    model_->submit(std::move(req), cancels.back(), answers.back()->callbacks(std::move(on_delta)));
    return answers.size() - 1;
  };

  // Cancelled at its first token, from the engine thread.
  // Its index is known before submit(): the callback may run before submit()
  // returns, so it must not read a variable that the return assigns.
  const size_t first_token = answers.size();
  EXPECT_EQ(submit(endless("first token"), [&](const Delta&) { cancels[first_token]->cancel(); }), first_token);
  const auto& r_first = answers[first_token]->wait();
  ASSERT_TRUE(r_first.is_ok()) << r_first.status().to_string();
  EXPECT_EQ(r_first->choices[0].finish_reason, FinishReason::kCancelled);

  // Mid-decode: two requests (all four sequences) generating; a third waits.
  std::atomic<int32_t> seen{0};
  size_t decoding = submit(endless("mid decode"), [&](const Delta&) { seen.fetch_add(1); });
  size_t holder = submit(endless("holds two sequences"));
  size_t queued = submit(endless("waits in the queue"));
  ASSERT_TRUE(eventually([&] { return seen.load() >= 10 && model_->stats().queued == 1; }));
  cancels[queued]->cancel();  // queued
  const auto& r_queued = answers[queued]->wait();
  ASSERT_TRUE(r_queued.is_ok()) << r_queued.status().to_string();
  for (const auto& c : r_queued->choices) EXPECT_EQ(c.finish_reason, FinishReason::kCancelled);
  cancels[decoding]->cancel();  // mid-decode
  ASSERT_TRUE(answers[decoding]->wait().is_ok());

  // Just admitted, and mid-prefill of a long prompt, while `holder` generates.
  for (int32_t delay_steps : {0, 5, 40}) {
    size_t prefill = submit(request(words(200, "prefill" + std::to_string(delay_steps)), 20));
    ASSERT_TRUE(eventually([&] { return model_->stats().active_sequences == 4; }));
    const int32_t base = answers[holder]->deltas.load();
    ASSERT_TRUE(eventually([&] { return answers[holder]->deltas.load() >= base + delay_steps; }));
    cancels[prefill]->cancel();
    const auto& r = answers[prefill]->wait();
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kCancelled);
  }
  cancels[holder]->cancel();

  // After it finished: a cancellation changes nothing.
  size_t finished = submit(request("short", 3));
  ASSERT_TRUE(answers[finished]->wait().is_ok());
  cancels[finished]->cancel();

  ASSERT_TRUE(eventually([&] { return idle(*model_); }));
  expect_serves(*model_);
  EXPECT_EQ(model_->stats().active_sequences, 0);
  for (size_t i = 0; i < answers.size(); ++i) {
    EXPECT_TRUE(eventually([&] { return answers[i]->answered(); })) << "request " << i << " never answered";
    EXPECT_EQ(answers[i]->calls.load(), 1) << "request " << i;
  }
}

TEST(LocalModelDeadlineTest, SeveralChoicesPastTheirDeadlineAtEveryPhaseAreAnsweredOnce) {
  // Deadlines land while queued, mid-prefill and mid-decode (which phase
  // depends on the machine's speed; every outcome must be a single answer
  // and a clean engine).
  std::vector<int32_t> deadlines = {1, 10, 40, 150};
  for (int32_t deadline_ms : deadlines) {
    LocalModelSpec spec = tiny_spec(2048, 4, 8, 16);
    spec.deadline_ms = deadline_ms;
    auto m = load(spec);
    ASSERT_TRUE(m);
    std::vector<std::unique_ptr<Answer>> answers;
    for (int i = 0; i < 6; ++i) {
      answers.push_back(std::make_unique<Answer>());
      auto req = i % 2 ? request(words(150, "deadline" + std::to_string(i)), 50) : endless("generate " + std::to_string(i));
      req.n = 2;
      m->submit(req, nullptr, answers.back()->callbacks());
    }
    for (size_t i = 0; i < answers.size(); ++i) {
      const auto& r = answers[i]->wait();
      if (r.is_ok()) {
        ASSERT_EQ(r->choices.size(), 2u);
      } else {
        EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded) << r.status().to_string();
      }
    }
    ASSERT_TRUE(eventually([&] { return idle(*m); })) << "deadline " << deadline_ms << " ms";
    EXPECT_EQ(m->stats().active_sequences, 0);
    // A one-token request still gets its answer (within any deadline).
    Answer after;
    m->submit(request("one more", 1), nullptr, after.callbacks());
    EXPECT_TRUE(after.wait().is_ok() || after.wait().status().code() == StatusCode::kDeadlineExceeded);
    for (size_t i = 0; i < answers.size(); ++i) EXPECT_EQ(answers[i]->calls.load(), 1) << "request " << i;
  }
}

// Preparation (templating, tokenizing, grammar) runs on the model's own
// threads: these hold the one for long requests inside a callback to see it.
class LocalModelPreparationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    LocalModelSpec spec = tiny_spec(256, 2, 64, 2);
    spec.prep_large_bytes = 1024;  // long(): 3 KB
    model_ = load(spec);
    ASSERT_TRUE(model_);
  }

  // A request for the long-request preparation thread; longer than the
  // context, so it fails there (context_length_exceeded).
  static GenerateRequest long_request() { return request(words(400), 4); }

  // Submits a long request whose on_done then holds the long-request
  // preparation thread until release() is called.
  void hold_preparation_thread() {
    GenerateCallbacks cb;
    cb.on_done = [this, caller = std::this_thread::get_id()](Result<Completion> r) {
      holder_status_ = r.status();
      holder_thread_ = std::this_thread::get_id();
      entered_.set_value();
      if (holder_thread_ != caller) release_future_.wait();  // (on the caller's thread it would never return)
    };
    model_->submit(long_request(), nullptr, std::move(cb));
    entered_.get_future().wait();
  }
  void release() {
    if (!released_) release_.set_value();
    released_ = true;
  }
  void TearDown() override { release(); }  // never leave the thread held

  std::promise<void> entered_;
  std::promise<void> release_;
  std::shared_future<void> release_future_ = release_.get_future().share();
  bool released_ = false;
  Status holder_status_;
  std::thread::id holder_thread_;
  // Last, so it goes first: its threads may still be in the callback above.
  std::unique_ptr<LocalModel> model_;
};

TEST_F(LocalModelPreparationTest, SubmitReturnsBeforeTheHugePromptIsTokenized) {
  hold_preparation_thread();
  EXPECT_NE(holder_thread_, std::this_thread::get_id());
  EXPECT_EQ(holder_status_.error_code(), "context_length_exceeded");

  // 1 MB of prompt: before, submit() tokenized it here, and answered it here.
  Answer huge;
  model_->submit(request(words(100000), 4), nullptr, huge.callbacks());
  EXPECT_FALSE(huge.answered()) << "submit() prepared the prompt on the caller's thread";
  release();
  const auto& r = huge.wait();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().error_code(), "context_length_exceeded");
  EXPECT_NE(huge.thread, std::this_thread::get_id());
  EXPECT_EQ(huge.calls.load(), 1);
  expect_serves(*model_);
}

TEST_F(LocalModelPreparationTest, AShortRequestDoesNotWaitForALongOnesPreparation) {
  hold_preparation_thread();
  Answer short_one;
  model_->submit(request("short", 3), nullptr, short_one.callbacks());
  const auto& r = short_one.wait();  // while the long-request thread is held
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_GT(r->usage.prompt_tokens, 0);
  release();
}

TEST_F(LocalModelPreparationTest, QueueLimitCountsRequestsBeingPrepared) {
  hold_preparation_thread();  // 1 of max_queue 2: being prepared (answered)
  Answer waiting, refused;
  model_->submit(long_request(), nullptr, waiting.callbacks());
  model_->submit(request("one too many", 2), nullptr, refused.callbacks());
  ASSERT_TRUE(refused.answered()) << "the limit did not count the requests being prepared";
  EXPECT_EQ(refused.wait().status().code(), StatusCode::kResourceExhausted);
  EXPECT_EQ(refused.thread, std::this_thread::get_id());
  EXPECT_FALSE(waiting.answered());
  EXPECT_EQ(model_->stats().queued, 2);
  release();
  EXPECT_EQ(waiting.wait().status().error_code(), "context_length_exceeded");
  EXPECT_TRUE(eventually([&] { return idle(*model_); }));
  expect_serves(*model_);
}

TEST_F(LocalModelPreparationTest, ShutdownAnswersRequestsWaitingForPreparationOnce) {
  hold_preparation_thread();
  Answer waiting;
  model_->submit(long_request(), nullptr, waiting.callbacks());  // never prepared
  LocalModel* raw = model_.get();
  std::thread destroyer([&] { model_.reset(); });
  // Wait until the destructor has closed admission, then let the
  // preparation thread go on. The queue is full (one held, one waiting), so
  // each probe is refused at once: ResourceExhausted before, Unavailable
  // once shutdown began. The model lives until the thread is released.
  for (;;) {
    Answer probe;
    raw->submit(request("probe", 1), nullptr, probe.callbacks());
    if (!probe.answered()) {
      ADD_FAILURE() << "a probe was queued";
      break;
    }
    if (probe.wait().status().code() == StatusCode::kUnavailable) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  release();
  destroyer.join();
  const auto& r = waiting.wait();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(waiting.calls.load(), 1);
}

TEST(LocalModelLoadTest, LoadErrorsNameTheModelButNotThePath) {
  const std::string dir = std::filesystem::temp_directory_path() / "llmpool-load-error-test";
  std::filesystem::create_directories(dir);
  LocalModelSpec spec;
  spec.name = "secret-model";
  spec.path = dir + "/missing.gguf";
  auto missing = LocalModel::load(spec);
  ASSERT_FALSE(missing.is_ok());
  EXPECT_EQ(missing.status().code(), StatusCode::kNotFound);
  EXPECT_NE(missing.status().message().find("'secret-model'"), std::string::npos) << missing.status().message();
  EXPECT_EQ(missing.status().message().find(dir), std::string::npos) << missing.status().message();

  spec.path = dir + "/garbage.gguf";
  { std::ofstream(spec.path) << "not a gguf file"; }
  auto garbage = LocalModel::load(spec);
  ASSERT_FALSE(garbage.is_ok());
  EXPECT_EQ(garbage.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(garbage.status().message().find("'secret-model'"), std::string::npos) << garbage.status().message();
  EXPECT_EQ(garbage.status().message().find(dir), std::string::npos) << garbage.status().message();
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace llmpool::engine
