// The limit checks one admission runs, and the Decision made from their
// outcomes. Shared by LocalLimiter (which computes the outcomes in C++) and
// RedisLimiter (whose Lua script computes the same outcomes in Redis), so
// that both give the same codes, messages, Retry-After and headers.
//
// Internal to the ratelimit module; plain functions and values, thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/status.h"
#include "ratelimit/limiter.h"

namespace llmpool::ratelimit {

enum class Scope { kTenant, kKey };
// The numeric values are the Lua script's kind codes: keep them.
enum class Kind { kRequests = 1, kTokens = 2, kConcurrent = 3, kDaily = 4, kMonthly = 5 };

inline constexpr int64_t kMinuteMs = 60000;
inline constexpr int64_t kDayMs = 86400000;
// Reservations are clamped to this, so that every sum stays exact in a
// double (Lua's numbers).
inline constexpr int64_t kMaxReserve = int64_t{1} << 45;

struct Check {
  Scope scope;
  Kind kind;
  int64_t limit;  // > 0
  int64_t cost;   // 1 for requests and concurrency, the reservation for tokens and budgets
};

struct Outcome {
  bool ok = false;
  int64_t remaining = 0;  // after this request when ok; now when refused
  int64_t reset_ms = 0;   // until the bucket is full again (budgets: until the period ends)
  int64_t retry_ms = -1;  // refused: until the request would fit; -1 never (cost above the limit)
};

// InvalidArgument unless the tenant and key keep Subject's bounds.
Status validate_subject(const Subject& subject);
// The checks for every configured limit: the tenant's, then the key's (when
// the subject has a key), each in Kind order.
std::vector<Check> checks_for(const Subject& subject, int64_t reserve_tokens);
// reserve_tokens clamped to [0, kMaxReserve].
int64_t clamp_reserve(int64_t reserve_tokens);
// The decision from outcomes[i] of checks[i] (same length).
Decision decide(const Subject& subject, const std::vector<Check>& checks, const std::vector<Outcome>& outcomes);

// UTC calendar: the day number (days since 1970-01-01) and the month number
// (year * 12 + month - 1) of a Unix time in ms, and when they end.
int64_t day_of(int64_t unix_ms);
int64_t month_of(int64_t unix_ms);
int64_t day_end_ms(int64_t day);
int64_t month_end_ms(int64_t month);

// The arithmetic of one check, the same as the Lua script's. A per-minute
// bucket (GCRA as a leaky bucket) holds `level` of `limit` and drains at
// `limit` per minute: its level at `now_ms` is drained(...); the request
// fits when level + cost <= limit. A budget has `used` of `limit` in the
// period that ends at `period_end_ms`. Concurrency: `held` leases of `limit`.
double drained(double level, int64_t last_ms, int64_t limit, int64_t now_ms);
Outcome bucket_outcome(double level_now, int64_t limit, int64_t cost);
Outcome budget_outcome(int64_t used, int64_t limit, int64_t cost, int64_t period_end_ms, int64_t now_ms);
Outcome concurrency_outcome(int64_t held, int64_t limit);

}  // namespace llmpool::ratelimit
