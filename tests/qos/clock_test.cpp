#include "qos/clock.h"

#include <gtest/gtest.h>

#include <set>
#include <thread>
#include <vector>

#include "qos/deadline.h"

namespace llmpool::qos {
namespace {

using namespace std::chrono_literals;

TEST(ManualClockTest, MovesOnlyWhenAdvanced) {
  ManualClock clock;
  auto t0 = clock.now();
  EXPECT_EQ(clock.now(), t0);
  clock.advance(250ms);
  EXPECT_EQ(clock.now() - t0, 250ms);
}

TEST(ManualClockTest, NeverGoesBackwards) {
  ManualClock clock;
  auto t0 = clock.now();
  clock.advance(-5s);
  clock.set(t0 - 1s);
  EXPECT_EQ(clock.now(), t0);
  clock.set(t0 + 2s);
  EXPECT_EQ(clock.now(), t0 + 2s);
}

TEST(SystemClockTest, IsMonotonic) {
  const Clock& clock = SystemClock::instance();
  auto a = clock.now();
  auto b = clock.now();
  EXPECT_LE(a, b);
}

TEST(SeededRandomTest, SameSeedGivesSameSequence) {
  SeededRandom a(42), b(42), c(43);
  std::vector<uint64_t> va, vb, vc;
  for (int i = 0; i < 16; ++i) {
    va.push_back(a.next_u64());
    vb.push_back(b.next_u64());
    vc.push_back(c.next_u64());
  }
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
}

TEST(SeededRandomTest, UniformStaysInUnitIntervalAndBelowStaysInRange) {
  SeededRandom r(7);
  double sum = 0;
  for (int i = 0; i < 10000; ++i) {
    double u = r.uniform();
    ASSERT_GE(u, 0.0);
    ASSERT_LT(u, 1.0);
    sum += u;
    ASSERT_LT(r.below(10), 10u);
  }
  EXPECT_NEAR(sum / 10000, 0.5, 0.02);
  EXPECT_EQ(r.below(0), 0u);
}

TEST(SeededRandomTest, ConcurrentDrawsAreDistinct) {
  SeededRandom r(1);
  std::vector<std::vector<uint64_t>> got(4);
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&, t] {
      for (int i = 0; i < 1000; ++i) got[t].push_back(r.next_u64());
    });
  for (auto& t : threads) t.join();
  std::set<uint64_t> all;
  for (auto& v : got) all.insert(v.begin(), v.end());
  EXPECT_EQ(all.size(), 4000u);
}

TEST(DeadlineTest, RemainingCountsDownAndExpires) {
  ManualClock clock;
  Deadline d = Deadline::after(clock, 100ms);
  EXPECT_EQ(d.remaining(clock), 100ms);
  EXPECT_FALSE(d.expired(clock));
  clock.advance(60ms);
  EXPECT_EQ(d.remaining(clock), 40ms);
  clock.advance(40ms);
  EXPECT_TRUE(d.expired(clock));
  clock.advance(1s);
  EXPECT_EQ(d.remaining(clock), Clock::Duration::zero());
}

TEST(DeadlineTest, NeverHasNoLimit) {
  ManualClock clock;
  Deadline d = Deadline::never();
  EXPECT_TRUE(d.is_never());
  EXPECT_FALSE(d.expired(clock));
  EXPECT_EQ(d.remaining(clock), Clock::Duration::max());
  EXPECT_TRUE(d.child_fraction(clock, 0.5).is_never());
  EXPECT_EQ(d.child(clock, 5s).remaining(clock), 5s);
}

TEST(DeadlineTest, ChildNeverOutlivesParent) {
  ManualClock clock;
  Deadline parent = Deadline::after(clock, 1s);
  EXPECT_EQ(parent.child(clock, 300ms).remaining(clock), 300ms);
  EXPECT_EQ(parent.child(clock, 5s).remaining(clock), 1s);
  clock.advance(600ms);
  EXPECT_EQ(parent.child_fraction(clock, 0.5).remaining(clock), 200ms);
  EXPECT_EQ(parent.child_fraction(clock, 7.0).remaining(clock), 400ms);
}

TEST(DeadlineTest, NonPositiveBudgetIsAlreadyExpired) {
  ManualClock clock;
  EXPECT_TRUE(Deadline::after(clock, 0ms).expired(clock));
  EXPECT_TRUE(Deadline::after(clock, -5ms).expired(clock));
}

}  // namespace
}  // namespace llmpool::qos
