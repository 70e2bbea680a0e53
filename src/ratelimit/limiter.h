// Limiter: per-tenant and per-key request, token and concurrency limits,
// checked and charged in one atomic step at admission (issue 10 item 5).
//
// Contract shared by the limiter implementations (LocalLimiter in-process,
// RedisLimiter over one Lua script per check) and the API that calls them:
//
//   1. admit(subject, reserve_tokens) before a generation starts. It checks
//      and charges, atomically, every configured limit of the tenant and of
//      the key: requests per minute, tokens per minute (reserve_tokens =
//      prompt tokens + max_tokens, or the model's cap), daily and monthly
//      token budgets, and a concurrency lease. Either everything is charged
//      or nothing is: a refused request costs nothing.
//   2. finish(ticket, used_tokens) exactly once when it ends (success,
//      error or cancel): the token reservation is reconciled with the real
//      usage and the lease is released. A lease also expires on its own
//      (Options::lease_ttl) if the instance that holds it dies; the limiter
//      renews the leases of its running requests before they expire.
//
// A limit of 0 (or below) means no limit. Per-minute limits are buckets of
// `limit` that refill continuously at `limit` per minute (GCRA, the same
// semantics as OpenAI's: x-ratelimit-reset-* is the time until the bucket is
// full again). Budgets are per UTC calendar day and month. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "common/status.h"

namespace llmpool::obs {
class MetricsRegistry;
}

namespace llmpool::ratelimit {

struct Limits {
  int64_t requests_per_minute = 0;
  int64_t tokens_per_minute = 0;
  int64_t max_concurrent = 0;
  int64_t daily_tokens = 0;    // budget per UTC day
  int64_t monthly_tokens = 0;  // budget per UTC calendar month
};

struct Subject {
  std::string tenant;   // required: 1..64 bytes of [A-Za-z0-9_.-]
  std::string key;      // the credential's id (API key prefix, HMAC key id, JWT subject); "" for none; at most 256 bytes
  Limits tenant_limits;
  Limits key_limits;    // each already the lower of the key's and the tenant's
};

// OpenAI's rate-limit headers (x-ratelimit-*); a value < 0 is not sent.
// Of the tenant's and the key's per-minute limits, each pair describes the
// one with the fewest remaining.
struct RateHeaders {
  int64_t limit_requests = -1;
  int64_t remaining_requests = -1;
  double reset_requests_seconds = -1;
  int64_t limit_tokens = -1;
  int64_t remaining_tokens = -1;
  double reset_tokens_seconds = -1;
};

struct Decision {
  bool admitted = false;
  // When refused: "rate_limit_exceeded" (per-minute or concurrency) or
  // "insufficient_quota" (daily/monthly budget), a message naming the limit
  // and whether the tenant's or the key's, and when to retry.
  std::string code;
  std::string message;
  // Refused: seconds until the request would fit (at least 1); 0 when
  // waiting cannot help (the request alone is above a limit).
  int32_t retry_after_seconds = 0;
  RateHeaders headers;
  std::string ticket;   // admitted: pass to finish() ("" when admitted by failing open)
};

class Limiter {
 public:
  virtual ~Limiter() = default;
  // Unavailable only when the backend is down and the limiter fails closed;
  // failing open admits (and counts the event in a metric). InvalidArgument
  // for a subject whose tenant or key breaks the bounds above.
  virtual Result<Decision> admit(const Subject& subject, int64_t reserve_tokens) = 0;
  using AdmitDone = std::function<void(Result<Decision>)>;
  // What admit() answers, given to `done` exactly once: before this returns
  // (the default: done(admit(...))), or later from a thread of the
  // limiter's own (RedisLimiter: the admissions queued meanwhile go to Redis
  // in one round trip, and no caller's thread waits for it).
  virtual void admit_async(const Subject& subject, int64_t reserve_tokens, AdmitDone done) {
    done(admit(subject, reserve_tokens));
  }
  // Unknown and empty tickets are ignored; used_tokens < 0 counts as 0.
  virtual void finish(const std::string& ticket, int64_t used_tokens) = 0;
  // Records a one-time token (an HMAC signature) for `ttl_seconds`: true
  // the first time, false when any instance sharing this limiter's backend
  // recorded it before. A limiter of this process alone has nothing to
  // share (the caller's own cache decides) and answers true; the Redis one
  // answers Unavailable when Redis is down, whatever fail_open says: a
  // replay check that fails open would let replays through.
  virtual Result<bool> claim_once(std::string_view token, int64_t ttl_seconds) {
    (void)token;
    (void)ttl_seconds;
    return true;
  }
};

// How make_limiter builds a limiter.
struct Options {
  // "" or "local": LocalLimiter (this process only). Otherwise
  // redis://[[user]:password@]host[:port][/db] (port 6379 and db 0 by
  // default; user and password percent-decoded): RedisLimiter.
  std::string url;
  // Redis down (connect, timeout, protocol or script error): admit anyway
  // (true) or answer Unavailable (false). Either way the event is counted in
  // llmpool_ratelimit_backend_errors_total{mode="open"|"closed"}.
  bool fail_open = false;
  // A concurrency lease lives this long unless renewed; running requests
  // are renewed every lease_ttl / 3.
  std::chrono::milliseconds lease_ttl{30000};
  std::chrono::milliseconds connect_timeout{500};
  std::chrono::milliseconds command_timeout{500};
  int pool_size = 4;                       // Redis connections, 1..64
  // Redis: finish() queues the reconciliation for a thread of the limiter's
  // own instead of writing it before it returns (serve turns this on: the
  // caller is often a model's only HTTP-client thread). A lease or a
  // reservation is then given back a round trip later; one queued when the
  // process dies is not given back (leases expire, reservations stay
  // charged: the safe side).
  bool async_finish = false;
  // Redis: 0 checks every request in Redis. Above 0, an instance takes
  // allotments (slices of each limit, one Redis call for many requests) and
  // admits from them in process for up to this long (redis_limiter.h). At
  // most 10 s.
  std::chrono::milliseconds allotment{0};
  std::string key_prefix = "llmpool:rl:";  // every Redis key starts with it
  obs::MetricsRegistry* metrics = nullptr; // optional; outlives the limiter
};

// The limiter `options` describe. InvalidArgument for a malformed url or
// option (the message never contains the password). A Redis limiter is
// returned even when Redis is not reachable yet: it connects on first use.
Result<std::unique_ptr<Limiter>> make_limiter(const Options& options);

}  // namespace llmpool::ratelimit
