#include "ratelimit/local_limiter.h"

#include <atomic>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace llmpool::ratelimit {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

Subject subject(Limits tenant, Limits key = {}, std::string key_id = "k1") {
  Subject s;
  s.tenant = "acme";
  s.key = std::move(key_id);
  s.tenant_limits = tenant;
  s.key_limits = key;
  return s;
}

class LocalLimiterTest : public testing::Test {
 protected:
  Decision admit(const Subject& s, int64_t tokens) {
    Result<Decision> r = limiter_.admit(s, tokens);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : Decision{};
  }

  ManualClock clock_;  // 2026-01-01T00:00:00Z
  LocalLimiter limiter_{clock_};
};

TEST_F(LocalLimiterTest, AdmitsUpToRequestsPerMinuteThenRefuses) {
  const Subject s = subject({.requests_per_minute = 3});
  for (int i = 0; i < 3; ++i) {
    Decision d = admit(s, 10);
    ASSERT_TRUE(d.admitted) << i;
    EXPECT_FALSE(d.ticket.empty());
    EXPECT_EQ(d.headers.limit_requests, 3);
    EXPECT_EQ(d.headers.remaining_requests, 2 - i);
    EXPECT_DOUBLE_EQ(d.headers.reset_requests_seconds, 20.0 * (i + 1));
    EXPECT_EQ(d.headers.limit_tokens, -1);  // no token limit: not sent
  }
  Decision d = admit(s, 10);
  EXPECT_FALSE(d.admitted);
  EXPECT_TRUE(d.ticket.empty());
  EXPECT_EQ(d.code, "rate_limit_exceeded");
  EXPECT_NE(d.message.find("requests per minute"), std::string::npos) << d.message;
  EXPECT_NE(d.message.find("tenant 'acme'"), std::string::npos) << d.message;
  EXPECT_EQ(d.retry_after_seconds, 20);  // one request drains in 60 s / 3
  EXPECT_EQ(d.headers.remaining_requests, 0);
}

TEST_F(LocalLimiterTest, RefillsAtTheLimitPerMinute) {
  const Subject s = subject({.requests_per_minute = 3});
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(admit(s, 0).admitted);
  clock_.advance(milliseconds(19999));
  EXPECT_FALSE(admit(s, 0).admitted);
  clock_.advance(milliseconds(1));
  EXPECT_TRUE(admit(s, 0).admitted);
  EXPECT_FALSE(admit(s, 0).admitted);
  clock_.advance(seconds(60));  // a full minute: the whole bucket, not more
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(admit(s, 0).admitted) << i;
  EXPECT_FALSE(admit(s, 0).admitted);
}

TEST_F(LocalLimiterTest, ReservesTokensAtAdmitAndGivesBackUnusedAtFinish) {
  const Subject s = subject({.tokens_per_minute = 1000});
  Decision first = admit(s, 600);
  ASSERT_TRUE(first.admitted);
  EXPECT_EQ(first.headers.remaining_tokens, 400);
  Decision second = admit(s, 600);
  EXPECT_FALSE(second.admitted);
  EXPECT_EQ(second.code, "rate_limit_exceeded");
  EXPECT_NE(second.message.find("tokens per minute"), std::string::npos) << second.message;
  EXPECT_EQ(second.retry_after_seconds, 12);  // 200 tokens over at 1000 per minute

  limiter_.finish(first.ticket, 100);  // 500 of the 600 come back
  Decision third = admit(s, 600);
  ASSERT_TRUE(third.admitted);
  EXPECT_EQ(third.headers.remaining_tokens, 300);
}

TEST_F(LocalLimiterTest, UsageAboveTheReservationIsCharged) {
  const Subject s = subject({.tokens_per_minute = 1000});
  Decision d = admit(s, 100);
  ASSERT_TRUE(d.admitted);
  limiter_.finish(d.ticket, 700);
  Decision next = admit(s, 301);
  EXPECT_FALSE(next.admitted);
  EXPECT_EQ(next.headers.remaining_tokens, 300);
}

