// Loads the generated `tiny` model (made by the make_test_models fixture).
#include "engine/local_model.h"

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>

namespace llmpool::engine {
namespace {

const std::string kTiny = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-q8_0.gguf";
const std::string kQwen3 = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-qwen3-q8_0.gguf";

// Collects deltas and the completion of one request.
struct Collector {
  std::vector<Delta> deltas;
  std::promise<Result<Completion>> done;
  std::future<Result<Completion>> future = done.get_future();

  GenerateCallbacks callbacks(bool stream = true) {
    GenerateCallbacks cb;
    if (stream) cb.on_delta = [this](Delta d) { deltas.push_back(std::move(d)); };
    cb.on_done = [this](Result<Completion> r) { done.set_value(std::move(r)); };
    return cb;
  }
  std::string streamed_text(int32_t index = 0) const {
    std::string s;
    for (const auto& d : deltas)
      if (d.index == index) s += d.text;
    return s;
  }
};

GenerateRequest request(std::string text, int32_t max_tokens, float temperature = 0.0f) {
  GenerateRequest r;
  r.messages = {{"user", std::move(text)}};
  r.sampling.temperature = temperature;
  r.sampling.max_tokens = max_tokens;
  return r;
}

class LocalModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    LocalModelSpec spec;
    spec.name = "tiny";
    spec.path = kTiny;
    spec.context = 256;
    spec.parallel = 4;
    spec.batch = 64;
    spec.threads = 1;
    spec.max_queue = 4;
    auto m = LocalModel::load(spec);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    model_ = std::move(m).value().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  static Result<Completion> run(GenerateRequest req) {
    Collector c;
    model_->submit(std::move(req), nullptr, c.callbacks(false));
    return c.future.get();
  }

  static LocalModel* model_;
};
LocalModel* LocalModelTest::model_ = nullptr;

TEST_F(LocalModelTest, FormatsChatsWithTheModelsTemplate) {
  auto prompt = model_->format_chat({{"system", "S"}, {"user", "U"}});
  ASSERT_TRUE(prompt.is_ok());
  EXPECT_EQ(*prompt, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
}

TEST_F(LocalModelTest, TokenizeAndDetokenizeRoundTrip) {
  auto toks = model_->tokenize("Hello world", false, false);
  ASSERT_TRUE(toks.is_ok());
  EXPECT_FALSE(toks->empty());
  auto text = model_->detokenize(*toks);
  ASSERT_TRUE(text.is_ok());
  EXPECT_NE(text->find("Hello world"), std::string::npos);
  EXPECT_EQ(model_->detokenize({-1}).status().code(), StatusCode::kInvalidArgument);
}

TEST_F(LocalModelTest, GeneratesExactlyMaxTokensWithIgnoreEosAndCountsUsage) {
  auto req = request("Hello there", 6);
  req.sampling.ignore_eos = true;
  auto r = run(req);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_GT(r->usage.prompt_tokens, 5);
  EXPECT_EQ(r->usage.completion_tokens, 6);
  ASSERT_EQ(r->choices.size(), 1u);
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kLength);
}

TEST_F(LocalModelTest, StreamedDeltasAddUpToTheCompletion) {
  Collector c;
  auto req = request("Stream this", 12);
  req.sampling.ignore_eos = true;
  model_->submit(req, nullptr, c.callbacks());
  auto r = c.future.get();
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(c.streamed_text(), r->choices[0].text);
  ASSERT_FALSE(c.deltas.empty());
  EXPECT_EQ(c.deltas.back().finish_reason, FinishReason::kLength);
}

TEST_F(LocalModelTest, GreedyAndSeededSamplingAreDeterministic) {
  auto a = run(request("Count to ten", 10));
  auto b = run(request("Count to ten", 10));
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a->choices[0].text, b->choices[0].text);
  auto seeded = [] {
    auto r = request("Count to ten", 10, 1.0f);
    r.sampling.seed = 1234;
    return r;
  };
  auto c = run(seeded());
  auto d = run(seeded());
  ASSERT_TRUE(c.is_ok() && d.is_ok());
  EXPECT_EQ(c->choices[0].text, d->choices[0].text);
}

