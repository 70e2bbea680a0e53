// Loads the generated `tiny` model (made by the make_test_models fixture).
#include "engine/local_model.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <future>

namespace llmpool::engine {
namespace {

const std::string kTiny = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-q8_0.gguf";

class LocalModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    LocalModelSpec spec{"tiny", kTiny, 256, 1, 4};
    auto m = LocalModel::load(spec);
    ASSERT_TRUE(m.is_ok()) << m.status().to_string();
    model_ = std::move(m).value().release();
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }

  static Result<Completion> run(GenerationRequest req) {
    std::promise<Result<Completion>> p;
    auto f = p.get_future();
    model_->submit(std::move(req), [&p](Result<Completion> r) { p.set_value(std::move(r)); });
    return f.get();
  }

  static GenerationRequest request(std::string text, int32_t max_tokens, float temperature = 0.0f) {
    GenerationRequest r;
    r.messages = {{"user", std::move(text)}};
    r.sampling.temperature = temperature;
    r.sampling.max_tokens = max_tokens;
    return r;
  }

  static LocalModel* model_;
};
LocalModel* LocalModelTest::model_ = nullptr;

TEST_F(LocalModelTest, FormatsChatsWithTheModelsTemplate) {
  auto prompt = model_->format_chat({{"system", "S"}, {"user", "U"}});
  ASSERT_TRUE(prompt.is_ok());
  EXPECT_EQ(*prompt, "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n");
}

TEST_F(LocalModelTest, GeneratesAtMostMaxTokensAndCountsUsage) {
  auto r = run(request("Hello there", 6));
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_GT(r->usage.prompt_tokens, 5);
  EXPECT_GE(r->usage.completion_tokens, 1);
  EXPECT_LE(r->usage.completion_tokens, 6);
  if (r->finish_reason == FinishReason::kLength) {
    EXPECT_EQ(r->usage.completion_tokens, 6);
  }
}

TEST_F(LocalModelTest, GreedyAndSeededSamplingAreDeterministic) {
  auto a = run(request("Count to ten", 10));
  auto b = run(request("Count to ten", 10));
  ASSERT_TRUE(a.is_ok() && b.is_ok());
  EXPECT_EQ(a->text, b->text);
  auto seeded = [] {
    auto r = request("Count to ten", 10, 1.0f);
    r.sampling.seed = 1234;
    return r;
  };
  auto c = run(seeded());
  auto d = run(seeded());
  ASSERT_TRUE(c.is_ok() && d.is_ok());
  EXPECT_EQ(c->text, d->text);
}

TEST_F(LocalModelTest, StopStringEndsGenerationAndIsNotReturned) {
  // Learn what greedy decoding produces, then stop on a piece of it.
  auto full = run(request("Tell me a story", 24));
  ASSERT_TRUE(full.is_ok());
  ASSERT_GE(full->text.size(), 4u);
  std::string stop = full->text.substr(full->text.size() / 2, 2);
  auto req = request("Tell me a story", 24);
  req.sampling.stop = {stop};
  auto cut = run(req);
  ASSERT_TRUE(cut.is_ok());
  EXPECT_EQ(cut->finish_reason, FinishReason::kStop);
  EXPECT_EQ(cut->text, full->text.substr(0, full->text.find(stop)));
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
  auto r = run(request("Hi", 100000));
  ASSERT_TRUE(r.is_ok());
  EXPECT_LE(r->usage.prompt_tokens + r->usage.completion_tokens, model_->context_size());
}

TEST_F(LocalModelTest, FullQueueIsResourceExhausted) {
  std::vector<std::future<Result<Completion>>> futures;
  std::vector<std::shared_ptr<std::promise<Result<Completion>>>> promises;
  for (int i = 0; i < 12; ++i) {
    auto p = std::make_shared<std::promise<Result<Completion>>>();
    futures.push_back(p->get_future());
    model_->submit(request("queue", 16), [p](Result<Completion> r) { p->set_value(std::move(r)); });
    promises.push_back(p);
  }
  int rejected = 0;
  for (auto& f : futures) {
    auto r = f.get();
    if (!r.is_ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
      ++rejected;
    }
  }
  EXPECT_GE(rejected, 12 - 4 - 1);  // queue of 4, plus the one running
}

TEST(LocalModelLoadTest, MissingFileIsNotFound) {
  auto m = LocalModel::load({"x", "/no/such/model.gguf", 256, 1, 4});
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kNotFound);
}

TEST(LocalModelLoadTest, NonGgufFileIsInvalidArgument) {
  std::string path = std::string(LLMPOOL_TEST_MODELS_DIR) + "/not-a-model.gguf";
  std::filesystem::create_directories(LLMPOOL_TEST_MODELS_DIR);
  std::ofstream(path) << "this is not a GGUF file";
  auto m = LocalModel::load({"x", path, 256, 1, 4});
  ASSERT_FALSE(m.is_ok());
  EXPECT_EQ(m.status().code(), StatusCode::kInvalidArgument);
}

TEST(LocalModelLoadTest, DestroyingFailsQueuedRequestsWithUnavailable) {
  auto m = LocalModel::load({"tiny", kTiny, 256, 1, 16});
  ASSERT_TRUE(m.is_ok());
  std::vector<std::future<Result<Completion>>> futures;
  for (int i = 0; i < 6; ++i) {
    auto p = std::make_shared<std::promise<Result<Completion>>>();
    futures.push_back(p->get_future());
    GenerationRequest r;
    r.messages = {{"user", "hi"}};
    r.sampling.max_tokens = 32;
    (*m)->submit(std::move(r), [p](Result<Completion> res) { p->set_value(std::move(res)); });
  }
  m.value().reset();
  int unavailable = 0;
  for (auto& f : futures) {
    auto r = f.get();  // every callback runs exactly once
    if (!r.is_ok()) {
      EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
      ++unavailable;
    }
  }
  EXPECT_GE(unavailable, 1);
}

}  // namespace
}  // namespace llmpool::engine
