#include "qos/retry_budget.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace llmpool::qos {
namespace {

using namespace std::chrono_literals;

class RetryBudgetTest : public ::testing::Test {
 protected:
  ManualClock clock_;
};

TEST_F(RetryBudgetTest, FloorAllowsRetriesWithoutTraffic) {
  RetryBudget budget({0.2, 0.5, 10s, 10}, clock_);  // floor: 0.5/s * 10 s = 5
  for (int i = 0; i < 5; ++i) EXPECT_TRUE(budget.try_withdraw()) << i;
  EXPECT_FALSE(budget.try_withdraw());
  EXPECT_EQ(budget.retries_in_window(), 5);
}

TEST_F(RetryBudgetTest, RatioOfRecentRequestsAddsRetries) {
  RetryBudget budget({0.2, 0.0, 10s, 10}, clock_);
  EXPECT_FALSE(budget.try_withdraw());
  for (int i = 0; i < 10; ++i) budget.record_request();
  EXPECT_DOUBLE_EQ(budget.available(), 2.0);
  EXPECT_TRUE(budget.try_withdraw());
  EXPECT_TRUE(budget.try_withdraw());
  EXPECT_FALSE(budget.try_withdraw());
}

TEST_F(RetryBudgetTest, FractionalRatioAllowsTheRetryItAdds) {
  RetryBudget budget({0.2, 0.0, 10s, 10}, clock_);
  for (int i = 0; i < 5; ++i) budget.record_request();  // 0.2 * 5 = 1 (in floating point, 0.999...)
  EXPECT_TRUE(budget.try_withdraw());
  EXPECT_FALSE(budget.try_withdraw());
}

TEST_F(RetryBudgetTest, OldTrafficExpiresSliceBySlice) {
  RetryBudget budget({1.0, 0.0, 10s, 10}, clock_);
  for (int i = 0; i < 4; ++i) budget.record_request();
  clock_.advance(5s);
  for (int i = 0; i < 2; ++i) budget.record_request();
  EXPECT_EQ(budget.requests_in_window(), 6);
  clock_.advance(5s);  // the first four fall out of the window
  EXPECT_EQ(budget.requests_in_window(), 2);
  EXPECT_TRUE(budget.try_withdraw());
  EXPECT_TRUE(budget.try_withdraw());
  EXPECT_FALSE(budget.try_withdraw());
  clock_.advance(10s);
  EXPECT_EQ(budget.requests_in_window(), 0);
  EXPECT_EQ(budget.retries_in_window(), 0);
}

TEST_F(RetryBudgetTest, ConcurrentWithdrawalsNeverExceedTheBudget) {
  RetryBudget budget({0.5, 0.0, 10s, 10}, clock_);
  for (int i = 0; i < 100; ++i) budget.record_request();
  std::atomic<int> granted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 50; ++i)
        if (budget.try_withdraw()) granted.fetch_add(1);
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(granted.load(), 50);
}

}  // namespace
}  // namespace llmpool::qos