TEST_F(LocalModelTest, BatchedRequestsGiveTheSameTextAsRequestsAlone) {
  // Continuous batching must not mix sequences up: run 4 different greedy
  // prompts alone, then all at once, and compare. Batches of other shapes
  // use other matmul kernels, so a near-tie between two logits of these
  // random weights may rarely flip one token; a sequence mix-up would
  // change every answer. So: at least 3 of 4 identical, the rest sharing a
  // first token with their solo run.
  std::vector<std::string> prompts = {"alpha beta", "gamma delta epsilon", "zeta", "eta theta iota kappa"};
  std::vector<std::string> alone;
  for (const auto& p : prompts) {
    auto r = run(request(p, 16));
    ASSERT_TRUE(r.is_ok());
    alone.push_back(r->choices[0].text);
  }
  std::vector<std::unique_ptr<Collector>> cs;
  for (const auto& p : prompts) {
    cs.push_back(std::make_unique<Collector>());
    model_->submit(request(p, 16), nullptr, cs.back()->callbacks());
  }
  int same = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    auto r = cs[i]->future.get();
    ASSERT_TRUE(r.is_ok());
    const std::string& batched = r->choices[0].text;
    if (batched == alone[i]) ++same;
    ASSERT_FALSE(batched.empty());
    EXPECT_EQ(batched.substr(0, 1), alone[i].substr(0, 1)) << prompts[i];
  }
  EXPECT_GE(same, 3);
}

TEST_F(LocalModelTest, RepeatedPromptReusesThePrefixCacheAndAnswersTheSame) {
  std::string system(400, 'x');
  auto make = [&] {
    GenerateRequest r = request("same question", 8);
    r.messages.insert(r.messages.begin(), {"system", "You are a helpful assistant. Think step by step."});
    return r;
  };
  auto first = run(make());
  auto second = run(make());
  ASSERT_TRUE(first.is_ok() && second.is_ok());
  EXPECT_EQ(first->choices[0].text, second->choices[0].text);
  EXPECT_GE(second->usage.cached_prompt_tokens, second->usage.prompt_tokens - 1);
  EXPECT_GT(model_->stats().cached_prompt_tokens, 0);
}

// Requests that arrive together with one long system prompt: whichever
// way they meet the engine (gathered into one step, or one after the
// other), each one after the first copies the shared prefix instead of
// computing it alongside (LocalModel::admit defers it while the first one
// is still being prefilled).
TEST_F(LocalModelTest, ConcurrentRequestsWithOneSystemPromptComputeItOnce) {
  std::string system;
  for (int i = 0; i < 30; ++i) system += "rule " + std::to_string(i) + " applies. ";
  std::vector<std::unique_ptr<Collector>> cs;
  for (int i = 0; i < 3; ++i) {
    GenerateRequest r = request("question number " + std::to_string(i), 4);
    r.messages.insert(r.messages.begin(), {"system", system});
    cs.push_back(std::make_unique<Collector>());
    model_->submit(r, nullptr, cs.back()->callbacks());
  }
  std::vector<Completion> done;
  for (auto& c : cs) {
    auto r = c->future.get();
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    done.push_back(*r);
  }
  // However the arrivals interleave with the first one's prefill (64 tokens
  // a step here), a later one recomputes fewer than 64 shared tokens: it
  // waits while more than that are still to come. Without the wait: 0 cached.
  ASSERT_GT(done[0].usage.prompt_tokens, 150);
  for (size_t i = 1; i < done.size(); ++i)
    EXPECT_GE(done[i].usage.cached_prompt_tokens, done[0].usage.prompt_tokens - 100) << "request " << i;
}

TEST_F(LocalModelTest, SeveralChoicesShareOnePrefillAndDifferBySeed) {
  auto req = request("Pick a word", 8, 1.0f);
  req.n = 3;
  req.sampling.seed = 99;
  req.sampling.ignore_eos = true;
  Collector c;
  model_->submit(req, nullptr, c.callbacks());
  auto r = c.future.get();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->choices.size(), 3u);
  EXPECT_EQ(r->usage.completion_tokens, 24);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(r->choices[static_cast<size_t>(i)].index, i);
    EXPECT_EQ(c.streamed_text(i), r->choices[static_cast<size_t>(i)].text);
  }
  EXPECT_FALSE(r->choices[0].text == r->choices[1].text && r->choices[1].text == r->choices[2].text);
  req.n = 5;  // more than the parallel sequences
  EXPECT_EQ(run(req).status().param(), "n");
}

TEST_F(LocalModelTest, LogprobsAreNegativeWithSortedAlternatives) {
  auto req = request("Logprobs please", 4);
  req.sampling.top_logprobs = 3;
  req.sampling.ignore_eos = true;
  auto r = run(req);
  ASSERT_TRUE(r.is_ok());
  ASSERT_EQ(r->choices[0].logprobs.size(), 4u);
  for (const auto& lp : r->choices[0].logprobs) {
    EXPECT_LE(lp.logprob, 0.0f);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_GE(lp.top[0].logprob, lp.top[1].logprob);
    EXPECT_GE(lp.top[1].logprob, lp.top[2].logprob);
    EXPECT_LE(lp.logprob, lp.top[0].logprob + 1e-4f);  // greedy picks the top one
  }
}

