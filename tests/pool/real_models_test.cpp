// The pool with two real local models (the tiny test model and a copy of
// it) under a memory budget that fits only one.
#include <gtest/gtest.h>

#include <filesystem>
#include <future>

#include "pool/model_pool.h"
#include "pool/pool_test_util.h"
#include "providers/local_provider.h"

namespace llmpool::pool {
namespace {

using namespace std::chrono_literals;
using testing::acquire_now;
using testing::ManualClock;
using testing::ModelFiles;
using testing::state_of;

using ProviderStatsOr = Result<providers::ProviderStats>;

class RealModelsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tiny = std::string(LLMPOOL_TEST_MODELS_DIR) + "/tiny-q8_0.gguf";
    ASSERT_TRUE(std::filesystem::exists(tiny)) << tiny;
    path_a_ = files_.dir() + "/a.gguf";
    path_b_ = files_.dir() + "/b.gguf";
    std::filesystem::copy_file(tiny, path_a_);
    std::filesystem::copy_file(tiny, path_b_);
    file_size_ = std::filesystem::file_size(tiny);
  }
  config::ModelConfig model(const std::string& name, const std::string& path, int64_t keep_alive_ms = 300000) const {
    config::ModelConfig m;
    m.name = name;
    m.path = path;
    m.context = 256;
    m.parallel = 1;
    m.threads = 1;
    m.keep_alive_ms = keep_alive_ms;
    return m;
  }
  // What one loaded copy of the model measures (weights, KV cache, compute).
  ProviderStatsOr loaded_stats(const config::ModelConfig& m) const {
    auto p = providers::LocalProvider::create(m);
    if (!p) return p.status();
    return (*p)->stats();
  }
  ModelPool& make_pool(uint64_t budget, int64_t keep_alive_ms = 300000) {
    config::Config cfg;
    cfg.pool.memory_budget_bytes = budget;
    cfg.pool.watchdog_free_memory_percent = 0;
    for (auto [name, path] : {std::pair{"a", path_a_}, std::pair{"b", path_b_}})
      cfg.models.push_back(model(name, path, keep_alive_ms));
    ModelPool::Options o;
    o.clock = clock_.fn();
    o.housekeeping_thread = false;
    o.metrics = &metrics_;
    pool_ = std::make_unique<ModelPool>(cfg, std::move(o));
    pool_->start();
    return *pool_;
  }
  static GenerateRequest request(int max_tokens) {
    GenerateRequest r;
    r.messages = {{"user", "Tell me a long story."}};
    r.sampling.max_tokens = max_tokens;
    r.sampling.ignore_eos = true;
    r.sampling.temperature = 0;
    return r;
  }
  // Runs a short request to the end and returns its completion.
  static Result<Completion> run(const providers::ProviderPtr& p) {
    std::promise<Result<Completion>> done;
    GenerateCallbacks cb;
    cb.on_done = [&](Result<Completion> r) { done.set_value(std::move(r)); };
    p->generate(request(4), std::make_shared<CancelToken>(), std::move(cb));
    return done.get_future().get();
  }

  ModelFiles files_;
  std::string path_a_, path_b_;
  uint64_t file_size_ = 0;
  ManualClock clock_;
  obs::MetricsRegistry metrics_;
  std::unique_ptr<ModelPool> pool_;
};

TEST_F(RealModelsTest, EvictsTheIdleModelAndNeverTheBusyOne) {
  auto one = loaded_stats(model("a", path_a_));
  ASSERT_TRUE(one.is_ok()) << one.status().to_string();
  // Room for one model as measured, not for a second as estimated.
  ModelPool& pool = make_pool(one->memory_bytes + providers::LocalProvider::estimate_memory(model("b", path_b_)) / 2);
  {
    auto a = acquire_now(pool, "a");
    ASSERT_TRUE(a.is_ok()) << a.status().to_string();
    auto c = run(*a);
    ASSERT_TRUE(c.is_ok()) << c.status().to_string();
    EXPECT_EQ(c->usage.completion_tokens, 4);
  }
  EXPECT_EQ(state_of(pool, "a"), "ready");
  EXPECT_GT(pool.status().memory_used_bytes, 0u);

  // b needs a's room: a is idle, so it is evicted.
  auto b = acquire_now(pool, "b");
  ASSERT_TRUE(b.is_ok()) << b.status().to_string();
  EXPECT_EQ(state_of(pool, "a"), "unloaded");
  EXPECT_EQ(state_of(pool, "b"), "ready");

  // A request in flight on b, held mid-stream by its first token.
  std::promise<void> first_token, go_on;
  std::shared_future<void> go = go_on.get_future().share();
  std::promise<Result<Completion>> finished;
  std::atomic<bool> seen{false};
  GenerateCallbacks cb;
  cb.on_delta = [&, go](Delta) {
    if (!seen.exchange(true)) {
      first_token.set_value();
      go.wait();
    }
  };
  cb.on_done = [&](Result<Completion> r) { finished.set_value(std::move(r)); };
  (*b)->generate(request(16), std::make_shared<CancelToken>(), std::move(cb));
  b = Status::internal("lease dropped: only the request holds b now");
  first_token.get_future().wait();

  auto refused = acquire_now(pool, "a");
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(refused.status().message().find("'b'"), std::string::npos) << refused.status().message();
  EXPECT_EQ(state_of(pool, "b"), "ready");

  go_on.set_value();
  auto done = finished.get_future().get();
  ASSERT_TRUE(done.is_ok()) << done.status().to_string();
  EXPECT_EQ(done->usage.completion_tokens, 16);  // the stream was never cut

  auto a = acquire_now(pool, "a");
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  EXPECT_EQ(state_of(pool, "b"), "unloaded");
  ASSERT_TRUE(run(*a).is_ok());
  pool.tick();  // drops b's provider here, off its engine thread
}

