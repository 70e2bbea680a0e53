#include "ratelimit/redis_limiter.h"

#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <thread>

#include <gtest/gtest.h>

#include "obs/metrics.h"
#include "ratelimit/local_limiter.h"
#include "ratelimit/redis_server.h"

namespace llmpool::ratelimit {
namespace {

using std::chrono::milliseconds;
using testing::RedisServer;

Subject subject(Limits tenant, Limits key = {}, std::string key_id = "k1", std::string tenant_name = "acme") {
  Subject s;
  s.tenant = std::move(tenant_name);
  s.key = std::move(key_id);
  s.tenant_limits = tenant;
  s.key_limits = key;
  return s;
}

class RedisLimiterTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_EQ(redis_.start(), ""); }

  std::unique_ptr<RedisLimiter> make(bool fail_open = false, milliseconds lease_ttl = milliseconds(30000),
                                     int pool_size = 2, bool async_finish = false,
                                     milliseconds allotment = milliseconds(0)) {
    Options o;
    o.allotment = allotment;
    o.url = redis_.url();
    o.fail_open = fail_open;
    o.lease_ttl = lease_ttl;
    o.pool_size = pool_size;
    o.async_finish = async_finish;
    o.metrics = &metrics_;
    Result<std::unique_ptr<RedisLimiter>> r = RedisLimiter::create(o);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? std::move(*r) : nullptr;
  }

  static Decision admit(Limiter& l, const Subject& s, int64_t tokens) {
    Result<Decision> r = l.admit(s, tokens);
    EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    return r.is_ok() ? *r : Decision{};
  }

  // EVALSHA calls since the last CONFIG RESETSTAT; -1 when Redis reports none.
  int evalsha_calls() {
    const std::string stats = redis_.command({"INFO", "commandstats"});
    constexpr std::string_view kField = "cmdstat_evalsha:calls=";
    const size_t at = stats.find(kField);
    return at == std::string::npos ? -1 : std::stoi(stats.substr(at + kField.size()));
  }

  double errors(const char* mode) {
    return metrics_.counter("llmpool_ratelimit_backend_errors_total", "", {{"mode", mode}}).value();
  }

  RedisServer redis_;
  obs::MetricsRegistry metrics_;
};

TEST_F(RedisLimiterTest, AdmitsUpToRequestsPerMinuteThenRefuses) {
  auto l = make();
  const Subject s = subject({.requests_per_minute = 3});
  for (int i = 0; i < 3; ++i) {
    Decision d = admit(*l, s, 10);
    ASSERT_TRUE(d.admitted) << i;
    EXPECT_EQ(d.headers.limit_requests, 3);
    EXPECT_EQ(d.headers.remaining_requests, 2 - i);
  }
  Decision d = admit(*l, s, 10);
  EXPECT_FALSE(d.admitted);
  EXPECT_EQ(d.code, "rate_limit_exceeded");
  EXPECT_NE(d.message.find("requests per minute of tenant 'acme'"), std::string::npos) << d.message;
  EXPECT_GE(d.retry_after_seconds, 1);
  EXPECT_LE(d.retry_after_seconds, 20);
  EXPECT_EQ(d.headers.remaining_requests, 0);
  // Keys live in one hash slot per tenant and expire.
  const std::string key = "llmpool:rl:{acme}:h:t";
  EXPECT_NE(redis_.command({"EXISTS", key}), "0");
  const int64_t pttl = std::stoll(redis_.command({"PTTL", key}));
  EXPECT_GT(pttl, 0);
  EXPECT_LE(pttl, 61000);
}

TEST_F(RedisLimiterTest, ReservesTokensAndGivesBackUnusedAtFinish) {
  auto l = make();
  const Subject s = subject({.tokens_per_minute = 1000});
  Decision first = admit(*l, s, 600);
  ASSERT_TRUE(first.admitted);
  EXPECT_EQ(first.headers.remaining_tokens, 400);
  EXPECT_FALSE(admit(*l, s, 600).admitted);
  l->finish(first.ticket, 100);  // 500 come back
  Decision third = admit(*l, s, 600);
  ASSERT_TRUE(third.admitted);
  EXPECT_GE(third.headers.remaining_tokens, 300);
  EXPECT_LE(third.headers.remaining_tokens, 310);  // and a little drained meanwhile
  EXPECT_EQ(l->open_tickets(), 1u);
}

// A subject's buckets and budgets share one hash: a finish that charges
// more than was reserved keeps it until that drains, and one whose hash
// expired meanwhile never leaves a key without an expiry.
TEST_F(RedisLimiterTest, UsageAboveTheReservationKeepsTheBucketUntilItDrains) {
  auto l = make();
  const Subject s = subject({.requests_per_minute = 100, .tokens_per_minute = 1000, .daily_tokens = 100000});
  const std::string key = "llmpool:rl:{acme}:h:t";
  Decision d = admit(*l, s, 10);
  ASSERT_TRUE(d.admitted);
  EXPECT_EQ(redis_.command({"HGET", key, "du"}), "10");
  l->finish(d.ticket, 900);
  EXPECT_EQ(redis_.command({"HGET", key, "du"}), "900");
  EXPECT_GT(std::stod(redis_.command({"HGET", key, "tl"})), 890.0);
  EXPECT_GT(std::stoll(redis_.command({"PTTL", key})), 50000) << "the day's budget keeps the hash";
  Decision refused = admit(*l, s, 200);
  EXPECT_FALSE(refused.admitted) << "900 of 1000 tokens used this minute";

  const Subject only_tokens = subject({.tokens_per_minute = 1000}, {}, "", "globex");
  const std::string other = "llmpool:rl:{globex}:h:t";
  Decision e = admit(*l, only_tokens, 10);
  ASSERT_TRUE(e.admitted);
  const int64_t short_ttl = std::stoll(redis_.command({"PTTL", other}));
  EXPECT_GT(short_ttl, 0);
  EXPECT_LE(short_ttl, 2000);
  l->finish(e.ticket, 600);
  EXPECT_GT(std::stoll(redis_.command({"PTTL", other})), 30000) << "600 tokens take 36 s to drain";

  Decision f = admit(*l, only_tokens, 10);
  ASSERT_TRUE(f.admitted);
  ASSERT_EQ(redis_.command({"DEL", other}), "1");  // expired before the finish
  l->finish(f.ticket, 300);
  EXPECT_GT(std::stoll(redis_.command({"PTTL", other})), 0) << "no key without an expiry";
}