TEST_F(LocalModelTest, JsonSchemaConstrainsTheOutputToValidJson) {
  auto req = request("Answer in JSON", 64);
  req.sampling.json_schema =
      R"({"type":"object","properties":{"ok":{"type":"boolean"},"n":{"type":"integer","minimum":0,"maximum":9}},"required":["ok","n"],"additionalProperties":false})";
  auto r = run(req);
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  auto j = nlohmann::json::parse(r->choices[0].text, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << r->choices[0].text;
  EXPECT_TRUE(j["ok"].is_boolean());
  EXPECT_TRUE(j["n"].is_number_integer());
  req.sampling.json_schema = "{not json";
  EXPECT_EQ(run(req).status().param(), "response_format");
}

TEST_F(LocalModelTest, StopStringEndsGenerationAndIsNotReturned) {
  auto base = request("Tell me a story", 24);
  base.sampling.ignore_eos = true;
  auto full = run(base);
  ASSERT_TRUE(full.is_ok());
  const std::string& text = full->choices[0].text;
  ASSERT_GE(text.size(), 4u);
  std::string stop = text.substr(text.size() / 2, 2);
  auto req = base;
  req.sampling.stop = {stop};
  auto cut = run(req);
  ASSERT_TRUE(cut.is_ok());
  EXPECT_EQ(cut->choices[0].finish_reason, FinishReason::kStop);
  EXPECT_EQ(cut->choices[0].text, text.substr(0, text.find(stop)));
}

TEST_F(LocalModelTest, PromptLongerThanContextIsContextLengthExceeded) {
  std::string longtext;
  for (int i = 0; i < 400; ++i) longtext += "word ";
  auto r = run(request(longtext, 4));
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().error_code(), "context_length_exceeded");
}

TEST_F(LocalModelTest, GenerationStopsAtTheEndOfTheContext) {
  auto req = request("Hi", 100000);
  req.sampling.ignore_eos = true;
  auto r = run(req);
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kLength);
  EXPECT_LE(r->usage.prompt_tokens + r->usage.completion_tokens, model_->context_size() + 1);
}

TEST_F(LocalModelTest, CancelEndsARequestAndFreesItsSequence) {
  auto cancel = std::make_shared<CancelToken>();
  Collector c;
  auto req = request("Go on forever", 100000);
  req.sampling.ignore_eos = true;
  model_->submit(req, cancel, c.callbacks());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  cancel->cancel();
  auto r = c.future.get();
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kCancelled);
  for (int i = 0; i < 100 && model_->stats().active_sequences > 0; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  EXPECT_EQ(model_->stats().active_sequences, 0);
}

TEST_F(LocalModelTest, FullQueueIsResourceExhausted) {
  // Long requests keep all 4 sequences busy while 16 arrive at once: 4 run,
  // 4 wait (max_queue), the rest are refused at once.
  std::vector<std::unique_ptr<Collector>> cs;
  auto cancel = std::make_shared<CancelToken>();
  for (int i = 0; i < 16; ++i) {
    cs.push_back(std::make_unique<Collector>());
    auto req = request("queue " + std::to_string(i), 100000);
    req.sampling.ignore_eos = true;
    model_->submit(req, cancel, cs.back()->callbacks(false));
  }
  int rejected = 0;
  for (auto& c : cs) {
    if (c->future.wait_for(std::chrono::seconds(0)) != std::future_status::ready) continue;
    auto r = c->future.get();
    ASSERT_FALSE(r.is_ok());
    EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
    ++rejected;
  }
  EXPECT_GE(rejected, 16 - 4 - 4);
  cancel->cancel();  // end the long ones, and wait for them
  for (auto& c : cs) {
    if (!c->future.valid()) continue;
    auto r = c->future.get();
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
  }
}

TEST_F(LocalModelTest, DirectGreedyMatchesTheSamplerChain) {
  auto fast = request("Compare both ways", 16);
  fast.sampling.ignore_eos = true;
  auto chain = fast;
  chain.sampling.logit_bias = {{5, 0.0f}};  // changes nothing, but takes the sampler chain
  auto a = run(fast);
  auto b = run(chain);
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a->choices[0].text, b->choices[0].text);
  EXPECT_EQ(a->usage.completion_tokens, 16);
}

TEST_F(LocalModelTest, IgnoreEosBansEndOfGenerationTokens) {
  // The end-of-turn token pushed to the top by a bias: without ignore_eos it
  // ends the answer at once; with it, it can never be sampled.
  auto eot = model_->tokenize("</s>", false, true);
  ASSERT_TRUE(eot.is_ok());
  ASSERT_EQ(eot->size(), 1u);
  auto req = request("Stop early", 10);
  req.sampling.logit_bias = {{(*eot)[0], 100.0f}};
  auto stopped = run(req);
  ASSERT_TRUE(stopped.is_ok());
  EXPECT_EQ(stopped->usage.completion_tokens, 0);
  EXPECT_EQ(stopped->choices[0].finish_reason, FinishReason::kStop);
  req.sampling.ignore_eos = true;
  auto full = run(req);
  ASSERT_TRUE(full.is_ok());
  EXPECT_EQ(full->usage.completion_tokens, 10);
  EXPECT_EQ(full->choices[0].finish_reason, FinishReason::kLength);
}