TEST_F(RealModelsTest, KeepAliveExpiryUnloadsARealModel) {
  ModelPool& pool = make_pool(0, 1000);
  {
    auto a = acquire_now(pool, "a");
    ASSERT_TRUE(a.is_ok()) << a.status().to_string();
    ASSERT_TRUE(run(*a).is_ok());
  }
  clock_.advance(500ms);
  pool.tick();
  EXPECT_EQ(state_of(pool, "a"), "ready");
  clock_.advance(600ms);
  pool.tick();
  EXPECT_EQ(state_of(pool, "a"), "unloaded");
  EXPECT_EQ(pool.status().memory_used_bytes, 0u);
  // And it loads again on the next request.
  auto again = acquire_now(pool, "a");
  ASSERT_TRUE(again.is_ok());
  ASSERT_TRUE(run(*again).is_ok());
}

TEST_F(RealModelsTest, AFileThatIsNotAModelFailsUntilItIsReplaced) {
  { std::ofstream(path_a_, std::ios::trunc) << "not a gguf file"; }
  ModelPool& pool = make_pool(0);
  auto r = acquire_now(pool, "a");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("failed to load"), std::string::npos) << r.status().message();
  EXPECT_EQ(r.status().message().find(files_.dir()), std::string::npos) << "the client sees the file's path";
  EXPECT_EQ(state_of(pool, "a"), "failed");
  EXPECT_EQ(acquire_now(pool, "a").status().code(), StatusCode::kUnavailable);
  std::filesystem::copy_file(path_b_, path_a_, std::filesystem::copy_options::overwrite_existing);
  auto ok = acquire_now(pool, "a");
  ASSERT_TRUE(ok.is_ok()) << ok.status().to_string();
  ASSERT_TRUE(run(*ok).is_ok());
}

// The pool counts what the engine measures: weights, KV cache and compute
// buffers, and the host prompt cache's budget; before loading it counts the weights and KV cache the GGUF
// header implies, which a q8_0 cache roughly halves (where the model's head
// size allows q8_0 at all).
TEST_F(RealModelsTest, BudgetCountsWeightsKvCacheAndComputeBuffers) {
  auto stats = loaded_stats(model("a", path_a_));
  ASSERT_TRUE(stats.is_ok()) << stats.status().to_string();
  EXPECT_GT(stats->weights_bytes, 0u);
  EXPECT_GT(stats->kv_cache_bytes, 0u);
  EXPECT_GT(stats->compute_bytes, 0u);
  EXPECT_EQ(stats->prompt_cache_bytes, stats->kv_cache_bytes);  // by default as much as the KV cache
  EXPECT_EQ(stats->memory_bytes,
            stats->weights_bytes + stats->kv_cache_bytes + stats->compute_bytes + stats->prompt_cache_bytes);
  EXPECT_GT(stats->memory_bytes, file_size_);

  config::ModelConfig f16 = model("a", path_a_);
  config::ModelConfig q8 = f16;
  q8.kv_type = "q8_0";
  const uint64_t est_f16 = providers::LocalProvider::estimate_memory(f16);
  const uint64_t est_q8 = providers::LocalProvider::estimate_memory(q8);
  // The header's sizes give llama.cpp's KV figure (and the prompt cache's budget).
  EXPECT_EQ(est_f16, file_size_ + stats->kv_cache_bytes + stats->prompt_cache_bytes);
  EXPECT_LT(est_q8 - file_size_, (est_f16 - file_size_) * 6 / 10);  // the KV cache and the prompt cache's budget
  config::ModelConfig no_cache = f16;
  no_cache.prompt_cache_mb = 0;
  EXPECT_EQ(providers::LocalProvider::estimate_memory(no_cache), file_size_ + stats->kv_cache_bytes);
  // The tiny model's heads (16) are narrower than a q8_0 block (32): the
  // load says so instead of failing later.
  auto q8_stats = loaded_stats(q8);
  ASSERT_FALSE(q8_stats.is_ok());
  EXPECT_EQ(q8_stats.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(q8_stats.status().message().find("kv_type q8_0"), std::string::npos) << q8_stats.status().message();

  ModelPool& pool = make_pool(0);
  auto a = acquire_now(pool, "a");
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  EXPECT_EQ(pool.status().memory_used_bytes, stats->memory_bytes);
  a = Status::internal("released");
  pool.tick();
}

}  // namespace
}  // namespace llmpool::pool