TEST_F(RedisLimiterTest, RefusedRequestsCostNothing) {
  auto l = make();
  const Subject s = subject({.requests_per_minute = 10, .tokens_per_minute = 1000, .daily_tokens = 5000},
                            {.tokens_per_minute = 100, .max_concurrent = 1});
  Decision held = admit(*l, s, 50);
  ASSERT_TRUE(held.admitted);
  EXPECT_FALSE(admit(*l, s, 10).admitted);  // the key's lease
  l->finish(held.ticket, 50);
  EXPECT_FALSE(admit(*l, s, 60).admitted);  // the key's tokens
  Decision huge = admit(*l, s, 500);
  EXPECT_FALSE(huge.admitted);
  EXPECT_EQ(huge.retry_after_seconds, 0);
  Decision d = admit(*l, s, 40);
  ASSERT_TRUE(d.admitted);
  EXPECT_EQ(d.headers.remaining_requests, 8);
  l->finish(d.ticket, 40);
  EXPECT_EQ(redis_.command({"HGET", "llmpool:rl:{acme}:h:t", "du"}), "90");  // 50 + 40, nothing refused
}

TEST_F(RedisLimiterTest, TenantLimitBindsEveryKeyAndKeyLimitsOnlyTheirOwn) {
  auto l = make();
  const Limits tenant{.requests_per_minute = 3};
  const Limits key{.requests_per_minute = 1};
  EXPECT_TRUE(admit(*l, subject(tenant, key, "a"), 0).admitted);
  Decision again = admit(*l, subject(tenant, key, "a"), 0);
  EXPECT_FALSE(again.admitted);
  EXPECT_NE(again.message.find("credential's limit"), std::string::npos) << again.message;
  EXPECT_TRUE(admit(*l, subject(tenant, key, "b"), 0).admitted);
  EXPECT_TRUE(admit(*l, subject(tenant, key, "c"), 0).admitted);
  Decision full = admit(*l, subject(tenant, key, "d"), 0);
  EXPECT_FALSE(full.admitted);
  EXPECT_NE(full.message.find("of tenant 'acme'"), std::string::npos) << full.message;
  EXPECT_TRUE(admit(*l, subject(tenant, key, "a", "globex"), 0).admitted);  // another tenant
}

TEST_F(RedisLimiterTest, DailyBudgetRefusesWithInsufficientQuota) {
  auto l = make();
  const Subject s = subject({.daily_tokens = 1000, .monthly_tokens = 100000});
  Decision d = admit(*l, s, 900);
  ASSERT_TRUE(d.admitted);
  l->finish(d.ticket, 600);  // 300 back to today's budget
  Decision refused = admit(*l, s, 500);
  EXPECT_FALSE(refused.admitted);
  EXPECT_EQ(refused.code, "insufficient_quota");
  EXPECT_GE(refused.retry_after_seconds, 1);
  EXPECT_LE(refused.retry_after_seconds, 86400);
  EXPECT_TRUE(admit(*l, s, 400).admitted);
  EXPECT_EQ(redis_.command({"HGET", "llmpool:rl:{acme}:h:t", "mu"}), "1000");
}

TEST_F(RedisLimiterTest, ConcurrencyLeaseIsSharedByInstances) {
  auto a = make();
  auto b = make();
  const Subject s = subject({.max_concurrent = 1});
  Decision held = admit(*a, s, 0);
  ASSERT_TRUE(held.admitted);
  Decision refused = admit(*b, s, 0);
  EXPECT_FALSE(refused.admitted);
  EXPECT_NE(refused.message.find("concurrent requests"), std::string::npos) << refused.message;
  a->finish(held.ticket, 0);
  Decision next = admit(*b, s, 0);
  EXPECT_TRUE(next.admitted);
  a->finish(held.ticket, 0);  // a repeated finish is ignored
  EXPECT_FALSE(admit(*a, s, 0).admitted);
}

// serve's mode: finish() queues the write for the limiter's own thread
// (the caller is an HTTP I/O loop and must not wait for Redis); the lease
// comes back once it is written, and the queue is written before the
// limiter goes away.
TEST_F(RedisLimiterTest, AsyncFinishGivesTheLeaseBackAndWritesTheQueueAtShutdown) {
  auto a = make(false, milliseconds(30000), 2, true);
  auto b = make();
  const Subject s = subject({.max_concurrent = 1});
  Decision held = admit(*a, s, 0);
  ASSERT_TRUE(held.admitted);
  EXPECT_FALSE(admit(*b, s, 0).admitted);
  a->finish(held.ticket, 0);
  a->wait_for_finishes();
  Decision next = admit(*a, s, 0);
  ASSERT_TRUE(next.admitted) << "the lease was given back";
  a->finish(next.ticket, 0);
  a.reset();  // the destructor writes the queued finish
  EXPECT_TRUE(admit(*b, s, 0).admitted);
  EXPECT_EQ(errors("closed"), 0.0);
}