Result<std::unique_ptr<LocalModel>> load_tiny(bool kv_unified, const std::string& path = kTiny,
                                              int64_t prompt_cache_bytes = -1, int32_t parallel = 3) {
  LocalModelSpec spec;
  spec.name = "tiny";
  spec.path = path;
  spec.context = 512;
  spec.parallel = parallel;
  spec.batch = 64;
  spec.threads = 1;
  spec.kv_unified = kv_unified;
  spec.prompt_cache_bytes = prompt_cache_bytes;
  return LocalModel::load(spec);
}

// A request whose prompt shares a long prefix with a sequence that is busy
// generating takes that prefix's KV (a cell share in the unified cache, a
// stream copy otherwise) and answers exactly as if it had computed it.
void check_prefix_shared_from_a_busy_sequence(bool kv_unified) {
  auto m = load_tiny(kv_unified);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  std::string system = "You are a careful assistant. ";
  for (int i = 0; i < 12; ++i) system += "Rule " + std::to_string(i) + ": answer briefly and politely. ";
  auto make = [&](const std::string& question, int32_t max_tokens) {
    GenerateRequest r = request(question, max_tokens);
    r.messages.insert(r.messages.begin(), {"system", system});
    r.sampling.ignore_eos = true;
    return r;
  };
  // A fresh model computes the expected answer from scratch.
  auto fresh = load_tiny(kv_unified);
  ASSERT_TRUE(fresh.is_ok());
  Collector expected;
  (*fresh)->submit(make("second question", 8), nullptr, expected.callbacks(false));
  auto want = expected.future.get();
  ASSERT_TRUE(want.is_ok());
  EXPECT_EQ(want->usage.cached_prompt_tokens, 0);

  // A long answer keeps the first sequence busy with the shared prefix.
  Collector busy;
  auto cancel = std::make_shared<CancelToken>();
  std::promise<void> started;
  bool signalled = false;
  GenerateCallbacks cb = busy.callbacks(false);
  cb.on_delta = [&](Delta) {
    if (!signalled) started.set_value();
    signalled = true;
  };
  (*m)->submit(make("first question", 100000), cancel, cb);
  started.get_future().wait();
  Collector second;
  (*m)->submit(make("second question", 8), nullptr, second.callbacks(false));
  auto got = second.future.get();
  cancel->cancel();
  ASSERT_TRUE(busy.future.get().is_ok());
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  EXPECT_GE(got->usage.cached_prompt_tokens, 100);
  EXPECT_LT(got->usage.cached_prompt_tokens, got->usage.prompt_tokens);
  EXPECT_EQ(got->choices[0].text, want->choices[0].text);
}

TEST(LocalModelPrefixTest, PrefixIsCopiedAcrossStreams) { check_prefix_shared_from_a_busy_sequence(false); }
TEST(LocalModelPrefixTest, PrefixIsSharedInTheUnifiedCache) { check_prefix_shared_from_a_busy_sequence(true); }

Result<Completion> run_on(LocalModel& m, GenerateRequest req) {
  Collector c;
  m.submit(std::move(req), nullptr, c.callbacks(false));
  return c.future.get();
}

// A distinct user prompt of about `words` words.
std::string distinct_prompt(int i, int words) {
  std::string s = "Topic " + std::to_string(i) + ":";
  for (int w = 0; w < words; ++w) s += " item" + std::to_string(i * 1000 + w);
  return s;
}

// N distinct prompts, one after the other, then each again: every one is
// still cached (all but the token decoded for the logits), although they
// all share the chat template's first tokens (which each new one reuses).
void check_distinct_prompts_all_hit_again(bool kv_unified) {
  auto m = load_tiny(kv_unified);  // 3 sequences
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  std::vector<std::string> first;
  for (int i = 0; i < 3; ++i) {
    auto r = run_on(**m, request(distinct_prompt(i, 20), 4));
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    // At most what the chat template and the default system prompt share.
    EXPECT_LT(r->usage.cached_prompt_tokens, r->usage.prompt_tokens / 2) << "prompt " << i;
    first.push_back(r->choices[0].text);
  }
  for (int i = 0; i < 3; ++i) {
    auto r = run_on(**m, request(distinct_prompt(i, 20), 4));
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_EQ(r->usage.cached_prompt_tokens, r->usage.prompt_tokens - 1) << "prompt " << i;
    EXPECT_EQ(r->choices[0].text, first[static_cast<size_t>(i)]) << "prompt " << i;
  }
}