TEST_F(LocalLimiterTest, RefusedRequestsCostNothing) {
  const Subject s = subject({.requests_per_minute = 10, .tokens_per_minute = 1000, .daily_tokens = 5000},
                            {.tokens_per_minute = 100, .max_concurrent = 1});
  Decision held = admit(s, 50);
  ASSERT_TRUE(held.admitted);
  EXPECT_EQ(held.headers.remaining_requests, 9);
  // Refused by the key's concurrency, then by its tokens per minute, then
  // as too large for it: none of them charges the tenant's limits.
  EXPECT_FALSE(admit(s, 10).admitted);
  limiter_.finish(held.ticket, 50);
  EXPECT_FALSE(admit(s, 60).admitted);
  Decision huge = admit(s, 500);
  EXPECT_FALSE(huge.admitted);
  EXPECT_EQ(huge.retry_after_seconds, 0);  // waiting cannot help
  EXPECT_NE(huge.message.find("too large"), std::string::npos) << huge.message;

  Decision d = admit(s, 50);
  ASSERT_TRUE(d.admitted);
  EXPECT_EQ(d.headers.remaining_requests, 8);  // only the two admitted requests counted
  // The tenant has 900 tokens left, the key (the fewest, so in the headers) 0 of 100.
  EXPECT_EQ(d.headers.limit_tokens, 100);
  EXPECT_EQ(d.headers.remaining_tokens, 0);
}

TEST_F(LocalLimiterTest, TenantLimitIsSharedByItsKeys) {
  const Limits tenant{.requests_per_minute = 2};
  const Limits key{.requests_per_minute = 5};
  EXPECT_TRUE(admit(subject(tenant, key, "a"), 0).admitted);
  EXPECT_TRUE(admit(subject(tenant, key, "b"), 0).admitted);
  Decision d = admit(subject(tenant, key, "b"), 0);
  EXPECT_FALSE(d.admitted);
  EXPECT_NE(d.message.find("of tenant 'acme'"), std::string::npos) << d.message;
  EXPECT_EQ(d.message.find("credential"), std::string::npos) << d.message;
}

TEST_F(LocalLimiterTest, KeyLimitRefusesWhileTheTenantHasRoomAndOtherKeysPass) {
  const Limits tenant{.requests_per_minute = 100};
  const Limits key{.requests_per_minute = 1};
  EXPECT_TRUE(admit(subject(tenant, key, "secret-subject"), 0).admitted);
  Decision d = admit(subject(tenant, key, "secret-subject"), 0);
  EXPECT_FALSE(d.admitted);
  EXPECT_NE(d.message.find("credential's limit"), std::string::npos) << d.message;
  EXPECT_EQ(d.message.find("secret-subject"), std::string::npos) << "a key id is never repeated: " << d.message;
  EXPECT_EQ(d.headers.limit_requests, 1);
  EXPECT_TRUE(admit(subject(tenant, key, "other"), 0).admitted);
}

TEST_F(LocalLimiterTest, DailyBudgetRefusesWithInsufficientQuotaUntilUtcMidnight) {
  const Subject s = subject({.daily_tokens = 1000});
  clock_.set_ms(1767225600000 + 23 * 3600 * 1000);  // 2026-01-01T23:00Z
  Decision d = admit(s, 600);
  ASSERT_TRUE(d.admitted);
  limiter_.finish(d.ticket, 600);
  Decision refused = admit(s, 600);
  EXPECT_FALSE(refused.admitted);
  EXPECT_EQ(refused.code, "insufficient_quota");
  EXPECT_NE(refused.message.find("daily token budget"), std::string::npos) << refused.message;
  EXPECT_EQ(refused.retry_after_seconds, 3600);
  EXPECT_TRUE(admit(s, 400).admitted);  // what is left still fits
  clock_.advance(seconds(3600));
  EXPECT_TRUE(admit(s, 1000).admitted);
}