// Finishes that queue up are written pipelined, in batches; a batch that
// meets a flushed script cache loads the script again and writes them all.
TEST_F(RedisLimiterTest, QueuedFinishesAreAllWrittenAlsoAfterScriptFlush) {
  auto a = make(false, milliseconds(30000), 2, true);
  const Subject s = subject({.max_concurrent = 150});
  std::vector<std::string> tickets;
  for (int i = 0; i < 150; ++i) {
    Decision d = admit(*a, s, 0);
    ASSERT_TRUE(d.admitted) << i;
    tickets.push_back(d.ticket);
  }
  EXPECT_FALSE(admit(*a, s, 0).admitted);
  ASSERT_EQ(redis_.command({"SCRIPT", "FLUSH"}), "OK");
  for (const auto& t : tickets) a->finish(t, 0);  // more than one batch
  a->wait_for_finishes();
  for (int i = 0; i < 150; ++i) ASSERT_TRUE(admit(*a, s, 0).admitted) << "lease " << i << " came back";
  EXPECT_EQ(errors("closed"), 0.0);
}

// What admit_async answers, by the order the admissions were queued in.
struct Answers {
  explicit Answers(size_t n) : got(n) {}
  Limiter::AdmitDone slot(size_t i) {
    return [this, i](Result<Decision> r) {
      std::lock_guard lock(mu);
      got[i] = std::move(r);
      ++count;
      cv.notify_all();
    };
  }
  void wait() {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return count == got.size(); }));
  }
  bool admitted(size_t i) {
    std::lock_guard lock(mu);
    return got[i] && got[i]->is_ok() && (*got[i])->admitted;
  }
  std::mutex mu;
  std::condition_variable cv;
  std::vector<std::optional<Result<Decision>>> got;
  size_t count = 0;
};

// `n` admissions of `s` queued at once while Redis answers nothing for 200 ms
// (after one that loads the script, and with Redis's stats reset); their answers.
std::unique_ptr<Answers> burst(RedisServer& redis, RedisLimiter& l, const Subject& s, size_t n, int64_t tokens) {
  Result<Decision> warm = l.admit(subject({}, {.requests_per_minute = 1}, "warm"), 0);
  EXPECT_TRUE(warm.is_ok() && warm->admitted);
  if (warm.is_ok()) l.finish(warm->ticket, 0);
  EXPECT_EQ(redis.command({"CONFIG", "RESETSTAT"}), "OK");
  EXPECT_EQ(redis.command({"CLIENT", "PAUSE", "200", "ALL"}), "OK");
  auto answers = std::make_unique<Answers>(n);
  for (size_t i = 0; i < n; ++i) l.admit_async(s, tokens, answers->slot(i));
  answers->wait();
  return answers;
}

// Admissions queued while Redis is busy go in one round trip, one script
// call per tenant, and are decided in the order they were queued, each as
// if alone: no more than a limit passes, and those that pass are the first.
TEST_F(RedisLimiterTest, AdmissionsQueuedTogetherGoInOneCallPerTenantAndInOrder) {
  auto l = make(false, milliseconds(30000), 1);
  const Subject acme = subject({.requests_per_minute = 10, .tokens_per_minute = 1000, .max_concurrent = 20});
  const Subject globex = subject({.requests_per_minute = 3}, {}, "k1", "globex");
  ASSERT_TRUE(admit(*l, subject({}, {.requests_per_minute = 1}, "warm"), 0).admitted);  // loads the script
  ASSERT_EQ(redis_.command({"CONFIG", "RESETSTAT"}), "OK");
  // Redis answers nothing for 200 ms: the first admission waits in it, the
  // rest queue behind it on the limiter's one thread.
  ASSERT_EQ(redis_.command({"CLIENT", "PAUSE", "200", "ALL"}), "OK");
  constexpr size_t kEach = 30;
  Answers answers(2 * kEach);
  for (size_t i = 0; i < kEach; ++i) {
    l->admit_async(acme, 10, answers.slot(2 * i));
    l->admit_async(globex, 10, answers.slot(2 * i + 1));
  }
  answers.wait();
  size_t acme_in = 0, globex_in = 0;
  for (size_t i = 0; i < kEach; ++i) {
    if (answers.admitted(2 * i)) ++acme_in;
    if (answers.admitted(2 * i + 1)) ++globex_in;
    EXPECT_EQ(answers.admitted(2 * i), i < 10) << i;
    EXPECT_EQ(answers.admitted(2 * i + 1), i < 3) << i;
  }
  EXPECT_EQ(acme_in, 10u);
  EXPECT_EQ(globex_in, 3u);
  EXPECT_EQ(l->open_tickets(), 10u) << "acme's tokens and leases are held; globex has only a per-minute limit";
  const int calls = evalsha_calls();
  EXPECT_GE(calls, 2);
  EXPECT_LE(calls, 4) << "60 admissions in at most two round trips of one call per tenant";
  EXPECT_EQ(redis_.command({"ZCARD", "llmpool:rl:{acme}:c:t"}), "10");
}