// Twice as many distinct prompts as sequences, then each again: the ones
// whose sequences were overwritten come back from the host prompt cache
// (all but the token decoded for the logits) and answer as the first time;
// without the host cache the first half is computed again.
void check_prompts_come_back_from_host_memory(bool kv_unified) {
  for (int64_t budget : {int64_t{-1}, int64_t{0}}) {
    SCOPED_TRACE(budget ? "with the host prompt cache" : "without it");
    auto m = load_tiny(kv_unified, kTiny, budget);  // 3 sequences
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    std::vector<std::string> first;
    for (int i = 0; i < 6; ++i) {
      auto r = run_on(**m, request(distinct_prompt(i, 20), 4));
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      first.push_back(r->choices[0].text);
    }
    for (int i = 0; i < 6; ++i) {
      auto r = run_on(**m, request(distinct_prompt(i, 20), 4));
      ASSERT_TRUE(r.is_ok()) << r.status().to_string();
      if (budget) {
        EXPECT_EQ(r->usage.cached_prompt_tokens, r->usage.prompt_tokens - 1) << "prompt " << i;
      } else if (i < 3) {
        EXPECT_LT(r->usage.cached_prompt_tokens, r->usage.prompt_tokens / 2) << "prompt " << i;
      }
      EXPECT_EQ(r->choices[0].text, first[static_cast<size_t>(i)]) << "prompt " << i;
    }
    const EngineStats st = (*m)->stats();
    if (budget) {
      EXPECT_GE(st.prompts_saved, 6);
      EXPECT_EQ(st.prompts_restored, 6);
      EXPECT_GT(st.prompt_cache_used_bytes, 0);
      EXPECT_LE(static_cast<uint64_t>(st.prompt_cache_used_bytes), (*m)->memory().prompt_cache);
      EXPECT_EQ((*m)->memory().prompt_cache, (*m)->memory().kv_cache);
    } else {
      EXPECT_EQ(st.prompts_saved, 0);
      EXPECT_EQ((*m)->memory().prompt_cache, 0u);
    }
  }
}

// A request with two choices and one token each ends in the step of its
// prefill, leaving both sequences idle with llama.cpp's stream copy from one
// to the other still to be made at the next decode. A prompt admitted before
// that decode must not be restored into either (the copy would overwrite
// what the restore wrote): it is computed, and answers as the first time.
TEST(LocalModelPrefixTest, NoRestoreIntoASequenceWhoseStreamCopyIsPending) {
  auto m = load_tiny(false, kTiny, -1, 2);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  auto first = run_on(**m, request(distinct_prompt(1, 20), 4));
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  GenerateRequest two = request(distinct_prompt(2, 20), 1);
  two.n = 2;
  auto both = run_on(**m, std::move(two));  // saves prompt 1's sequence to host memory
  ASSERT_TRUE(both.is_ok()) << both.status().to_string();
  EXPECT_GE((*m)->stats().prompts_saved, 1);
  auto again = run_on(**m, request(distinct_prompt(1, 20), 4));
  ASSERT_TRUE(again.is_ok()) << again.status().to_string();
  EXPECT_EQ(again->choices[0].text, first->choices[0].text);
  // Once a decode has made the copy, the saved prompt comes back.
  auto third = run_on(**m, request(distinct_prompt(1, 20), 4));
  ASSERT_TRUE(third.is_ok());
  EXPECT_EQ(third->choices[0].text, first->choices[0].text);
}

TEST(LocalModelPrefixTest, OverwrittenPromptsComeBackFromHostMemoryAcrossStreams) {
  check_prompts_come_back_from_host_memory(false);
}
TEST(LocalModelPrefixTest, OverwrittenPromptsComeBackFromHostMemoryInTheUnifiedCache) {
  check_prompts_come_back_from_host_memory(true);
}

TEST(LocalModelPrefixTest, DistinctPromptsAreAllRetainedAcrossIdleStreams) {
  check_distinct_prompts_all_hit_again(false);
}
TEST(LocalModelPrefixTest, DistinctPromptsAreAllRetainedInTheUnifiedCache) {
  check_distinct_prompts_all_hit_again(true);
}

// With every sequence holding a prompt, an unrelated one takes the least
// valuable (short and not the newest), not the least recently used.
TEST(LocalModelPrefixTest, UnrelatedPromptEvictsTheLeastValuableSequence) {
  auto m = load_tiny(false);  // 3 sequences
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  const std::string long_a = distinct_prompt(1, 60), short_b = distinct_prompt(2, 2), long_c = distinct_prompt(3, 60);
  for (const auto& p : {long_a, short_b, long_c}) ASSERT_TRUE(run_on(**m, request(p, 2)).is_ok());
  ASSERT_TRUE(run_on(**m, request(distinct_prompt(4, 30), 2)).is_ok());
  for (const auto& p : {long_a, long_c}) {
    auto r = run_on(**m, request(p, 2));
    ASSERT_TRUE(r.is_ok());
    EXPECT_EQ(r->usage.cached_prompt_tokens, r->usage.prompt_tokens - 1);
  }
  auto b = run_on(**m, request(short_b, 2));
  ASSERT_TRUE(b.is_ok());
  EXPECT_LT(b->usage.cached_prompt_tokens, b->usage.prompt_tokens - 1);
}

