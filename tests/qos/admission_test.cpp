#include "qos/admission.h"

#include <gtest/gtest.h>

#include <thread>
#include <vector>

namespace llmpool::qos {
namespace {

using namespace std::chrono_literals;

class AdmissionGateTest : public ::testing::Test {
 protected:
  AdmissionGate gate_{{2, 3}};
};

TEST_F(AdmissionGateTest, AdmitsUpToTheLimit) {
  auto a = gate_.try_enter();
  auto b = gate_.try_enter();
  EXPECT_TRUE(a);
  EXPECT_TRUE(b);
  EXPECT_EQ(gate_.active(), 2);
  EXPECT_FALSE(gate_.try_enter());
  EXPECT_EQ(gate_.rejected(), 1);
}

TEST_F(AdmissionGateTest, ReleasingAHoldAdmitsTheNext) {
  auto a = gate_.try_enter();
  {
    auto b = gate_.try_enter();
    EXPECT_FALSE(gate_.try_enter());
  }
  EXPECT_TRUE(gate_.try_enter());
  a.release();
  EXPECT_EQ(gate_.active(), 0);
}

TEST_F(AdmissionGateTest, RejectsWhenFullWithResourceExhaustedAndRetryAfter) {
  auto a = gate_.enter();
  auto b = gate_.enter();
  auto c = gate_.enter();
  ASSERT_FALSE(c);
  EXPECT_EQ(c.status().code(), StatusCode::kResourceExhausted);
  EXPECT_NE(c.status().message().find("retry after 3 s"), std::string::npos);
  EXPECT_EQ(gate_.retry_after_seconds(), 3);
}

TEST_F(AdmissionGateTest, RejectsAfterCloseWithUnavailable) {
  gate_.close();
  EXPECT_TRUE(gate_.closed());
  EXPECT_FALSE(gate_.try_enter());
  auto r = gate_.enter();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(gate_.rejected(), 0);
}

TEST_F(AdmissionGateTest, MovedHoldReleasesOnce) {
  auto a = gate_.try_enter();
  AdmissionGate::Hold b = std::move(a);
  EXPECT_FALSE(a);  // NOLINT: checking the moved-from state on purpose
  EXPECT_TRUE(b);
  EXPECT_EQ(gate_.active(), 1);
  AdmissionGate::Hold c;
  c = std::move(b);
  EXPECT_EQ(gate_.active(), 1);
  c = AdmissionGate::Hold();
  EXPECT_EQ(gate_.active(), 0);
}

TEST_F(AdmissionGateTest, WaitDrainedReturnsWhenTheLastHoldIsReleased) {
  auto a = gate_.try_enter();
  gate_.close();
  std::thread t([h = std::move(a)]() mutable {
    std::this_thread::sleep_for(20ms);
    h.release();
  });
  EXPECT_TRUE(gate_.wait_drained(5s));
  t.join();
  EXPECT_EQ(gate_.active(), 0);
}

TEST_F(AdmissionGateTest, WaitDrainedTimesOutWhileHoldsRemain) {
  auto a = gate_.try_enter();
  gate_.close();
  EXPECT_FALSE(gate_.wait_drained(10ms));
  EXPECT_TRUE(a);
}

TEST_F(AdmissionGateTest, ZeroLimitMeansUnlimited) {
  AdmissionGate gate({0, 1});
  std::vector<AdmissionGate::Hold> holds;
  for (int i = 0; i < 1000; ++i) holds.push_back(gate.try_enter());
  EXPECT_EQ(gate.active(), 1000);
}

TEST_F(AdmissionGateTest, RaisingTheLimitAdmitsMore) {
  auto a = gate_.try_enter();
  auto b = gate_.try_enter();
  gate_.set_options({3, 1});
  EXPECT_TRUE(gate_.try_enter());
}

TEST_F(AdmissionGateTest, ConcurrentEntriesNeverExceedTheLimit) {
  AdmissionGate gate({4, 1});
  std::atomic<int> inside{0}, max_inside{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 2000; ++i) {
        auto h = gate.try_enter();
        if (!h) continue;
        int now = inside.fetch_add(1) + 1;
        int prev = max_inside.load();
        while (now > prev && !max_inside.compare_exchange_weak(prev, now)) {
        }
        inside.fetch_sub(1);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_LE(max_inside.load(), 4);
  EXPECT_EQ(gate.active(), 0);
}

}  // namespace
}  // namespace llmpool::qos