// A tenant's finishes and admissions queued in one round go in ONE script
// call, the finishes first: the lease and the tokens a finish gives back are
// there for the admission behind it.
TEST_F(RedisLimiterTest, FinishesAndAdmissionsOfATenantShareOneCallFinishesFirst) {
  auto l = make(false, milliseconds(30000), 2, true);
  const Subject s = subject({.tokens_per_minute = 100, .max_concurrent = 1, .daily_tokens = 1000});
  const Subject warm = subject({}, {.requests_per_minute = 1000}, "warm", "warm");
  Decision held = admit(*l, s, 100);
  ASSERT_TRUE(held.admitted);
  EXPECT_FALSE(admit(*l, s, 1).admitted) << "the lease and the tokens are held";
  ASSERT_EQ(redis_.command({"CONFIG", "RESETSTAT"}), "OK");
  // The worker waits in Redis on another tenant's admission; the finish and
  // the admission queue behind it and go out together.
  ASSERT_EQ(redis_.command({"CLIENT", "PAUSE", "400", "ALL"}), "OK");
  Answers answers(2);
  l->admit_async(warm, 0, answers.slot(0));
  std::this_thread::sleep_for(milliseconds(100));
  l->finish(held.ticket, 10);
  l->admit_async(s, 80, answers.slot(1));
  answers.wait();
  EXPECT_TRUE(answers.admitted(0));
  EXPECT_TRUE(answers.admitted(1)) << "the finish ran first in the same call";
  l->wait_for_finishes();
  EXPECT_EQ(evalsha_calls(), 2) << "warm's admission, then s's finish and admission in one";
  // The day's budget: 10 used by the first request, 80 held by the second.
  EXPECT_EQ(redis_.command({"HGET", "llmpool:rl:{acme}:h:t", "du"}), "90");
  EXPECT_EQ(errors("closed"), 0.0);
}

// An admission still queued when the limiter goes away is answered first.
TEST_F(RedisLimiterTest, QueuedAdmissionsAreAnsweredBeforeTheLimiterGoes) {
  auto l = make(false, milliseconds(30000), 1);
  const Subject s = subject({.requests_per_minute = 100});
  ASSERT_EQ(redis_.command({"CLIENT", "PAUSE", "100", "ALL"}), "OK");
  Answers answers(20);
  for (size_t i = 0; i < 20; ++i) l->admit_async(s, 0, answers.slot(i));
  l.reset();
  answers.wait();
  for (size_t i = 0; i < 20; ++i) EXPECT_TRUE(answers.admitted(i)) << i;
  // Bounds are checked before anything is queued.
  auto again = make();
  Subject bad = s;
  bad.tenant = "a{b";
  Answers refused(1);
  again->admit_async(bad, 0, refused.slot(0));
  refused.wait();
  EXPECT_EQ(refused.got[0]->status().code(), StatusCode::kInvalidArgument);
}