TEST_F(LocalLimiterTest, BudgetRefusalWinsTheCodeOverARateRefusal) {
  const Subject s = subject({.requests_per_minute = 1, .daily_tokens = 100});
  ASSERT_TRUE(admit(s, 100).admitted);
  Decision d = admit(s, 1);
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.code, "insufficient_quota");
  EXPECT_EQ(d.retry_after_seconds, 86400);
}

TEST_F(LocalLimiterTest, MonthlyBudgetFollowsCalendarMonths) {
  const Subject s = subject({.monthly_tokens = 100});
  clock_.set_ms(1769900400000);  // 2026-01-31T23:00Z
  ASSERT_TRUE(admit(s, 100).admitted);
  Decision d = admit(s, 1);
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.code, "insufficient_quota");
  EXPECT_EQ(d.retry_after_seconds, 3600);
  clock_.advance(seconds(3600));  // February
  EXPECT_TRUE(admit(s, 100).admitted);
}

TEST_F(LocalLimiterTest, UnusedBudgetIsGivenBackInTheSamePeriodOnly) {
  const Subject s = subject({.daily_tokens = 1000}, {}, "");
  Decision d = admit(s, 1000);
  ASSERT_TRUE(d.admitted);
  limiter_.finish(d.ticket, 200);
  EXPECT_TRUE(admit(s, 800).admitted);
  EXPECT_FALSE(admit(s, 1).admitted);

  clock_.advance(seconds(86400));  // the next day: a fresh budget
  Decision y = admit(s, 1000);
  ASSERT_TRUE(y.admitted);
  clock_.advance(seconds(86400));  // and the day after: y's refund belongs to a closed day
  limiter_.finish(y.ticket, 0);
  EXPECT_TRUE(admit(s, 1000).admitted);
  EXPECT_FALSE(admit(s, 1).admitted);
}

TEST_F(LocalLimiterTest, ConcurrencyLeaseIsHeldUntilFinish) {
  const Subject s = subject({.max_concurrent = 2});
  Decision a = admit(s, 0);
  Decision b = admit(s, 0);
  ASSERT_TRUE(a.admitted && b.admitted);
  Decision c = admit(s, 0);
  EXPECT_FALSE(c.admitted);
  EXPECT_EQ(c.code, "rate_limit_exceeded");
  EXPECT_NE(c.message.find("concurrent requests"), std::string::npos) << c.message;
  clock_.advance(seconds(3600));  // time alone does not free a local lease
  EXPECT_FALSE(admit(s, 0).admitted);
  limiter_.finish(a.ticket, 0);
  EXPECT_TRUE(admit(s, 0).admitted);
}

TEST_F(LocalLimiterTest, FinishIgnoresUnknownEmptyAndRepeatedTickets) {
  const Subject s = subject({.max_concurrent = 1});
  Decision a = admit(s, 0);
  ASSERT_TRUE(a.admitted);
  limiter_.finish("", 5);
  limiter_.finish("nonsense", 5);
  EXPECT_EQ(limiter_.open_tickets(), 1u);
  limiter_.finish(a.ticket, 0);
  Decision b = admit(s, 0);
  ASSERT_TRUE(b.admitted);
  limiter_.finish(a.ticket, 0);  // a second finish of a must not free b's lease
  EXPECT_FALSE(admit(s, 0).admitted);
}

TEST_F(LocalLimiterTest, NoLimitsAdmitsEverythingAndSendsNoHeaders) {
  const Subject s = subject({});
  for (int i = 0; i < 100; ++i) {
    Decision d = admit(s, 1'000'000);
    ASSERT_TRUE(d.admitted);
    EXPECT_EQ(d.headers.limit_requests, -1);
    EXPECT_EQ(d.headers.remaining_tokens, -1);
    limiter_.finish(d.ticket, 1'000'000);
  }
  EXPECT_TRUE(admit(subject({.requests_per_minute = -5}), 0).admitted);  // below 0 is no limit too
}