// A shared system prompt held by an idle sequence is copied into a free one
// (seq_cp, not recomputed): the answer is the cold run's, and the first
// conversation stays cached whole.
void check_shared_system_prompt_copied_from_an_idle_sequence(bool kv_unified) {
  std::string system = "You are a careful assistant. ";
  for (int i = 0; i < 12; ++i) system += "Rule " + std::to_string(i) + ": answer briefly and politely. ";
  auto make = [&](const std::string& question) {
    GenerateRequest r = request(question, 8);
    r.messages.insert(r.messages.begin(), {"system", system});
    r.sampling.ignore_eos = true;
    return r;
  };
  auto cold = load_tiny(kv_unified);
  ASSERT_TRUE(cold.is_ok());
  auto want = run_on(**cold, make("second question"));
  ASSERT_TRUE(want.is_ok());
  EXPECT_EQ(want->usage.cached_prompt_tokens, 0);

  auto m = load_tiny(kv_unified);
  ASSERT_TRUE(m.is_ok());
  auto first = run_on(**m, make("first question"));
  ASSERT_TRUE(first.is_ok());
  auto got = run_on(**m, make("second question"));
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  EXPECT_GE(got->usage.cached_prompt_tokens, 100);
  EXPECT_LT(got->usage.cached_prompt_tokens, got->usage.prompt_tokens);
  EXPECT_EQ(got->choices[0].text, want->choices[0].text);
  auto again = run_on(**m, make("first question"));
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(again->usage.cached_prompt_tokens, again->usage.prompt_tokens - 1);
  EXPECT_EQ(again->choices[0].text, first->choices[0].text);
}

TEST(LocalModelPrefixTest, SharedSystemPromptIsCopiedAcrossStreamsFromAnIdleSequence) {
  check_shared_system_prompt_copied_from_an_idle_sequence(false);
}
TEST(LocalModelPrefixTest, SharedSystemPromptIsSharedInTheUnifiedCacheFromAnIdleSequence) {
  check_shared_system_prompt_copied_from_an_idle_sequence(true);
}

// Once a prompt has been timed, a stream copy counts as the prompt tokens
// computed in the time it takes (a token or two on the tiny model), not a
// fixed 8: a request that shares a few more tokens with the latest sequence
// than with the older ones copies the latest one's prefix into the oldest
// sequence instead of keeping the oldest's shorter one. (bench/compare.sh
// greedy-c1: a request shares 16 tokens of system prompt and template with
// the one before and 8 with the warm-up's; it reused 8.)
TEST(LocalModelPrefixTest, ShortPrefixIsCopiedOnceACopyCostsLessThanItsTokens) {
  auto m = load_tiny(false);  // 3 sequences, one stream each
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  auto raw = [](std::string text) {
    GenerateRequest r;
    r.prompt = std::move(text);
    r.sampling.temperature = 0.0f;
    r.sampling.max_tokens = 2;
    return r;
  };
  const std::string base = "Note:";
  const std::string shared = base + " one two three four five";
  const std::string latest = shared + " " + distinct_prompt(7, 30);
  const std::string next = shared + " " + distinct_prompt(8, 30);
  auto tokens = [&](const std::string& text) { return (*m)->tokenize(text, true, false).value(); };
  auto common = [](const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
    return static_cast<int32_t>(std::mismatch(a.begin(), a.end(), b.begin(), b.end()).first - a.begin());
  };
  const int32_t with_old = common(tokens(base + " " + distinct_prompt(0, 30)), tokens(next));
  const int32_t with_latest = common(tokens(latest), tokens(next));
  // A gain the fixed cost of 8 never paid for, and any cost under a few tokens does.
  ASSERT_GE(with_latest - with_old, 5);
  ASSERT_LE(with_latest - with_old, 8);
  // Every sequence holds a prompt that shares only `base` (each long enough
  // to time a prompt token), then the latest one replaces the oldest.
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(run_on(**m, raw(base + " " + distinct_prompt(i, 30))).is_ok());
  ASSERT_TRUE(run_on(**m, raw(latest)).is_ok());
  auto got = run_on(**m, raw(next));
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  EXPECT_EQ(got->usage.cached_prompt_tokens, with_latest);
  // The same answer as computed from scratch, and the latest prompt is still cached whole.
  auto cold = load_tiny(false);
  ASSERT_TRUE(cold.is_ok());
  auto want = run_on(**cold, raw(next));
  ASSERT_TRUE(want.is_ok());
  EXPECT_EQ(got->choices[0].text, want->choices[0].text);
  auto again = run_on(**m, raw(latest));
  ASSERT_TRUE(again.is_ok());
  EXPECT_EQ(again->usage.cached_prompt_tokens, again->usage.prompt_tokens - 1);
}