TEST_F(RedisLimiterTest, LeaseIsRenewedWhileHeldAndExpiresWhenTheHolderDies) {
  const Subject s = subject({.max_concurrent = 1});
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t holder = ::fork();
  ASSERT_GE(holder, 0);
  if (holder == 0) {  // another instance: admits, then keeps renewing until killed
    ::close(ready[0]);
    Options o;
    o.url = redis_.url();
    o.lease_ttl = milliseconds(1500);
    auto l = RedisLimiter::create(o);
    char ok = 'n';
    if (l.is_ok()) {
      Result<Decision> d = (*l)->admit(s, 0);
      if (d.is_ok() && d->admitted && (*l)->open_tickets() == 1) ok = 'y';
    }
    if (::write(ready[1], &ok, 1) != 1) ::_exit(1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  ::close(ready[0]);
  ASSERT_EQ(ok, 'y');

  auto mine = make();
  EXPECT_FALSE(admit(*mine, s, 0).admitted);
  // Past the first lease's expiry, the renewed lease still holds.
  const std::string key = "llmpool:rl:{acme}:c:t";
  const std::string first = redis_.command({"ZRANGE", key, "0", "-1", "WITHSCORES"});
  const int64_t first_expiry = std::stoll(first.substr(first.find(' ') + 1));
  while (redis_.time_ms() <= first_expiry + 200) std::this_thread::sleep_for(milliseconds(50));
  EXPECT_FALSE(admit(*mine, s, 0).admitted) << "a renewed lease must not expire";

  ::kill(holder, SIGKILL);  // the holder dies without finishing
  int status = 0;
  ::waitpid(holder, &status, 0);
  bool admitted = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!admitted && std::chrono::steady_clock::now() < deadline) {
    admitted = admit(*mine, s, 0).admitted;
    if (!admitted) std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_TRUE(admitted) << "the dead holder's lease never expired";
}

TEST_F(RedisLimiterTest, ClaimOnceIsSharedByInstancesAndNeverFailsOpen) {
  auto a = make(/*fail_open=*/true);
  auto b = make(/*fail_open=*/true);
  Result<bool> first = a->claim_once("hk_1:abc", 300);
  ASSERT_TRUE(first.is_ok()) << first.status().to_string();
  EXPECT_TRUE(*first);
  Result<bool> again = b->claim_once("hk_1:abc", 300);
  ASSERT_TRUE(again.is_ok());
  EXPECT_FALSE(*again) << "another instance already recorded it";
  EXPECT_TRUE(b->claim_once("hk_1:abd", 300).value());
  EXPECT_FALSE(a->claim_once("", 300).is_ok());
  redis_.kill();
  Result<bool> down = a->claim_once("hk_1:new", 300);
  ASSERT_FALSE(down.is_ok()) << "a replay check must not fail open";
  EXPECT_EQ(down.status().code(), StatusCode::kUnavailable);
}

TEST_F(RedisLimiterTest, FailsClosedWhenRedisDiesAndRecoversWhenItReturns) {
  auto l = make(/*fail_open=*/false);
  const Subject s = subject({.requests_per_minute = 2});
  ASSERT_TRUE(admit(*l, s, 0).admitted);
  redis_.kill();
  Result<Decision> down = l->admit(s, 0);
  ASSERT_FALSE(down.is_ok());
  EXPECT_EQ(down.status().code(), StatusCode::kUnavailable);
  EXPECT_GE(errors("closed"), 1.0);
  EXPECT_EQ(errors("open"), 0.0);

  ASSERT_EQ(redis_.restart(), "");  // empty: no persistence
  bool back = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!back && std::chrono::steady_clock::now() < deadline) {
    Result<Decision> r = l->admit(s, 0);
    back = r.is_ok() && r->admitted;
    if (!back) std::this_thread::sleep_for(milliseconds(100));
  }
  ASSERT_TRUE(back) << "no reconnect after Redis came back";
  EXPECT_TRUE(admit(*l, s, 0).admitted);
  EXPECT_FALSE(admit(*l, s, 0).admitted) << "limits hold again after the reconnect";
}

TEST_F(RedisLimiterTest, FailsOpenWhenConfiguredAndCountsIt) {
  auto l = make(/*fail_open=*/true);
  const Subject s = subject({.requests_per_minute = 1, .max_concurrent = 1});
  redis_.kill();
  for (int i = 0; i < 3; ++i) {
    Result<Decision> r = l->admit(s, 10);
    ASSERT_TRUE(r.is_ok()) << r.status().to_string();
    EXPECT_TRUE(r->admitted);
    EXPECT_TRUE(r->ticket.empty());
    l->finish(r->ticket, 10);
  }
  EXPECT_EQ(errors("open"), 3.0);
  EXPECT_EQ(errors("closed"), 0.0);
  EXPECT_EQ(l->open_tickets(), 0u);
}

TEST_F(RedisLimiterTest, LoadsTheScriptAgainAfterScriptFlush) {
  auto l = make();
  const Subject s = subject({.requests_per_minute = 2});
  ASSERT_TRUE(admit(*l, s, 0).admitted);
  ASSERT_EQ(redis_.command({"SCRIPT", "FLUSH"}), "OK");
  EXPECT_TRUE(admit(*l, s, 0).admitted);
  EXPECT_FALSE(admit(*l, s, 0).admitted);
  EXPECT_EQ(errors("closed"), 0.0);
}

TEST_F(RedisLimiterTest, HostileKeyIdsStayInsideTheirOwnKeys) {
  auto l = make();
  const Limits key{.requests_per_minute = 1};
  for (std::string id : {std::string("x:rpm:t"), std::string("x:h:t"), std::string("}{acme}"), std::string("a\0b", 3),
                         std::string("\r\n*3\r\n$3\r\nDEL"), std::string(256, '\xff')}) {
    EXPECT_TRUE(admit(*l, subject({}, key, id), 0).admitted) << id;
    EXPECT_FALSE(admit(*l, subject({}, key, id), 0).admitted) << id;
  }
  EXPECT_EQ(redis_.command({"EXISTS", "llmpool:rl:{acme}:h:t"}), "0");
  Subject bad = subject({}, key, "k");
  bad.tenant = "ac}me";
  EXPECT_EQ(l->admit(bad, 0).status().code(), StatusCode::kInvalidArgument);
}

// THE test: four instances in four processes, each with its own connection,
// hammer one key at once; together they admit no more than each limit.
// Four processes, each with its own limiter and connection, hammer one key
// per limit at once. With allotments, a unit may be spent up to `allotment`
// after Redis charged it (the bound below grows by that), and at the end
// each process may still hold a slice of up to 1/16 of a limit unused.
void four_processes(RedisServer& redis, milliseconds allotment) {
  struct Shared {
    std::atomic<int> running;
    std::atomic<int> max_running;
    std::atomic<int64_t> admitted[4];
    std::atomic<int64_t> tokens[4];
    std::atomic<int> go;
  };
  static_assert(std::atomic<int64_t>::is_always_lock_free);
  void* mem = ::mmap(nullptr, sizeof(Shared), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* shared = new (mem) Shared{};

  // One subject per limit, so that each is the one that binds.
  const Subject requests = subject({}, {.requests_per_minute = 50}, "req");
  const Subject tokens = subject({}, {.tokens_per_minute = 1000}, "tok");
  const Subject budget = subject({}, {.daily_tokens = 800}, "budget");
  const Subject lease = subject({}, {.max_concurrent = 3}, "lease");
  const Subject* subjects[4] = {&requests, &tokens, &budget, &lease};

  const int64_t t0 = redis.time_ms();
  std::vector<pid_t> children;
  for (int p = 0; p < 4; ++p) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      Options o;
      o.url = redis.url();
      o.pool_size = 1;
      o.allotment = allotment;
      auto made = RedisLimiter::create(o);
      if (!made.is_ok()) ::_exit(2);
      std::unique_ptr<RedisLimiter> owned = std::move(*made);
      RedisLimiter& l = *owned;
      std::mt19937 rng(static_cast<unsigned>(p + 1));
      while (shared->go.load() == 0) std::this_thread::yield();
      for (int round = 0; round < 150; ++round) {
        for (int k = 0; k < 4; ++k) {
          const int64_t want = k == 0 || k == 3 ? 1 : 1 + static_cast<int64_t>(rng() % 50);
          Result<Decision> d = l.admit(*subjects[k], want);
          if (!d.is_ok()) ::_exit(3);
          if (!d->admitted) continue;
          shared->admitted[k].fetch_add(1);
          shared->tokens[k].fetch_add(want);
          if (k == 3) {
            const int now = shared->running.fetch_add(1) + 1;
            int prev = shared->max_running.load();
            while (now > prev && !shared->max_running.compare_exchange_weak(prev, now)) {
            }
            std::this_thread::sleep_for(std::chrono::microseconds(200));
            shared->running.fetch_sub(1);
          }
          l.finish(d->ticket, want);  // all of it used: nothing comes back
        }
      }
      owned.reset();  // gives back what its allotments hold
      ::_exit(0);
    }
    children.push_back(pid);
  }
  shared->go.store(1);
  for (pid_t pid : children) {
    int status = 0;
    ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "child status " << status;
  }
  const int64_t elapsed_ms = redis.time_ms() - t0;
  ASSERT_GE(elapsed_ms, 0);

  // A bucket holds its limit and refills at the limit per minute: over the
  // run, at most limit + limit * elapsed / 60 s pass, and no fewer than the
  // limit (600 tries each).
  const int64_t window_ms = elapsed_ms + allotment.count();
  const int64_t held = allotment.count() > 0 ? 4 : 0;  // slices a process may hold unused at the end
  const int64_t req = shared->admitted[0].load();
  EXPECT_LE(req, 50 + (50 * window_ms + 59999) / 60000) << "elapsed " << elapsed_ms << " ms";
  EXPECT_GE(req, 50 - held * (50 / 16));
  const int64_t tok = shared->tokens[1].load();
  EXPECT_LE(tok, 1000 + (1000 * window_ms + 59999) / 60000) << "elapsed " << elapsed_ms << " ms";
  EXPECT_GE(tok, 1000 - 50 - held * (1000 / 16));
  // A budget does not refill within the day.
  if (day_of(t0) == day_of(t0 + elapsed_ms)) {
    EXPECT_LE(shared->tokens[2].load(), 800);
    EXPECT_GE(shared->tokens[2].load(), 800 - 50 - held * (800 / 16));
  }
  EXPECT_LE(shared->max_running.load(), 3);
  EXPECT_GE(shared->admitted[3].load(), 3);
  EXPECT_EQ(redis.command({"ZCARD", "llmpool:rl:{acme}:c:k:lease"}), "0") << "every lease released";
  ::munmap(mem, sizeof(Shared));
}

