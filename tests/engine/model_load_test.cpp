// Model tests (ctest label `model`): the files engine/model_writer writes are
// real models to llama.cpp. Each test writes a model, loads it on the CPU,
// decodes a tokenized chat prompt, checks the logits, and checks that the
// ChatML template is found and applied.
#include <gtest/gtest.h>
#include <llama-cpp.h>
#include <llama.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

#include "engine/model_writer.h"
#include "engine/weight_layouts.h"

namespace llmpool::engine {
namespace {

namespace fs = std::filesystem;

// llama.cpp's log, kept in memory and printed only when a test fails.
std::mutex g_log_mutex;
std::string g_log;

void capture_log(ggml_log_level /*level*/, const char* text, void* /*user_data*/) {
  std::lock_guard lock(g_log_mutex);
  if (g_log.size() < (4u << 20)) g_log += text;
}

class LlamaEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    llama_log_set(capture_log, nullptr);
    llama_backend_init();
  }
  void TearDown() override { llama_backend_free(); }
};

[[maybe_unused]] ::testing::Environment* const g_llama_env =
    ::testing::AddGlobalTestEnvironment(new LlamaEnvironment);

constexpr int kThreads = 2;

class ModelLoadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    {
      std::lock_guard lock(g_log_mutex);
      g_log.clear();
    }
    dir_ = fs::path(LLMPOOL_TEST_MODELS_DIR) / "model_load_test";
    fs::create_directories(dir_);
  }

  void TearDown() override {
    for (const std::string& path : written_) {
      std::error_code ec;
      fs::remove(path, ec);
    }
    if (HasFailure()) {
      std::lock_guard lock(g_log_mutex);
      std::fprintf(stderr, "---- llama.cpp log ----\n%s---- end of llama.cpp log ----\n", g_log.c_str());
    }
  }

  // Writes a model from `preset` in `type` and returns its path (removed in TearDown).
  std::string write(std::string_view preset_name, WeightType type, WrittenModel* written) {
    auto preset = find_model_preset(preset_name);
    EXPECT_TRUE(preset.is_ok());
    ModelWriterOptions o;
    o.shape = preset->shape;
    o.type = type;
    o.seed = 1234;
    o.vocab_path = vocab_file_path(LLMPOOL_VOCAB_DIR, preset->vocab_name);
    o.output_path = (dir_ / (std::string(preset_name) + "-" + std::string(weight_type_name(type)) + ".gguf")).string();
    o.name = "model-load-test";
    o.n_threads = kThreads;
    written_.push_back(o.output_path);
    const Status s = write_model(o, written);
    EXPECT_TRUE(s.is_ok()) << s.to_string();
    return o.output_path;
  }

  fs::path dir_;
  std::vector<std::string> written_;
};

std::string apply_template(const char* tmpl, const std::vector<llama_chat_message>& chat) {
  std::vector<char> buf(1024);
  int32_t n = llama_chat_apply_template(tmpl, chat.data(), chat.size(), true, buf.data(),
                                        static_cast<int32_t>(buf.size()));
  if (n > static_cast<int32_t>(buf.size())) {
    buf.resize(static_cast<size_t>(n));
    n = llama_chat_apply_template(tmpl, chat.data(), chat.size(), true, buf.data(), n);
  }
  return n < 0 ? std::string() : std::string(buf.data(), static_cast<size_t>(n));
}

// Checks that the last logits are finite and not all equal; returns the argmax.
llama_token check_logits(llama_context* ctx, int32_t n_vocab) {
  const float* logits = llama_get_logits_ith(ctx, -1);
  EXPECT_NE(logits, nullptr);
  if (logits == nullptr) return 0;
  int non_finite = 0;
  float lo = logits[0], hi = logits[0];
  llama_token best = 0;
  for (int32_t i = 0; i < n_vocab; ++i) {
    if (!std::isfinite(logits[i])) ++non_finite;
    lo = std::min(lo, logits[i]);
    if (logits[i] > hi) {
      hi = logits[i];
      best = i;
    }
  }
  EXPECT_EQ(non_finite, 0);
  EXPECT_LT(lo, hi);
  return best;
}

