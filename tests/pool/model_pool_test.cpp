#include "pool/model_pool.h"

#include <gtest/gtest.h>

#include <thread>

#include "pool/pool_test_util.h"

namespace llmpool::pool {
namespace {

using namespace std::chrono_literals;
using testing::acquire_now;
using testing::Answer;
using testing::FakeMaker;
using testing::ManualClock;
using testing::ModelFiles;
using testing::state_of;

config::ModelConfig local(const std::string& name, const std::string& path) {
  config::ModelConfig m;
  m.name = name;
  m.path = path;
  return m;
}

class ModelPoolTest : public ::testing::Test {
 protected:
  // Builds and starts the pool over `cfg` with the fakes.
  ModelPool& make_pool(config::Config cfg) {
    ModelPool::Options o;
    o.make_provider = maker_.fn();
    o.clock = clock_.fn();
    o.meminfo = [this]() -> std::optional<MemInfo> { return meminfo_; };
    o.metrics = &metrics_;
    o.housekeeping_thread = false;
    pool_ = std::make_unique<ModelPool>(cfg, std::move(o));
    pool_->start();
    return *pool_;
  }
  config::Config two_models(uint64_t budget) {
    config::Config cfg;
    cfg.pool.memory_budget_bytes = budget;
    cfg.pool.watchdog_free_memory_percent = 0;
    cfg.models = {local("a", files_.make("a", 1000)), local("b", files_.make("b", 1000))};
    return cfg;
  }
  double metric(const std::string& line_prefix) {
    std::string text = metrics_.render();
    size_t at = text.find("\n" + line_prefix + " ");
    if (at == std::string::npos) return -1;
    return std::stod(text.substr(at + line_prefix.size() + 2));
  }
  // Starts a request on `p` that stays in flight until the fake finishes it.
  static void start_request(const providers::ProviderPtr& p, std::atomic<int>* done = nullptr) {
    GenerateCallbacks cb;
    cb.on_done = [done](Result<Completion>) {
      if (done) ++*done;
    };
    p->generate(GenerateRequest{}, std::make_shared<CancelToken>(), std::move(cb));
  }

  ModelFiles files_;
  FakeMaker maker_;
  ManualClock clock_;
  obs::MetricsRegistry metrics_;
  std::optional<MemInfo> meminfo_;
  std::unique_ptr<ModelPool> pool_;
};

TEST_F(ModelPoolTest, LoadsLazilyOnFirstAcquire) {
  ModelPool& pool = make_pool(two_models(0));
  EXPECT_EQ(state_of(pool, "a"), "unloaded");
  EXPECT_EQ(maker_.calls("a"), 0);
  auto p = acquire_now(pool, "a");
  ASSERT_TRUE(p.is_ok()) << p.status().to_string();
  EXPECT_EQ((*p)->info().name, "a");
  EXPECT_EQ(state_of(pool, "a"), "ready");
  EXPECT_EQ(state_of(pool, "b"), "unloaded");
  EXPECT_EQ(maker_.calls("a"), 1);
  EXPECT_EQ(metric("llmpool_model_loads_total{model=\"a\",result=\"ok\"}"), 1);
  EXPECT_EQ(metric("llmpool_models_loaded"), 1);
  // A second acquire reuses the loaded model.
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
  EXPECT_EQ(maker_.calls("a"), 1);
}

TEST_F(ModelPoolTest, UnknownNameIsNotFoundAndAliasesResolve) {
  config::Config cfg = two_models(0);
  cfg.models[0].aliases = {"alpha"};
  ModelPool& pool = make_pool(cfg);
  auto r = acquire_now(pool, "nope");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kNotFound);
  EXPECT_EQ(r.status().error_code(), "model_not_found");
  auto a = acquire_now(pool, "alpha");
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ((*a)->info().name, "a");
}

TEST_F(ModelPoolTest, ConcurrentAcquiresOfALoadingModelWaitAndShareOneLoad) {
  ModelPool& pool = make_pool(two_models(0));
  maker_.hold();
  std::vector<std::unique_ptr<Answer>> answers;
  for (int i = 0; i < 5; ++i) {
    answers.push_back(std::make_unique<Answer>());
    pool.acquire("a", answers.back()->callback());
  }
  std::this_thread::sleep_for(50ms);
  for (auto& a : answers) EXPECT_FALSE(a->ready());
  EXPECT_EQ(state_of(pool, "a"), "loading");
  EXPECT_EQ(pool.status().models[0].waiting_for_load, 5);
  maker_.release();
  for (auto& a : answers) {
    auto r = a->get();
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  }
  EXPECT_EQ(maker_.calls("a"), 1);
  EXPECT_EQ(state_of(pool, "a"), "ready");
}

TEST_F(ModelPoolTest, WaitersGiveUpAfterTheLoadTimeoutAndTheLoadGoesOn) {
  config::Config cfg = two_models(0);
  cfg.pool.load_timeout_ms = 1000;
  ModelPool& pool = make_pool(cfg);
  maker_.hold();
  Answer a;
  pool.acquire("a", a.callback());
  clock_.advance(999ms);
  pool.tick();
  EXPECT_FALSE(a.ready());
  clock_.advance(2ms);
  pool.tick();
  auto r = a.get();
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kDeadlineExceeded);
  EXPECT_NE(r.status().message().find("still loading"), std::string::npos) << r.status().message();
  maker_.release();
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
  EXPECT_EQ(maker_.calls("a"), 1);
}