TEST_F(RedisLimiterTest, FourProcessesNeverAdmitMoreThanTheLimit) { four_processes(redis_, milliseconds(0)); }

TEST_F(RedisLimiterTest, FourProcessesWithAllotmentsNeverAdmitMoreThanTheLimit) {
  four_processes(redis_, milliseconds(200));
}

// Allotments: one Redis call admits many requests, none passes a limit, and
// what a slice did not use goes back when it closes: the daily budget ends
// at exactly the tokens used, and no lease is left.
TEST_F(RedisLimiterTest, AllotmentsAdmitManyRequestsPerCallAndGiveBackWhatTheyDoNotUse) {
  auto l = make(false, milliseconds(30000), 2, false, milliseconds(300));
  const Subject s = subject({.requests_per_minute = 1600, .tokens_per_minute = 16000000, .max_concurrent = 64},
                            {.daily_tokens = 1000000});
  l->finish(admit(*l, subject({}, {.requests_per_minute = 1}, "warm"), 0).ticket, 0);  // loads the script
  ASSERT_EQ(redis_.command({"CONFIG", "RESETSTAT"}), "OK");
  const int64_t t0 = redis_.time_ms();
  int64_t admitted = 0;
  int64_t last_remaining = 1600;
  for (int i = 0; i < 1200; ++i) {
    Decision d = admit(*l, s, 100);
    ASSERT_TRUE(d.admitted) << i;
    ++admitted;
    EXPECT_EQ(d.headers.limit_requests, 1600);
    EXPECT_LE(d.headers.remaining_requests, last_remaining) << i;
    last_remaining = d.headers.remaining_requests;
    l->finish(d.ticket, 40);
  }
  EXPECT_LE(evalsha_calls(), 60) << "1200 admissions in slices of up to 100 (1/16 of the limit)";
  // On to the limit: the rest is refused, and nothing passes it.
  int refused = 0;
  for (int i = 0; i < 800; ++i) {
    Decision d = admit(*l, s, 100);
    if (!d.admitted) {
      ++refused;
      EXPECT_EQ(d.code, "rate_limit_exceeded");
      EXPECT_NE(d.message.find("requests per minute of tenant 'acme'"), std::string::npos) << d.message;
      continue;
    }
    ++admitted;
    l->finish(d.ticket, 40);
  }
  const int64_t elapsed_ms = redis_.time_ms() - t0;
  EXPECT_GT(refused, 0);
  EXPECT_GE(admitted, 1600 - 100);
  EXPECT_LE(admitted, 1600 + (1600 * (elapsed_ms + 300) + 59999) / 60000) << "elapsed " << elapsed_ms << " ms";
  // Once the open slice expires, its unused units come back: the budget holds
  // exactly what was used, and no lease is held.
  std::this_thread::sleep_for(milliseconds(600));
  l->wait_for_finishes();
  EXPECT_EQ(redis_.command({"HGET", "llmpool:rl:{acme}:h:k:k1", "du"}), std::to_string(40 * admitted));
  EXPECT_EQ(redis_.command({"ZCARD", "llmpool:rl:{acme}:c:t"}), "0");
  EXPECT_EQ(l->open_tickets(), 0u);
}