TEST_F(LocalLimiterTest, HostileReservationsAreClamped) {
  const Subject s = subject({.tokens_per_minute = 1000});
  Decision neg = admit(s, -1'000'000);
  ASSERT_TRUE(neg.admitted);  // counts as 0
  EXPECT_EQ(neg.headers.remaining_tokens, 1000);
  Decision huge = admit(s, INT64_MAX);
  EXPECT_FALSE(huge.admitted);
  EXPECT_EQ(huge.retry_after_seconds, 0);
  limiter_.finish(neg.ticket, INT64_MIN);
  EXPECT_EQ(admit(s, 0).headers.remaining_tokens, 1000);
}

TEST_F(LocalLimiterTest, RejectsMalformedSubjects) {
  Subject s = subject({});
  for (std::string bad : {std::string(), std::string("a:b"), std::string("a\nb"), std::string("a}b"),
                          std::string(65, 'a'), std::string("caf\xc3\xa9")}) {
    s.tenant = bad;
    Result<Decision> r = limiter_.admit(s, 0);
    ASSERT_FALSE(r.is_ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument);
  }
  s.tenant = "acme";
  s.key = std::string(257, 'k');
  EXPECT_EQ(limiter_.admit(s, 0).status().code(), StatusCode::kInvalidArgument);
  s.key = std::string(256, '\0');  // any bytes, within the bound
  EXPECT_TRUE(limiter_.admit(s, 0).is_ok());
}

TEST_F(LocalLimiterTest, ConcurrentAdmitsNeverOvershoot) {
  const Subject s = subject({.requests_per_minute = 100, .tokens_per_minute = 1000, .max_concurrent = 50});
  std::atomic<int> admitted{0};
  std::atomic<int> running{0};
  std::atomic<int> max_running{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        Result<Decision> d = limiter_.admit(s, 13);
        if (!d.is_ok() || !d->admitted) continue;
        admitted.fetch_add(1);
        int now = running.fetch_add(1) + 1;
        int prev = max_running.load();
        while (now > prev && !max_running.compare_exchange_weak(prev, now)) {
        }
        running.fetch_sub(1);
        limiter_.finish(d->ticket, 13);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(admitted.load(), 1000 / 13);  // the clock stands still: exactly what fits
  EXPECT_LE(max_running.load(), 50);
  EXPECT_EQ(limiter_.open_tickets(), 0u);
}

TEST_F(LocalLimiterTest, IdleSubjectsAreSwept) {
  const Limits key{.requests_per_minute = 10, .max_concurrent = 1};
  for (int i = 0; i < 5000; ++i) {
    Decision d = admit(subject({}, key, "key" + std::to_string(i)), 0);
    ASSERT_TRUE(d.admitted);
    limiter_.finish(d.ticket, 0);
  }
  EXPECT_GT(limiter_.tracked_subjects(), 1000u);
  clock_.advance(seconds(61));
  for (int i = 0; i < 5000; ++i) (void)limiter_.admit(subject({}, {}, "same"), 0);
  EXPECT_LT(limiter_.tracked_subjects(), 10u);
}

TEST(RateCalendarTest, DaysAndMonthsAreUtc) {
  EXPECT_EQ(day_of(0), 0);
  EXPECT_EQ(day_of(-1), -1);
  EXPECT_EQ(month_of(0), 1970 * 12);
  EXPECT_EQ(month_end_ms(1970 * 12), 31LL * kDayMs);
  const int64_t feb_2028 = 2028 * 12 + 1;
  EXPECT_EQ(month_of(1835395200000), feb_2028);        // 2028-02-29T00:00Z
  EXPECT_EQ(month_end_ms(feb_2028), 1835481600000);    // 2028-03-01T00:00Z
  EXPECT_EQ(month_of(1798761599999), 2026 * 12 + 11);  // 2026-12-31T23:59:59.999Z
  EXPECT_EQ(month_end_ms(2026 * 12 + 11), 1798761600000);
  EXPECT_EQ(day_end_ms(day_of(1767225600000)), 1767312000000);
}

}  // namespace
}  // namespace llmpool::ratelimit