TEST_F(ModelPoolTest, KeepAliveExpiryUnloadsAnIdleModelButNeverABusyOne) {
  config::Config cfg = two_models(0);
  cfg.models[0].keep_alive_ms = 60000;
  cfg.models[1].keep_alive_ms = 60000;
  ModelPool& pool = make_pool(cfg);
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());  // the lease ends at once: idle from now
  auto b = acquire_now(pool, "b");
  ASSERT_TRUE(b.is_ok());
  start_request(*b);
  b = Status::internal("drop the lease; the request holds the model");
  clock_.advance(59s);
  pool.tick();
  EXPECT_EQ(state_of(pool, "a"), "ready");
  clock_.advance(2s);
  pool.tick();
  EXPECT_EQ(state_of(pool, "a"), "unloaded");
  EXPECT_EQ(state_of(pool, "b"), "ready");  // busy: its keep-alive counts from its last request
  EXPECT_EQ(metric("llmpool_model_unloads_total{model=\"a\",reason=\"keep_alive\"}"), 1);
  EXPECT_EQ(maker_.alive(), 1);  // a's provider is gone
  maker_.last("b")->finish_all();
  clock_.advance(59s);
  pool.tick();
  EXPECT_EQ(state_of(pool, "b"), "ready");
  clock_.advance(2s);
  pool.tick();
  EXPECT_EQ(state_of(pool, "b"), "unloaded");
  EXPECT_EQ(maker_.alive(), 0);
  // Unloaded models load again on demand.
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
  EXPECT_EQ(maker_.calls("a"), 2);
}

TEST_F(ModelPoolTest, KeepAliveZeroUnloadsWhenIdleAndForeverNever) {
  config::Config cfg = two_models(0);
  cfg.models[0].keep_alive_ms = 0;
  cfg.models[1].keep_alive_ms = config::kKeepAliveForever;
  ModelPool& pool = make_pool(cfg);
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
  ASSERT_TRUE(acquire_now(pool, "b").is_ok());
  pool.tick();
  EXPECT_EQ(state_of(pool, "a"), "unloaded");
  clock_.advance(std::chrono::hours(24 * 30));
  pool.tick();
  EXPECT_EQ(state_of(pool, "b"), "ready");
}

