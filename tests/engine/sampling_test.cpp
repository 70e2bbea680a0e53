// The sampler chain on a real vocabulary (the tiny Qwen3-template model of
// the make_test_models fixture): the thinking budget forces the end tag
// once spent, and ignore_eos bans end-of-generation tokens. Candidates are
// built by hand, so no decoding is needed.
#include "engine/sampling.h"

#include <gtest/gtest.h>
#include <llama.h>

#include <cmath>
#include <vector>

#include "engine/llama_status.h"

namespace llmpool::engine {
namespace {

const std::string kQwen3 = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-qwen3-q8_0.gguf";

class SamplingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    init_llama_backend();
    llama_model_params mp = llama_model_default_params();
    mp.vocab_only = true;
    model_.reset(llama_model_load_from_file(kQwen3.c_str(), mp));
    ASSERT_TRUE(model_);
    vocab_ = llama_model_get_vocab(model_.get());
    n_vocab_ = llama_vocab_n_tokens(vocab_);
  }
  std::vector<llama_token> tokens(const std::string& text) const {
    std::vector<llama_token> out(text.size() + 8);
    int32_t n = llama_tokenize(vocab_, text.data(), static_cast<int32_t>(text.size()), out.data(),
                               static_cast<int32_t>(out.size()), false, true);
    out.resize(static_cast<size_t>(std::max(n, 0)));
    return out;
  }
  // The tokens the chain leaves possible for flat logits (all 0).
  std::vector<llama_token> allowed(llama_sampler* chain_sampler) const {
    std::vector<llama_token_data> data(static_cast<size_t>(n_vocab_));
    for (int32_t i = 0; i < n_vocab_; ++i) data[static_cast<size_t>(i)] = {i, 0.0f, 0.0f};
    llama_token_data_array arr{data.data(), data.size(), -1, false};
    llama_sampler_apply(chain_sampler, &arr);
    std::vector<llama_token> out;
    for (size_t i = 0; i < arr.size; ++i)
      if (std::isfinite(arr.data[i].logit)) out.push_back(arr.data[i].id);
    return out;
  }
  std::unique_ptr<llama_model, void (*)(llama_model*)> model_{nullptr, llama_model_free};
  const llama_vocab* vocab_ = nullptr;
  int32_t n_vocab_ = 0;
};

TEST_F(SamplingTest, ThinkingBudgetForcesTheEndTagOnceSpent) {
  SamplingParams p;
  p.temperature = 0.0f;
  GrammarSpec g;
  g.thinking_budget = 3;
  g.thinking_start = "<think>";
  g.thinking_end = {"</think>"};
  g.prefill_tokens = tokens("<|im_start|>assistant\n");
  auto s = make_sampler(model_.get(), p, g, 1, end_of_generation_tokens(vocab_));
  ASSERT_TRUE(s.is_ok()) << s.status().to_string();
  const auto word = tokens(" sky")[0];
  // Before the block opens and while the budget lasts, anything goes.
  EXPECT_EQ(allowed(s->get()).size(), static_cast<size_t>(n_vocab_));
  for (llama_token t : tokens("<think>")) llama_sampler_accept(s->get(), t);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(allowed(s->get()).size(), static_cast<size_t>(n_vocab_)) << i;
    llama_sampler_accept(s->get(), word);
  }
  llama_sampler_accept(s->get(), word);  // the third thinking token spends the budget
  // Then only the end tag, token by token, and free again after it.
  for (llama_token t : tokens("</think>")) {
    auto only = allowed(s->get());
    ASSERT_EQ(only.size(), 1u);
    EXPECT_EQ(only[0], t);
    llama_sampler_accept(s->get(), t);
  }
  EXPECT_EQ(allowed(s->get()).size(), static_cast<size_t>(n_vocab_));
}

TEST_F(SamplingTest, ThinkingThatEndsWithinTheBudgetIsLeftAlone) {
  SamplingParams p;
  GrammarSpec g;
  g.thinking_budget = 5;
  g.thinking_start = "<think>";
  g.thinking_end = {"</think>"};
  auto s = make_sampler(model_.get(), p, g, 1, end_of_generation_tokens(vocab_));
  ASSERT_TRUE(s.is_ok());
  for (llama_token t : tokens("<think> short</think>")) llama_sampler_accept(s->get(), t);
  for (int i = 0; i < 10; ++i) llama_sampler_accept(s->get(), tokens(" answer")[0]);
  EXPECT_EQ(allowed(s->get()).size(), static_cast<size_t>(n_vocab_));
}

TEST_F(SamplingTest, IgnoreEosBansEveryEndOfGenerationToken) {
  SamplingParams p;
  p.ignore_eos = true;
  auto s = make_sampler(model_.get(), p, GrammarSpec{}, 1, end_of_generation_tokens(vocab_));
  ASSERT_TRUE(s.is_ok());
  auto ok = allowed(s->get());
  size_t eog = 0;
  for (int32_t t = 0; t < n_vocab_; ++t) eog += llama_vocab_is_eog(vocab_, t) ? 1 : 0;
  ASSERT_GT(eog, 0u);
  EXPECT_EQ(ok.size(), static_cast<size_t>(n_vocab_) - eog);
  for (llama_token t : ok) EXPECT_FALSE(llama_vocab_is_eog(vocab_, t));
}

}  // namespace
}  // namespace llmpool::engine
