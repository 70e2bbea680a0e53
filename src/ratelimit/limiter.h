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
// A limit of 0 means no limit. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "common/status.h"

namespace llmpool::ratelimit {

struct Limits {
  int64_t requests_per_minute = 0;
  int64_t tokens_per_minute = 0;
  int64_t max_concurrent = 0;
  int64_t daily_tokens = 0;    // budget per UTC day
  int64_t monthly_tokens = 0;  // budget per UTC calendar month
};

struct Subject {
  std::string tenant;   // required
  std::string key;      // the credential's id (API key prefix, HMAC key id, JWT subject); "" for none
  Limits tenant_limits;
  Limits key_limits;    // each already the lower of the key's and the tenant's
};

// OpenAI's rate-limit headers (x-ratelimit-*); a value < 0 is not sent.
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
  int32_t retry_after_seconds = 0;
  RateHeaders headers;
  std::string ticket;   // admitted: pass to finish()
};

class Limiter {
 public:
  virtual ~Limiter() = default;
  // Unavailable only when the backend is down and the limiter fails closed;
  // failing open admits (and counts the event in a metric).
  virtual Result<Decision> admit(const Subject& subject, int64_t reserve_tokens) = 0;
  virtual void finish(const std::string& ticket, int64_t used_tokens) = 0;
};

}  // namespace llmpool::ratelimit