// Cancelling a request while a step runs aborts the step; the other
// sequences' work in it is undone and redone, so their answers do not change.
TEST(LocalModelAbortTest, AbortedStepsLeaveOtherAnswersUnchanged) {
  LocalModelSpec spec;
  spec.name = "tiny";
  spec.path = kTiny;
  spec.context = 1024;
  spec.parallel = 2;
  spec.batch = 512;
  spec.prefill_chunk = 512;
  spec.threads = 1;
  spec.abort_after_ms = 0;  // abort at once
  auto m = LocalModel::load(spec);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  auto steady = request("Keep talking about the weather", 200);
  steady.sampling.ignore_eos = true;
  Collector alone;
  (*m)->submit(steady, nullptr, alone.callbacks(false));
  auto want = alone.future.get();
  ASSERT_TRUE(want.is_ok());

  std::string long_prompt;
  for (int i = 0; i < 120; ++i) long_prompt += "word" + std::to_string(i) + " ";
  Collector c;
  (*m)->submit(steady, nullptr, c.callbacks(false));
  // Long prompts cancelled at varying moments, until some cancellation
  // lands inside a decode (on a 1-thread tiny model a 500-token step takes
  // a few milliseconds).
  int tries = 0;
  while ((*m)->stats().aborted_steps == 0 && tries < 400 &&
         c.future.wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
    auto cancel = std::make_shared<CancelToken>();
    Collector victim;
    (*m)->submit(request(long_prompt + std::to_string(tries), 50), cancel, victim.callbacks(false));
    // Preparation runs on its own thread: wait until the victim holds a
    // sequence (its prefill is next), so the cancellation can meet a decode.
    for (int spin = 0; spin < 100000 && (*m)->stats().active_sequences < 2 &&
                       victim.future.wait_for(std::chrono::seconds(0)) != std::future_status::ready;
         ++spin)
      std::this_thread::yield();
    std::this_thread::sleep_for(std::chrono::microseconds(200 * (tries % 10)));
    cancel->cancel();
    auto r = victim.future.get();
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    ++tries;
  }
  auto got = c.future.get();
  ASSERT_TRUE(got.is_ok()) << got.status().to_string();
  EXPECT_EQ(got->choices[0].text, want->choices[0].text);
  EXPECT_EQ(got->usage.completion_tokens, 200);
  EXPECT_GT((*m)->stats().aborted_steps, 0) << "no cancellation landed inside a decode in " << tries << " tries";
}

TEST(LocalModelThinkingTest, ZeroThinkingBudgetAnswersWithoutThinking) {
  auto m = load_tiny(false, kQwen3);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  auto make = [&](int32_t budget) {
    GenerateRequest r = request("Think about it", 8);
    r.sampling.ignore_eos = true;
    r.thinking_budget = budget;
    Collector c;
    (*m)->submit(r, nullptr, c.callbacks(false));
    return c.future.get();
  };
  auto thinking = make(-1);
  auto direct = make(0);
  ASSERT_TRUE(thinking.is_ok() && direct.is_ok());
  // The template closed the thinking block in the prompt: more prompt.
  EXPECT_GT(direct->usage.prompt_tokens, thinking->usage.prompt_tokens);
  EXPECT_EQ(direct->usage.completion_tokens, 8);
  EXPECT_EQ(direct->choices[0].reasoning_content, "");
}

TEST(LocalModelLoadTest, MissingFileIsNotFound) {
  LocalModelSpec spec{"x", "/no/such/model.gguf"};
  auto m = LocalModel::load(spec);
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
}

TEST(LocalModelLoadTest, NonGgufFileIsInvalidArgument) {
  std::string path = std::string(LLMPOOL_TEST_MODELS_DIR) + "/not-a-model.gguf";
  std::filesystem::create_directories(LLMPOOL_TEST_MODELS_DIR);
  std::ofstream(path) << "this is not a GGUF file";
  LocalModelSpec spec{"x", path};
  auto m = LocalModel::load(spec);
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
}

// A request that sets no top_k takes the model's (llama-server's 40 by
// default); here the model's is 1, so sampling at any temperature gives the
// greedy answer, while the request's own top_k (0: none) wins.
TEST(LocalModelSamplingDefaultsTest, RequestsWithoutTopKTakeTheModelsDefault) {
  LocalModelSpec spec{"tiny", kTiny};
  spec.context = 256;
  spec.parallel = 1;
  spec.threads = 1;
  spec.top_k = 1;
  auto m = LocalModel::load(spec);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  auto run = [&](GenerateRequest r) {
    Collector c;
    r.sampling.ignore_eos = true;
    (*m)->submit(std::move(r), nullptr, c.callbacks(false));
    auto done = c.future.get();
    EXPECT_TRUE(done.is_ok()) << done.status().to_string();
    return done.is_ok() ? done->choices[0].text : std::string();
  };
  const std::string greedy = run(request("Tell me a story", 24));
  ASSERT_FALSE(greedy.empty());
  auto hot = request("Tell me a story", 24, 2.0f);
  hot.sampling.seed = 7;
  EXPECT_EQ(run(hot), greedy) << "top_k 1 from the model";
  hot.sampling.top_k = 0;
  EXPECT_NE(run(hot), greedy) << "the request's top_k 0 turns it off";
}