// A slice's leases count for every instance; those it does not hold for a
// running request come back when it closes.
TEST_F(RedisLimiterTest, AllotmentLeasesHoldAcrossInstancesAndComeBackWhenTheSliceCloses) {
  auto a = make(false, milliseconds(30000), 2, false, milliseconds(300));
  auto b = make();
  const Subject s = subject({.max_concurrent = 64});  // slices of up to 4 leases
  std::vector<Decision> held;
  for (int i = 0; i < 40; ++i) {
    held.push_back(admit(*a, s, 0));
    ASSERT_TRUE(held.back().admitted) << i;
  }
  ASSERT_TRUE(a->renew_leases().is_ok());
  std::vector<Decision> others;
  for (Decision d = admit(*b, s, 0); d.admitted; d = admit(*b, s, 0)) others.push_back(d);
  EXPECT_LE(held.size() + others.size(), 64u);
  EXPECT_GE(held.size() + others.size(), 64u - 4u) << "at most one slice's leases unused";
  std::this_thread::sleep_for(milliseconds(600));  // a's open slice expires and gives back its free leases
  for (Decision d = admit(*b, s, 0); d.admitted; d = admit(*b, s, 0)) others.push_back(d);
  EXPECT_EQ(held.size() + others.size(), 64u);
  for (const Decision& d : held) a->finish(d.ticket, 0);
  a->wait_for_finishes();
  EXPECT_EQ(redis_.command({"ZCARD", "llmpool:rl:{acme}:c:t"}), std::to_string(others.size()));
  EXPECT_EQ(a->open_tickets(), 0u);
}

// Requests that arrive while a subject's take is out wait for it and are
// admitted from the slice it brings: a burst costs a few calls, not one each.
TEST_F(RedisLimiterTest, AllotmentRequestsThatArriveTogetherShareTheSliceTheyWaitFor) {
  auto l = make(false, milliseconds(30000), 1, true, milliseconds(1000));
  const Subject s = subject({.requests_per_minute = 100000, .tokens_per_minute = 100000000, .max_concurrent = 10000});
  constexpr size_t kBurst = 200;
  std::unique_ptr<Answers> answers = burst(redis_, *l, s, kBurst, 10);
  for (size_t i = 0; i < kBurst; ++i) EXPECT_TRUE(answers->admitted(i)) << i;
  EXPECT_LE(evalsha_calls(), 5) << "a take of one, then takes of up to 64 leases for the 199 that waited";
  EXPECT_EQ(l->open_tickets(), kBurst);
}

// A limit too small to slice (1/16 of it is one lease) does not make a
// subject's requests wait for each other's round trips: those a take cannot
// hold go to Redis one by one in the same round, and the limit holds exactly.
TEST_F(RedisLimiterTest, AllotmentsOfASmallLimitDoNotQueueRequestsBehindEachOther) {
  auto l = make(false, milliseconds(30000), 1, true, milliseconds(1000));
  const Subject s = subject({.requests_per_minute = 100000, .max_concurrent = 16});
  constexpr size_t kBurst = 40;
  std::unique_ptr<Answers> answers = burst(redis_, *l, s, kBurst, 0);
  size_t in = 0;
  for (size_t i = 0; i < kBurst; ++i) in += answers->admitted(i) ? 1 : 0;
  EXPECT_EQ(in, 16u);
  EXPECT_EQ(redis_.command({"ZCARD", "llmpool:rl:{acme}:c:t"}), "16");
  EXPECT_LE(evalsha_calls(), 6) << "a few rounds, not one round trip per request";
}

// The Lua script and checks.cpp are two copies of one arithmetic: the same
// sequence of admissions and finishes, with the local clock following Redis's,
// gets the same decisions from both.
TEST_F(RedisLimiterTest, DecidesExactlyAsTheLocalLimiterDoes) {
  auto redis = make();
  ManualClock clock(redis_.time_ms());
  LocalLimiter local(clock);
  const Subject s = subject({.requests_per_minute = 20, .tokens_per_minute = 2000, .max_concurrent = 3,
                             .daily_tokens = 5000, .monthly_tokens = 8000},
                            {.requests_per_minute = 10, .tokens_per_minute = 1500, .max_concurrent = 2,
                             .daily_tokens = 3000});
  uint32_t lcg = 12345;
  std::vector<std::pair<std::string, std::string>> open;  // (redis ticket, local ticket)
  std::vector<int64_t> reserved;
  int admitted = 0, refused = 0;
  for (int step = 0; step < 60; ++step) {
    lcg = lcg * 1103515245u + 12345u;
    const int64_t want = (lcg >> 8) % 700;
    clock.set_ms(std::max(clock.now_ms(), redis_.time_ms()));
    Decision r = admit(*redis, s, want);
    Decision l = admit(local, s, want);
    ASSERT_EQ(r.admitted, l.admitted) << "step " << step << ": " << r.message << " | " << l.message;
    EXPECT_EQ(r.code, l.code) << step;
    EXPECT_EQ(r.headers.limit_requests, l.headers.limit_requests) << step;
    EXPECT_EQ(r.headers.limit_tokens, l.headers.limit_tokens) << step;
    EXPECT_NEAR(r.headers.remaining_requests, l.headers.remaining_requests, 1) << step;
    EXPECT_NEAR(r.headers.remaining_tokens, l.headers.remaining_tokens, 2) << step;
    EXPECT_EQ(r.retry_after_seconds == 0, l.retry_after_seconds == 0) << step;
    if (r.admitted) {
      ++admitted;
      open.emplace_back(r.ticket, l.ticket);
      reserved.push_back(want);
    } else {
      ++refused;
    }
    if (open.size() == 2 || (step % 7 == 0 && !open.empty())) {  // the oldest ends, having used half
      clock.set_ms(std::max(clock.now_ms(), redis_.time_ms()));
      redis->finish(open.front().first, reserved.front() / 2);
      local.finish(open.front().second, reserved.front() / 2);
      open.erase(open.begin());
      reserved.erase(reserved.begin());
    }
  }
  EXPECT_GT(admitted, 5);
  EXPECT_GT(refused, 5);
}