// Loads `path` with the engine's parameters on the CPU, checks the chat
// template, decodes a formatted chat prompt and three greedy tokens.
void expect_model_works(const std::string& path, const WrittenModel& written) {
  llama_model_params mp = model_params();
  mp.n_gpu_layers = 0;
  llama_model_ptr model{llama_model_load_from_file(path.c_str(), mp)};
  ASSERT_TRUE(model) << "cannot load " << path;
  const llama_vocab* vocab = llama_model_get_vocab(model.get());
  const int32_t n_vocab = llama_vocab_n_tokens(vocab);
  EXPECT_EQ(static_cast<uint32_t>(n_vocab), written.n_vocab);
  EXPECT_EQ(llama_model_n_params(model.get()), written.n_params);

  const char* tmpl = llama_model_chat_template(model.get(), nullptr);
  ASSERT_NE(tmpl, nullptr);
  EXPECT_EQ(std::string_view(tmpl), kChatMlTemplate);
  const std::vector<llama_chat_message> chat = {{"system", "You are terse."}, {"user", "Say hello."}};
  const std::string prompt = apply_template(tmpl, chat);
  EXPECT_EQ(prompt,
            "<|im_start|>system\nYou are terse.<|im_end|>\n"
            "<|im_start|>user\nSay hello.<|im_end|>\n"
            "<|im_start|>assistant\n");

  std::vector<llama_token> tokens(prompt.size() + 8);
  const int32_t n_tokens = llama_tokenize(vocab, prompt.c_str(), static_cast<int32_t>(prompt.size()),
                                          tokens.data(), static_cast<int32_t>(tokens.size()), true, true);
  ASSERT_GT(n_tokens, 4);
  tokens.resize(static_cast<size_t>(n_tokens));

  llama_context_params cp = llama_context_default_params();
  cp.n_ctx = 256;
  cp.n_batch = 256;
  cp.n_ubatch = 256;
  cp.n_threads = kThreads;
  cp.n_threads_batch = kThreads;
  llama_context_ptr ctx{llama_init_from_model(model.get(), cp)};
  ASSERT_TRUE(ctx);

  ASSERT_EQ(llama_decode(ctx.get(), llama_batch_get_one(tokens.data(), n_tokens)), 0);
  llama_token next = check_logits(ctx.get(), n_vocab);
  for (int step = 0; step < 3; ++step) {
    ASSERT_GE(next, 0);
    ASSERT_LT(next, n_vocab);
    ASSERT_EQ(llama_decode(ctx.get(), llama_batch_get_one(&next, 1)), 0);
    next = check_logits(ctx.get(), n_vocab);
  }
}

class TinyModelLoadTest : public ModelLoadTest, public ::testing::WithParamInterface<WeightType> {};

TEST_P(TinyModelLoadTest, LoadsAndDecodes) {
  WrittenModel written;
  const std::string path = write("tiny", GetParam(), &written);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(written.n_vocab, 32000u);
  expect_model_works(path, written);
}

INSTANTIATE_TEST_SUITE_P(WeightTypes, TinyModelLoadTest,
                         ::testing::Values(WeightType::kF16, WeightType::kQ8_0, WeightType::kQ4_0, WeightType::kF32),
                         [](const ::testing::TestParamInfo<WeightType>& info) {
                           return std::string(weight_type_name(info.param));
                         });

TEST_F(ModelLoadTest, Bench05bQ8_0LoadsAndDecodes) {
  WrittenModel written;
  const std::string path = write("bench-0.5b", WeightType::kQ8_0, &written);
  ASSERT_FALSE(HasFailure());
  EXPECT_EQ(written.n_vocab, 151936u);
  // The Qwen2.5-0.5B shape with a separate output.weight: ~630M parameters,
  // ~640 MiB in q8_0.
  EXPECT_NEAR(static_cast<double>(written.file_size) / (1 << 20), 640.0, 10.0);
  expect_model_works(path, written);
}

TEST_F(ModelLoadTest, Bench05bQ4_0LoadsAndDecodes) {
  WrittenModel written;
  const std::string path = write("bench-0.5b", WeightType::kQ4_0, &written);
  ASSERT_FALSE(HasFailure());
  expect_model_works(path, written);
}

// The weight-layout check answers once per process, says what it checked,
// and model_params() follows it and the caller's `repack`.
TEST(WeightLayoutsTest, TheCheckAnswersOnceAndModelParamsFollowIt) {
  const WeightLayoutCheck& first = check_weight_layouts();
  EXPECT_EQ(&first, &check_weight_layouts());
  EXPECT_FALSE(first.detail.empty());
  EXPECT_EQ(model_params().use_extra_bufts, first.extra_layouts);
  EXPECT_FALSE(model_params(false).use_extra_bufts);
  // Either way, a model loaded with these parameters decodes (above: every
  // weight type; on a CPU whose AMX kernels fail, it would die without them).
}

}  // namespace
}  // namespace llmpool::engine
