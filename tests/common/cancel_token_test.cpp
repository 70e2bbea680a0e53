// CancelToken's callback subscription: once, at once when already
// cancelled, never after a reset, and a reset racing a cancel waits for the
// callback running on the other thread.
#include "common/chat.h"

#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace llmpool {
namespace {

TEST(CancelTokenTest, RunsTheCallbackExactlyOnceOnCancel) {
  auto token = std::make_shared<CancelToken>();
  int runs = 0;
  auto sub = token->subscribe([&] { ++runs; });
  EXPECT_TRUE(sub);
  EXPECT_EQ(runs, 0);
  token->cancel();
  EXPECT_EQ(runs, 1);
  token->cancel();
  EXPECT_EQ(runs, 1);
  EXPECT_TRUE(token->cancelled());
  EXPECT_NE(token->cancelled_at(), std::chrono::steady_clock::time_point());
}

TEST(CancelTokenTest, RunsTheCallbackAtOnceWhenAlreadyCancelled) {
  auto token = std::make_shared<CancelToken>();
  token->cancel();
  int runs = 0;
  auto sub = token->subscribe([&] { ++runs; });
  EXPECT_EQ(runs, 1);
  EXPECT_FALSE(sub);  // nothing left to unsubscribe
  sub.reset();
  EXPECT_EQ(runs, 1);
}

TEST(CancelTokenTest, NeverRunsAfterTheHandleIsResetOrDestroyed) {
  auto token = std::make_shared<CancelToken>();
  int runs = 0;
  auto kept = token->subscribe([&] { runs += 10; });
  auto reset = token->subscribe([&] { runs += 100; });
  { auto destroyed = token->subscribe([&] { runs += 1000; }); }
  reset.reset();
  EXPECT_FALSE(reset);
  token->cancel();
  EXPECT_EQ(runs, 10);
}

TEST(CancelTokenTest, CallbacksRunInSubscriptionOrder) {
  auto token = std::make_shared<CancelToken>();
  std::string order;
  auto a = token->subscribe([&] { order += "a"; });
  auto b = token->subscribe([&] { order += "b"; });
  auto c = token->subscribe([&] { order += "c"; });
  token->cancel();
  EXPECT_EQ(order, "abc");
}

TEST(CancelTokenTest, AMovedHandleKeepsTheSubscription) {
  auto token = std::make_shared<CancelToken>();
  int runs = 0;
  CancelToken::Subscription outer;
  {
    auto inner = token->subscribe([&] { ++runs; });
    outer = std::move(inner);
    EXPECT_FALSE(inner);  // NOLINT: the moved-from handle is empty
  }
  token->cancel();
  EXPECT_EQ(runs, 1);
}

TEST(CancelTokenTest, TheHandleKeepsTheTokenAlive) {
  int runs = 0;
  CancelToken::Subscription sub;
  std::weak_ptr<CancelToken> weak;
  {
    auto token = std::make_shared<CancelToken>();
    weak = token;
    sub = token->subscribe([&] { ++runs; });
  }
  EXPECT_FALSE(weak.expired());
  sub.reset();
  EXPECT_TRUE(weak.expired());
  EXPECT_EQ(runs, 0);
}

TEST(CancelTokenTest, ACallbackMayResetItsOwnHandleAndSubscribeAgain) {
  auto token = std::make_shared<CancelToken>();
  auto holder = std::make_shared<CancelToken::Subscription>();
  int runs = 0, nested = 0;
  CancelToken::Subscription again;
  *holder = token->subscribe([&, holder] {
    ++runs;
    holder->reset();  // from inside its own callback: returns at once
    again = token->subscribe([&] { ++nested; });  // already cancelled: runs here
  });
  token->cancel();
  EXPECT_EQ(runs, 1);
  EXPECT_EQ(nested, 1);
}

TEST(CancelTokenTest, ACallbackMayCancelAnotherToken) {
  auto parent = std::make_shared<CancelToken>();
  auto child = std::make_shared<CancelToken>();
  int child_runs = 0;
  auto c = child->subscribe([&] { ++child_runs; });
  auto p = parent->subscribe([child] { child->cancel(); });
  parent->cancel();
  EXPECT_TRUE(child->cancelled());
  EXPECT_EQ(child_runs, 1);
}

TEST(CancelTokenTest, AResetRacingACancelReturnsOnlyAfterTheRunningCallback) {
  auto token = std::make_shared<CancelToken>();
  std::mutex mu;
  std::condition_variable cv;
  bool started = false, release = false;
  std::vector<std::string> events;  // guarded by mu
  auto sub = token->subscribe([&] {
    std::unique_lock lock(mu);
    started = true;
    cv.notify_all();
    cv.wait(lock, [&] { return release; });
    events.push_back("callback returned");
  });
  std::thread canceller([&] { token->cancel(); });
  {
    std::unique_lock lock(mu);
    cv.wait(lock, [&] { return started; });
  }
  std::thread resetter([&] {
    sub.reset();
    std::lock_guard lock(mu);
    events.push_back("reset returned");
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(20));  // lets the reset start waiting (not asserted)
  {
    std::lock_guard lock(mu);
    release = true;
  }
  cv.notify_all();
  resetter.join();
  canceller.join();
  EXPECT_EQ(events, (std::vector<std::string>{"callback returned", "reset returned"}));
}

// Many subscribers resetting while another thread cancels: every callback
// runs at most once, never after its reset returned, and exactly once for
// those never reset.
TEST(CancelTokenTest, ConcurrentSubscribeResetAndCancelKeepTheContract) {
  const unsigned threads = std::max(2u, std::min(8u, std::thread::hardware_concurrency()));
  constexpr int kRounds = 300;
  constexpr int kPerThread = 8;
  std::atomic<int> late{0}, twice{0}, missed{0};
  for (int round = 0; round < kRounds; ++round) {
    auto token = std::make_shared<CancelToken>();
    struct Entry {
      std::atomic<int> runs{0};
      std::atomic<bool> reset_returned{false};
    };
    std::vector<std::vector<Entry>> entries(threads);
    for (auto& v : entries) v = std::vector<Entry>(kPerThread);
    std::atomic<unsigned> ready{0};
    std::atomic<bool> cancel_returned{false};
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < threads; ++t) {
      workers.emplace_back([&, t] {
        std::vector<CancelToken::Subscription> subs;
        ready.fetch_add(1);
        for (int i = 0; i < kPerThread; ++i) {
          Entry* e = &entries[t][i];
          subs.push_back(token->subscribe([e, &late, &twice] {
            if (e->reset_returned.load()) late.fetch_add(1);
            if (e->runs.fetch_add(1) != 0) twice.fetch_add(1);
          }));
          if ((i + round) % 2 == 0) {  // every other one is reset at once
            subs.back().reset();
            e->reset_returned.store(true);
          }
        }
        // The others stay subscribed until cancel() has returned.
        while (!cancel_returned.load()) std::this_thread::yield();
        for (auto& s : subs) s.reset();
      });
    }
    while (ready.load() < threads) std::this_thread::yield();
    token->cancel();
    cancel_returned.store(true);
    for (auto& w : workers) w.join();
    for (unsigned t = 0; t < threads; ++t)
      for (int i = 0; i < kPerThread; ++i)
        if ((i + round) % 2 != 0 && entries[t][i].runs.load() != 1) missed.fetch_add(1);
  }
  EXPECT_EQ(late.load(), 0);
  EXPECT_EQ(twice.load(), 0);
  EXPECT_EQ(missed.load(), 0);
}

}  // namespace
}  // namespace llmpool