TEST(RedisLimiterAuthTest, AuthenticatesAndSelectsTheDatabaseFromTheUrl) {
  RedisServer redis;
  ASSERT_EQ(redis.start({"--requirepass", "s3cret pass"}), "");
  Options o;
  o.url = "redis://:s3cret%20pass@127.0.0.1:" + std::to_string(redis.port()) + "/3";
  auto l = RedisLimiter::create(o);
  ASSERT_TRUE(l.is_ok());
  const Subject s = subject({.requests_per_minute = 5});
  Result<Decision> d = (*l)->admit(s, 0);
  ASSERT_TRUE(d.is_ok()) << d.status().to_string();
  EXPECT_TRUE(d->admitted);
  // command() opens a fresh connection (db 0) each time: look into db 3 from a script.
  EXPECT_EQ(redis.command({"EVAL", "redis.call('SELECT', 3) return redis.call('EXISTS', KEYS[1])", "1",
                           "llmpool:rl:{acme}:h:t"}),
            "1");
  EXPECT_EQ(redis.command({"EXISTS", "llmpool:rl:{acme}:h:t"}), "0") << "not in db 0";

  o.url = "redis://:wrong-password@127.0.0.1:" + std::to_string(redis.port());
  auto bad = RedisLimiter::create(o);
  ASSERT_TRUE(bad.is_ok());
  Result<Decision> refused = (*bad)->admit(s, 0);
  ASSERT_FALSE(refused.is_ok());
  EXPECT_EQ(refused.status().code(), StatusCode::kUnavailable);
  EXPECT_EQ(refused.status().message().find("wrong-password"), std::string::npos);
}

TEST_F(RedisLimiterTest, AHungRedisTimesOutInsteadOfHanging) {
  Options o;
  o.url = redis_.url();
  o.command_timeout = milliseconds(200);
  o.connect_timeout = milliseconds(200);
  o.metrics = &metrics_;
  auto l = RedisLimiter::create(o);
  ASSERT_TRUE(l.is_ok());
  const Subject s = subject({.requests_per_minute = 100});
  ASSERT_TRUE(admit(**l, s, 0).admitted);
  redis_.pause();
  Result<Decision> d = (*l)->admit(s, 0);  // answers (Unavailable) instead of blocking
  redis_.resume();
  ASSERT_FALSE(d.is_ok());
  EXPECT_EQ(d.status().code(), StatusCode::kUnavailable);
  EXPECT_GE(errors("closed"), 1.0);
  bool back = false;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (!back && std::chrono::steady_clock::now() < deadline) {
    Result<Decision> r = (*l)->admit(s, 0);
    back = r.is_ok() && r->admitted;
    if (!back) std::this_thread::sleep_for(milliseconds(100));
  }
  EXPECT_TRUE(back);
}

TEST(RedisUrlTest, ParsesHostPortDbAndPassword) {
  Result<RedisAddress> a = parse_redis_url("redis://:s%40cret@cache.internal:6380/2");
  ASSERT_TRUE(a.is_ok()) << a.status().to_string();
  EXPECT_EQ(a->host, "cache.internal");
  EXPECT_EQ(a->port, 6380);
  EXPECT_EQ(a->db, 2);
  EXPECT_EQ(a->password, "s@cret");
  EXPECT_EQ(a->user, "");
  Result<RedisAddress> b = parse_redis_url("redis://app:pw@127.0.0.1");
  ASSERT_TRUE(b.is_ok());
  EXPECT_EQ(b->port, 6379);
  EXPECT_EQ(b->db, 0);
  EXPECT_EQ(b->user, "app");
  Result<RedisAddress> c = parse_redis_url("redis://[::1]:7000/");
  ASSERT_TRUE(c.is_ok());
  EXPECT_EQ(c->host, "::1");
  EXPECT_EQ(c->port, 7000);
}

TEST(RedisUrlTest, RefusesMalformedUrlsWithoutEchoingThePassword) {
  for (const char* bad : {"", "http://h:1", "rediss://h", "redis://", "redis://h:0", "redis://h:65536",
                          "redis://h:x", "redis://h/-1", "redis://h/db", "redis://:hunter2@", "redis://:@h",
                          "redis://:hunter2%zz@h", "redis://h o", "redis://[::1", "redis://:hunter2@h:99999"}) {
    Result<RedisAddress> r = parse_redis_url(bad);
    ASSERT_FALSE(r.is_ok()) << bad;
    EXPECT_EQ(r.status().code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_EQ(r.status().message().find("hunter2"), std::string::npos) << r.status().message();
  }
}

TEST(MakeLimiterTest, PicksLocalOrRedisAndChecksOptions) {
  Options o;
  EXPECT_TRUE(make_limiter(o).is_ok());
  o.url = "local";
  EXPECT_TRUE(make_limiter(o).is_ok());
  o.url = "redis://127.0.0.1:1";  // nothing listens: made anyway, connects on use
  Result<std::unique_ptr<Limiter>> r = make_limiter(o);
  ASSERT_TRUE(r.is_ok());
  Subject s;
  s.tenant = "acme";
  s.tenant_limits.requests_per_minute = 1;
  EXPECT_EQ((*r)->admit(s, 0).status().code(), StatusCode::kUnavailable);  // fail_closed by default
  o.pool_size = 0;
  EXPECT_FALSE(make_limiter(o).is_ok());
  o.pool_size = 4;
  o.lease_ttl = milliseconds(10);
  EXPECT_FALSE(make_limiter(o).is_ok());
}

}  // namespace
}  // namespace llmpool::ratelimit