TEST_F(ModelPoolTest, EvictsTheIdleModelWhenTheBudgetFitsOnlyOne) {
  ModelPool& pool = make_pool(two_models(1500));
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
  ASSERT_TRUE(acquire_now(pool, "b").is_ok());
  EXPECT_EQ(state_of(pool, "a"), "unloaded");
  EXPECT_EQ(state_of(pool, "b"), "ready");
  EXPECT_EQ(metric("llmpool_model_evictions_total{model=\"a\",reason=\"memory_budget\"}"), 1);
  EXPECT_EQ(pool.status().memory_used_bytes, 1000u);
  pool.tick();
  EXPECT_EQ(maker_.alive(), 1);
}

TEST_F(ModelPoolTest, NeverEvictsABusyModelAndSaysWhy) {
  ModelPool& pool = make_pool(two_models(1500));
  auto a = acquire_now(pool, "a");
  ASSERT_TRUE(a.is_ok());
  std::atomic<int> done{0};
  start_request(*a, &done);
  a = Status::internal("the lease is gone; the request is still in flight");
  auto b = acquire_now(pool, "b");
  ASSERT_FALSE(b.is_ok());
  EXPECT_EQ(b.status().code(), StatusCode::kResourceExhausted);
  const std::string& msg = b.status().message();
  EXPECT_NE(msg.find("memory_budget"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'a'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("busy"), std::string::npos) << msg;
  EXPECT_EQ(state_of(pool, "a"), "ready");
  EXPECT_EQ(state_of(pool, "b"), "unloaded");
  EXPECT_EQ(maker_.calls("b"), 0);
  // Once the request ends, the idle model makes room.
  maker_.last("a")->finish_all();
  EXPECT_EQ(done.load(), 1);
  ASSERT_TRUE(acquire_now(pool, "b").is_ok());
  EXPECT_EQ(state_of(pool, "a"), "unloaded");
}

TEST_F(ModelPoolTest, AHeldLeaseAlsoKeepsTheModel) {
  ModelPool& pool = make_pool(two_models(1500));
  auto a = acquire_now(pool, "a");
  ASSERT_TRUE(a.is_ok());
  EXPECT_FALSE(acquire_now(pool, "b").is_ok());
  a = Status::internal("released");
  EXPECT_TRUE(acquire_now(pool, "b").is_ok());
}

TEST_F(ModelPoolTest, NeverEvictsAPinnedModel) {
  config::Config cfg = two_models(1500);
  cfg.models[0].pinned = true;
  ModelPool& pool = make_pool(cfg);
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
  auto b = acquire_now(pool, "b");
  ASSERT_FALSE(b.is_ok());
  EXPECT_EQ(b.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(b.status().message().find("pinned"), std::string::npos) << b.status().message();
  // Pinned models ignore keep-alive too.
  clock_.advance(std::chrono::hours(1));
  pool.tick();
  EXPECT_EQ(state_of(pool, "a"), "ready");
}

TEST_F(ModelPoolTest, EvictsLowestPriorityThenLeastRecentlyUsed) {
  config::Config cfg;
  cfg.pool.memory_budget_bytes = 2500;  // two of three
  cfg.pool.watchdog_free_memory_percent = 0;
  cfg.models = {local("a", files_.make("a", 1000)), local("b", files_.make("b", 1000)),
                local("c", files_.make("c", 1000))};
  ModelPool& pool = make_pool(cfg);
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
  clock_.advance(1s);
  ASSERT_TRUE(acquire_now(pool, "b").is_ok());
  clock_.advance(1s);
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());  // a is now the most recently used
  clock_.advance(1s);
  ASSERT_TRUE(acquire_now(pool, "c").is_ok());
  EXPECT_EQ(state_of(pool, "a"), "ready");
  EXPECT_EQ(state_of(pool, "b"), "unloaded");
  EXPECT_EQ(state_of(pool, "c"), "ready");

  // With priorities, the lower one goes first whatever its age.
  config::Config cfg2 = cfg;
  cfg2.models[2].priority = 5;  // c: a changed model, loaded afresh
  cfg2.models[0].priority = 0;
  cfg2.models[1].priority = -1;
  pool.apply(cfg2);
  ASSERT_TRUE(acquire_now(pool, "b").is_ok());   // a ready, b ready (c's old version dropped)
  pool.tick();
  clock_.advance(1s);
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
  clock_.advance(1s);
  ASSERT_TRUE(acquire_now(pool, "c").is_ok());
  EXPECT_EQ(state_of(pool, "b"), "unloaded");  // priority -1, though a was used before it
  EXPECT_EQ(state_of(pool, "a"), "ready");
}

TEST_F(ModelPoolTest, MaxLoadedModelsEvictsToo) {
  config::Config cfg = two_models(0);
  cfg.pool.max_loaded_models = 1;
  ModelPool& pool = make_pool(cfg);
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
  ASSERT_TRUE(acquire_now(pool, "b").is_ok());
  EXPECT_EQ(state_of(pool, "a"), "unloaded");
  EXPECT_EQ(metric("llmpool_model_evictions_total{model=\"a\",reason=\"max_loaded_models\"}"), 1);
}

TEST_F(ModelPoolTest, AModelLargerThanTheWholeBudgetIsRefused) {
  ModelPool& pool = make_pool(two_models(500));
  auto r = acquire_now(pool, "a");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(r.status().message().find("more than the whole"), std::string::npos);
}

TEST_F(ModelPoolTest, AFailedLoadStaysFailedUntilItsFileChanges) {
  ModelPool& pool = make_pool(two_models(0));
  maker_.fail("a", true);
  auto r = acquire_now(pool, "a");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_NE(r.status().message().find("bad file"), std::string::npos);
  EXPECT_EQ(state_of(pool, "a"), "failed");
  EXPECT_NE(pool.list()[0].error.find("bad file"), std::string::npos);
  EXPECT_EQ(metric("llmpool_model_loads_total{model=\"a\",result=\"failed\"}"), 1);
  maker_.fail("a", false);
  // Out of rotation: no second try while the file is the same.
  r = acquire_now(pool, "a");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(maker_.calls("a"), 1);
  // A new file: tried again.
  files_.make("a", 1200);
  r = acquire_now(pool, "a");
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ(maker_.calls("a"), 2);
  EXPECT_EQ(state_of(pool, "a"), "ready");
}

TEST_F(ModelPoolTest, AFailedModelComesBackWhenItsConfigChanges) {
  config::Config cfg = two_models(0);
  ModelPool& pool = make_pool(cfg);
  maker_.fail("a", true);
  ASSERT_FALSE(acquire_now(pool, "a").is_ok());
  maker_.fail("a", false);
  cfg.models[0].context = 1024;
  pool.apply(cfg);
  EXPECT_EQ(state_of(pool, "a"), "unloaded");
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
}

TEST_F(ModelPoolTest, OperatorLoadRetriesAndUnloadRefusesABusyModel) {
  ModelPool& pool = make_pool(two_models(0));
  maker_.fail("a", true);
  ASSERT_FALSE(acquire_now(pool, "a").is_ok());
  maker_.fail("a", false);
  std::promise<Status> loaded;
  pool.load("a", [&](Status st) { loaded.set_value(st); });
  Status st = loaded.get_future().get();
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  EXPECT_EQ(state_of(pool, "a"), "ready");

  auto a = acquire_now(pool, "a");
  Status busy = pool.unload("a");
  EXPECT_FALSE(busy.is_ok());
  EXPECT_EQ(busy.error_code(), "model_busy");
  a = Status::internal("released");
  EXPECT_TRUE(pool.unload("a").is_ok());
  EXPECT_EQ(state_of(pool, "a"), "unloaded");
  EXPECT_EQ(metric("llmpool_model_unloads_total{model=\"a\",reason=\"operator\"}"), 1);
  EXPECT_EQ(pool.unload("zzz").code(), StatusCode::kNotFound);
}

TEST_F(ModelPoolTest, ReloadAddsChangesAndRemovesModelsWithoutDroppingARequest) {
  config::Config cfg;
  cfg.pool.watchdog_free_memory_percent = 0;
  cfg.models = {local("keep", files_.make("keep", 100)), local("change", files_.make("change", 100)),
                local("remove", files_.make("remove", 100))};
  ModelPool& pool = make_pool(cfg);
  for (const char* n : {"keep", "change", "remove"}) ASSERT_TRUE(acquire_now(pool, n).is_ok());
  auto old_change = acquire_now(pool, "change");
  ASSERT_TRUE(old_change.is_ok());
  std::atomic<int> done{0};
  start_request(*old_change, &done);
  old_change = Status::internal("lease dropped; the request goes on");
  auto old_provider = maker_.last("change");

  config::Config next = cfg;
  next.models[1].context = 8192;                       // changed
  next.models.erase(next.models.begin() + 2);          // removed
  next.models.push_back(local("add", files_.make("add", 100)));  // added
  ApplySummary s = pool.apply(next);
  EXPECT_EQ(s.unchanged, std::vector<std::string>{"keep"});
  EXPECT_EQ(s.changed, std::vector<std::string>{"change"});
  EXPECT_EQ(s.removed, std::vector<std::string>{"remove"});
  EXPECT_EQ(s.added, std::vector<std::string>{"add"});

  std::vector<std::string> names;
  for (const auto& e : pool.list()) names.push_back(e.info.name);
  EXPECT_EQ(names, (std::vector<std::string>{"keep", "change", "add"}));
  EXPECT_EQ(state_of(pool, "keep"), "ready");      // kept its provider
  EXPECT_EQ(state_of(pool, "change"), "unloaded");  // a new entry, loaded on demand
  EXPECT_EQ(acquire_now(pool, "remove").status().code(), StatusCode::kNotFound);

  pool.tick();
  // The removed idle model is gone; the changed one's old version still serves its request.
  EXPECT_EQ(maker_.alive(), 2);
  EXPECT_EQ(pool.status().retired_busy, 1);
  auto fresh = acquire_now(pool, "change");
  ASSERT_TRUE(fresh.is_ok());
  EXPECT_EQ((*fresh)->info().context, 8192);
  EXPECT_EQ(maker_.calls("change"), 2);
  EXPECT_EQ(maker_.calls("keep"), 1);
  EXPECT_EQ(maker_.alive(), 3);

  old_provider->finish_all();
  EXPECT_EQ(done.load(), 1);
  old_provider.reset();
  pool.tick();
  EXPECT_EQ(maker_.alive(), 2);
  EXPECT_EQ(pool.status().retired_busy, 0);
}

TEST_F(ModelPoolTest, AModelRemovedWhileLoadingStillAnswersItsWaiters) {
  config::Config cfg = two_models(0);
  ModelPool& pool = make_pool(cfg);
  maker_.hold();
  Answer a;
  pool.acquire("a", a.callback());
  config::Config next = cfg;
  next.models.erase(next.models.begin());
  pool.apply(next);
  maker_.release();
  auto r = a.get();
  ASSERT_TRUE(r.is_ok()) << r.status().to_string();
  EXPECT_EQ((*r)->info().name, "a");
  r = Status::internal("released");
  pool.tick();
  EXPECT_EQ(maker_.alive(), 0);
}

TEST_F(ModelPoolTest, WarmModelsLoadAtStartAndIgnoreKeepAlive) {
  config::Config cfg = two_models(0);
  cfg.models[1].warm = true;
  cfg.models[1].keep_alive_ms = 0;
  ModelPool& pool = make_pool(cfg);
  for (int i = 0; i < 500 && state_of(pool, "b") != "ready"; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(state_of(pool, "b"), "ready");
  EXPECT_EQ(state_of(pool, "a"), "unloaded");
  clock_.advance(std::chrono::hours(1));
  pool.tick();
  EXPECT_EQ(state_of(pool, "b"), "ready");
}

TEST_F(ModelPoolTest, RemoteModelsAreReadyAtOnceAndCountNoMemory) {
  config::Config cfg = two_models(1500);
  config::ModelConfig r;
  r.name = "remote";
  r.type = "openai";
  r.base_url = "http://127.0.0.1:1/v1";
  cfg.models.push_back(r);
  cfg.pool.max_loaded_models = 1;
  ModelPool& pool = make_pool(cfg);
  EXPECT_EQ(state_of(pool, "remote"), "ready");
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
  EXPECT_EQ(state_of(pool, "remote"), "ready");  // it took no slot and no memory
  EXPECT_EQ(pool.status().memory_used_bytes, 1000u);
  clock_.advance(std::chrono::hours(1));
  pool.tick();
  EXPECT_EQ(state_of(pool, "remote"), "ready");  // nothing to free: no keep-alive
}

TEST_F(ModelPoolTest, WatchdogEvictsIdleUnpinnedModelsUnderTheFreeMemoryThreshold) {
  config::Config cfg;
  cfg.pool.watchdog_free_memory_percent = 20;
  cfg.pool.watchdog_interval_ms = 1000;
  cfg.models = {local("idle", files_.make("idle", 1000)), local("busy", files_.make("busy", 1000)),
                local("pinned", files_.make("pinned", 1000))};
  cfg.models[2].pinned = true;
  meminfo_ = MemInfo{100000, 50000};  // 50% free
  ModelPool& pool = make_pool(cfg);
  ASSERT_TRUE(acquire_now(pool, "idle").is_ok());
  auto busy = acquire_now(pool, "busy");
  ASSERT_TRUE(busy.is_ok());
  ASSERT_TRUE(acquire_now(pool, "pinned").is_ok());
  pool.tick();
  EXPECT_EQ(state_of(pool, "idle"), "ready");
  meminfo_ = MemInfo{100000, 10000};  // 10% free
  pool.tick();                         // within the interval: not checked yet
  EXPECT_EQ(state_of(pool, "idle"), "ready");
  clock_.advance(1s);
  pool.tick();
  EXPECT_EQ(state_of(pool, "idle"), "unloaded");
  EXPECT_EQ(state_of(pool, "busy"), "ready");
  EXPECT_EQ(state_of(pool, "pinned"), "ready");
  EXPECT_EQ(metric("llmpool_model_evictions_total{model=\"idle\",reason=\"watchdog\"}"), 1);
}

TEST_F(ModelPoolTest, StopFailsWaitersAndLaterAcquires) {
  ModelPool& pool = make_pool(two_models(0));
  ASSERT_TRUE(acquire_now(pool, "a").is_ok());
  pool.stop();
  auto r = acquire_now(pool, "b");
  ASSERT_FALSE(r.is_ok());
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(maker_.alive(), 0);
}

TEST_F(ModelPoolTest, LeasesForwardEveryCallAndCountRequests) {
  ModelPool& pool = make_pool(two_models(0));
  auto a = acquire_now(pool, "a");
  ASSERT_TRUE(a.is_ok());
  EXPECT_EQ((*a)->stats().memory_bytes, 1000u);
  EXPECT_EQ(pool.status().models[0].in_flight, 1);  // the lease
  start_request(*a);
  start_request(*a);
  EXPECT_EQ(pool.status().models[0].in_flight, 3);
  a = Status::internal("released");
  EXPECT_EQ(pool.status().models[0].in_flight, 2);
  maker_.last("a")->finish_all();
  EXPECT_EQ(pool.status().models[0].in_flight, 0);
}

}  // namespace
}  // namespace llmpool::pool
