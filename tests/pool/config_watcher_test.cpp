#include "pool/config_watcher.h"

#include <gtest/gtest.h>

#include <fstream>
#include <thread>

#include "pool/pool_test_util.h"

namespace llmpool::pool {
namespace {

using namespace std::chrono_literals;
using testing::acquire_now;
using testing::FakeMaker;
using testing::ModelFiles;
using testing::state_of;

class ConfigWatcherTest : public ::testing::Test {
 protected:
  void SetUp() override {
    files_.make("a", 100);
    files_.make("b", 100);
    path_ = files_.dir() + "/config.yaml";
  }
  void write(const std::string& text) {
    std::ofstream(path_, std::ios::trunc) << text;
  }
  std::string models(const std::string& body) { return "server:\n  config_poll_ms: 0\nmodels:\n" + body; }
  // Builds the pool and the watcher from the file as it is now.
  void start() {
    config::LoadResult r = config::load_config(path_);
    ASSERT_TRUE(r.ok()) << r.issues.front().to_string();
    ModelPool::Options o;
    o.make_provider = maker_.fn();
    o.housekeeping_thread = false;
    o.meminfo = [] { return std::optional<MemInfo>(); };
    pool_ = std::make_unique<ModelPool>(r.config, std::move(o));
    pool_->start();
    ConfigWatcher::Options w;
    w.metrics = &metrics_;
    w.on_applied = [this](const config::Config&, const config::Config&) {
      ++applied_;
      std::lock_guard lock(mu_);
      return applied_status_;
    };
    watcher_ = std::make_unique<ConfigWatcher>(r.config, *pool_, std::move(w));
  }
  double reloads(const char* result) {
    std::string text = metrics_.render();
    std::string key = std::string("llmpool_config_reloads_total{result=\"") + result + "\"} ";
    size_t at = text.find(key);
    return at == std::string::npos ? 0 : std::stod(text.substr(at + key.size()));
  }
  std::vector<std::string> names() {
    std::vector<std::string> out;
    for (const auto& e : pool_->list()) out.push_back(e.info.name);
    return out;
  }

  ModelFiles files_;
  std::string path_;
  FakeMaker maker_;
  obs::MetricsRegistry metrics_;
  std::unique_ptr<ModelPool> pool_;
  std::unique_ptr<ConfigWatcher> watcher_;
  std::atomic<int> applied_{0};
  std::mutex mu_;
  Status applied_status_;  // what on_applied answers; guarded by mu_
};

TEST_F(ConfigWatcherTest, AValidFileIsAppliedAsADiff) {
  write(models("  - name: a\n    path: a.gguf\n"));
  start();
  ASSERT_TRUE(acquire_now(*pool_, "a").is_ok());
  write(models("  - name: a\n    path: a.gguf\n  - name: b\n    path: b.gguf\n"));
  Status st = watcher_->reload();
  ASSERT_TRUE(st.is_ok()) << st.to_string();
  EXPECT_EQ(names(), (std::vector<std::string>{"a", "b"}));
  EXPECT_EQ(state_of(*pool_, "a"), "ready");  // untouched
  EXPECT_EQ(maker_.calls("a"), 1);
  EXPECT_EQ(applied_, 1);
  EXPECT_EQ(reloads("ok"), 1);
  EXPECT_EQ(watcher_->current().models.size(), 2u);
}

TEST_F(ConfigWatcherTest, AnInvalidFileChangesNothingAndIsCounted) {
  write(models("  - name: a\n    path: a.gguf\n"));
  start();
  ASSERT_TRUE(acquire_now(*pool_, "a").is_ok());
  write(models("  - name: a\n    path: a.gguf\n    context: lots\n  - name: b\n    path: missing.gguf\n"));
  Status st = watcher_->reload();
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("2 problem(s)"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("config.yaml:6:14"), std::string::npos) << st.message();
  EXPECT_EQ(names(), std::vector<std::string>{"a"});
  EXPECT_EQ(state_of(*pool_, "a"), "ready");
  EXPECT_EQ(applied_, 0);
  EXPECT_EQ(reloads("failed"), 1);
  EXPECT_EQ(reloads("ok"), 0);
  EXPECT_NE(metrics_.render().find("llmpool_config_last_reload_ok 0"), std::string::npos);
  ASSERT_TRUE(acquire_now(*pool_, "a").is_ok());  // still serving
}

// serve applies the routing part in on_applied; a refused one (the router
// keeps its previous routing) must not count as a good reload.
TEST_F(ConfigWatcherTest, AReloadWhoseRoutingPartIsRefusedCountsAsFailed) {
  write(models("  - name: a\n    path: a.gguf\n"));
  start();
  {
    std::lock_guard lock(mu_);
    applied_status_ = Status::unavailable("cannot open the decision log /proc/x/log.jsonl");
  }
  write(models("  - name: a\n    path: a.gguf\n  - name: b\n    path: b.gguf\n"));
  Status st = watcher_->reload();
  ASSERT_FALSE(st.is_ok());
  EXPECT_NE(st.message().find("decision log"), std::string::npos) << st.message();
  EXPECT_EQ(applied_, 1);
  EXPECT_EQ(names(), (std::vector<std::string>{"a", "b"}));  // the models part is in effect
  EXPECT_EQ(reloads("failed"), 1);
  EXPECT_EQ(reloads("ok"), 0);
  EXPECT_NE(metrics_.render().find("llmpool_config_last_reload_ok 0"), std::string::npos);

  {
    std::lock_guard lock(mu_);
    applied_status_ = Status::ok();
  }
  ASSERT_TRUE(watcher_->reload().is_ok());  // SIGHUP once the cause is fixed: tried again
  EXPECT_EQ(applied_, 2);
  EXPECT_EQ(reloads("ok"), 1);
  EXPECT_NE(metrics_.render().find("llmpool_config_last_reload_ok 1"), std::string::npos);
}

TEST_F(ConfigWatcherTest, PollingReloadsOnceTheChangedFileHasSettled) {
  write(models("  - name: a\n    path: a.gguf\n"));
  start();
  watcher_->poll();
  EXPECT_EQ(applied_, 0);  // unchanged
  std::this_thread::sleep_for(20ms);  // a later mtime
  write(models("  - name: b\n    path: b.gguf\n"));
  watcher_->poll();  // seen once: may still be being written
  EXPECT_EQ(applied_, 0);
  watcher_->poll();  // the same twice: read it
  EXPECT_EQ(applied_, 1);
  EXPECT_EQ(names(), std::vector<std::string>{"b"});
  watcher_->poll();
  EXPECT_EQ(applied_, 1);  // not again
  // A broken file is tried once, not at every poll.
  std::this_thread::sleep_for(20ms);
  write("models: [\n");
  watcher_->poll();
  watcher_->poll();
  watcher_->poll();
  EXPECT_EQ(reloads("failed"), 1);
  EXPECT_EQ(names(), std::vector<std::string>{"b"});
}

TEST_F(ConfigWatcherTest, TheThreadPicksUpChanges) {
  write("server:\n  config_poll_ms: 20\nmodels:\n  - name: a\n    path: a.gguf\n");
  start();
  watcher_->start();
  std::this_thread::sleep_for(30ms);
  write("server:\n  config_poll_ms: 20\nmodels:\n  - name: b\n    path: b.gguf\n");
  for (int i = 0; i < 300 && applied_ == 0; ++i) std::this_thread::sleep_for(10ms);
  watcher_->stop();
  EXPECT_EQ(names(), std::vector<std::string>{"b"});
}

}  // namespace
}  // namespace llmpool::pool