TEST(LocalModelLoadTest, DeadlineEndsARequestCleanly) {
  LocalModelSpec spec{"tiny", kTiny};
  spec.context = 4096;
  spec.parallel = 1;
  spec.threads = 1;
  spec.deadline_ms = 100;
  auto m = LocalModel::load(spec);
  ASSERT_TRUE(m.is_ok());
  Collector c;
  auto req = request("long", 100000);
  req.sampling.ignore_eos = true;
  (*m)->submit(req, nullptr, c.callbacks());
  auto r = c.future.get();
  ASSERT_TRUE(r.is_ok());
  EXPECT_EQ(r->choices[0].finish_reason, FinishReason::kLength);
  EXPECT_LT(r->usage.completion_tokens, 4000);
}

TEST(LocalModelLoadTest, DestroyingFailsQueuedAndRunningRequestsWithUnavailable) {
  LocalModelSpec spec{"tiny", kTiny};
  spec.context = 256;
  spec.parallel = 1;
  spec.threads = 1;
  auto m = LocalModel::load(spec);
  ASSERT_TRUE(m.is_ok());
  std::vector<std::unique_ptr<Collector>> cs;
  for (int i = 0; i < 6; ++i) {
    cs.push_back(std::make_unique<Collector>());
    auto req = request("hi", 200);
    req.sampling.ignore_eos = true;
    (*m)->submit(req, nullptr, cs.back()->callbacks());
  }
  m.value().reset();
  int unavailable = 0;
  for (auto& c : cs) {
    auto r = c->future.get();  // every request is answered exactly once
    if (!r.is_ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
      ++unavailable;
    }
  }
  EXPECT_GE(unavailable, 5);
}

}  // namespace
}  // namespace llmpool::engine

namespace llmpool::engine {
namespace {

TEST(LocalModelEmbeddingTest, EmbedsWithPoolingNormalisedAndDeterministic) {
  LocalModelSpec spec{"tiny-embed", kTiny};
  spec.context = 128;
  spec.parallel = 2;
  spec.threads = 1;
  spec.embedding = true;
  auto m = LocalModel::load(spec);
  ASSERT_TRUE(m.is_ok()) << m.status().to_string();
  std::promise<Result<Embeddings>> p;
  (*m)->embed({"hello world", "hello world", "something else entirely"},
              [&p](Result<Embeddings> r) { p.set_value(std::move(r)); });
  auto r = p.get_future().get();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  ASSERT_EQ(r->vectors.size(), 3u);
  EXPECT_GT(r->prompt_tokens, 6);
  for (const auto& v : r->vectors) {
    ASSERT_EQ(static_cast<int32_t>(v.size()), (*m)->embedding_size());
    double norm = 0;
    for (float x : v) norm += double(x) * x;
    EXPECT_NEAR(norm, 1.0, 1e-4);
  }
  // The same input in another sequence of the batch: the same vector, but for
  // rounding (a row's place in the batch can change the kernels' summation order).
  float diff = 0;
  for (size_t i = 0; i < r->vectors[0].size(); ++i) diff = std::max(diff, std::fabs(r->vectors[0][i] - r->vectors[1][i]));
  EXPECT_LT(diff, 1e-5f);
  EXPECT_NE(r->vectors[0], r->vectors[2]);

  std::promise<Result<Embeddings>> too_long;
  (*m)->embed({std::string(2000, 'x') + " y z"}, [&](Result<Embeddings> e) { too_long.set_value(std::move(e)); });
  EXPECT_EQ(too_long.get_future().get().status().error_code(), "context_length_exceeded");

  Collector c;  // an embedding model does not generate
  (*m)->submit(request("hi", 4), nullptr, c.callbacks());
  EXPECT_EQ(c.future.get().status().code(), StatusCode::kInvalidArgument);
}

TEST(LocalModelEmbeddingTest, GenerativeModelRefusesEmbeddings) {
  LocalModelSpec spec{"tiny", kTiny};
  spec.context = 128;
  spec.parallel = 1;
  spec.threads = 1;
  auto m = LocalModel::load(spec);
  ASSERT_TRUE(m.is_ok());
  std::promise<Result<Embeddings>> p;
  (*m)->embed({"x"}, [&p](Result<Embeddings> r) { p.set_value(std::move(r)); });
  auto r = p.get_future().get();
  EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(r.status().param(), "model");
}

}  // namespace
}  // namespace llmpool::engine
