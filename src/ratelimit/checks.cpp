#include "ratelimit/checks.h"

#include <algorithm>
#include <cmath>

#include <fmt/format.h>

namespace llmpool::ratelimit {
namespace {

bool tenant_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
         c == '.';
}

int64_t ceil_div_ms(double ms) { return static_cast<int64_t>(std::ceil(std::max(0.0, ms))); }

const char* limit_name(Kind kind) {
  switch (kind) {
    case Kind::kRequests: return "requests per minute";
    case Kind::kTokens: return "tokens per minute";
    case Kind::kConcurrent: return "concurrent requests";
    case Kind::kDaily: return "daily token budget";
    case Kind::kMonthly: return "monthly token budget";
  }
  return "limit";
}

bool is_budget(Kind kind) { return kind == Kind::kDaily || kind == Kind::kMonthly; }

std::string whose(const Subject& subject, Scope scope) {
  // The tenant passed validate_subject, so it is safe to quote; a key id may
  // be anything a client sent (a JWT subject), so it is not repeated.
  return scope == Scope::kTenant ? fmt::format("tenant '{}'", subject.tenant)
                                 : fmt::format("the credential's limit of tenant '{}'", subject.tenant);
}

std::string refusal_message(const Subject& subject, const Check& c, const Outcome& o) {
  const std::string who = whose(subject, c.scope);
  const char* name = limit_name(c.kind);
  if (o.retry_ms < 0) {
    return fmt::format("Request too large for the {} of {}: it needs {} tokens and the limit is {}.", name, who,
                       c.cost, c.limit);
  }
  const int64_t wait_s = std::max<int64_t>(1, (o.retry_ms + 999) / 1000);
  if (c.kind == Kind::kConcurrent) {
    return fmt::format("Rate limit reached for {} of {}: limit {}, all in use. Try again when one finishes.", name,
                       who, c.limit);
  }
  if (is_budget(c.kind)) {
    return fmt::format("You exceeded the {} of {}: limit {}, remaining {}, this request reserves {}. It resets "
                       "at the start of the next UTC {}, in {} s.",
                       name, who, c.limit, o.remaining, c.cost, c.kind == Kind::kDaily ? "day" : "month", wait_s);
  }
  if (c.kind == Kind::kTokens) {
    return fmt::format("Rate limit reached for {} of {}: limit {}, remaining {}, this request reserves {}. Try "
                       "again in {} s.",
                       name, who, c.limit, o.remaining, c.cost, wait_s);
  }
  return fmt::format("Rate limit reached for {} of {}: limit {}, remaining {}. Try again in {} s.", name, who,
                     c.limit, o.remaining, wait_s);
}

// days_from_civil / civil_from_days (H. Hinnant's algorithms), proleptic Gregorian.
int64_t days_from_civil(int64_t y, int64_t m, int64_t d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const int64_t yoe = y - era * 400;
  const int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + doe - 719468;
}

int64_t floor_div(int64_t a, int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

}  // namespace

Status validate_subject(const Subject& subject) {
  if (subject.tenant.empty() || subject.tenant.size() > 64 ||
      !std::all_of(subject.tenant.begin(), subject.tenant.end(), tenant_char)) {
    return Status::invalid_argument("rate limit subject: the tenant must be 1 to 64 characters of [A-Za-z0-9_.-]",
                                    "tenant");
  }
  if (subject.key.size() > 256) {
    return Status::invalid_argument("rate limit subject: the key id is longer than 256 bytes", "key");
  }
  return Status::ok();
}

int64_t clamp_reserve(int64_t reserve_tokens) { return std::clamp<int64_t>(reserve_tokens, 0, kMaxReserve); }

std::vector<Check> checks_for(const Subject& subject, int64_t reserve_tokens) {
  const int64_t tokens = clamp_reserve(reserve_tokens);
  std::vector<Check> out;
  auto add = [&](Scope scope, const Limits& l) {
    if (l.requests_per_minute > 0) out.push_back({scope, Kind::kRequests, l.requests_per_minute, 1});
    if (l.tokens_per_minute > 0) out.push_back({scope, Kind::kTokens, l.tokens_per_minute, tokens});
    if (l.max_concurrent > 0) out.push_back({scope, Kind::kConcurrent, l.max_concurrent, 1});
    if (l.daily_tokens > 0) out.push_back({scope, Kind::kDaily, l.daily_tokens, tokens});
    if (l.monthly_tokens > 0) out.push_back({scope, Kind::kMonthly, l.monthly_tokens, tokens});
  };
  add(Scope::kTenant, subject.tenant_limits);
  if (!subject.key.empty()) add(Scope::kKey, subject.key_limits);
  return out;
}

Decision decide(const Subject& subject, const std::vector<Check>& checks, const std::vector<Outcome>& outcomes) {
  Decision d;
  // Headers: of the per-minute limits, the one with the fewest remaining.
  const Outcome* req = nullptr;
  const Outcome* tok = nullptr;
  const Check* req_check = nullptr;
  const Check* tok_check = nullptr;
  int first_failed = -1;
  int first_budget_failed = -1;
  bool never = false;
  int64_t retry_ms = 0;
  for (size_t i = 0; i < checks.size() && i < outcomes.size(); ++i) {
    const Check& c = checks[i];
    const Outcome& o = outcomes[i];
    if (c.kind == Kind::kRequests && (!req || o.remaining < req->remaining)) req = &o, req_check = &c;
    if (c.kind == Kind::kTokens && (!tok || o.remaining < tok->remaining)) tok = &o, tok_check = &c;
    if (o.ok) continue;
    if (first_failed < 0) first_failed = static_cast<int>(i);
    if (is_budget(c.kind) && first_budget_failed < 0) first_budget_failed = static_cast<int>(i);
    if (o.retry_ms < 0) never = true;
    retry_ms = std::max(retry_ms, o.retry_ms);
  }
  if (req) {
    d.headers.limit_requests = req_check->limit;
    d.headers.remaining_requests = std::max<int64_t>(0, req->remaining);
    d.headers.reset_requests_seconds = static_cast<double>(req->reset_ms) / 1000.0;
  }
  if (tok) {
    d.headers.limit_tokens = tok_check->limit;
    d.headers.remaining_tokens = std::max<int64_t>(0, tok->remaining);
    d.headers.reset_tokens_seconds = static_cast<double>(tok->reset_ms) / 1000.0;
  }
  if (first_failed < 0) {
    d.admitted = true;
    return d;
  }
  const int shown = first_budget_failed >= 0 ? first_budget_failed : first_failed;
  d.code = first_budget_failed >= 0 ? "insufficient_quota" : "rate_limit_exceeded";
  d.message = refusal_message(subject, checks[shown], outcomes[shown]);
  d.retry_after_seconds =
      never ? 0 : static_cast<int32_t>(std::clamp<int64_t>((retry_ms + 999) / 1000, 1, 40LL * 86400));
  return d;
}

int64_t day_of(int64_t unix_ms) { return floor_div(unix_ms, kDayMs); }

int64_t month_of(int64_t unix_ms) {
  // civil_from_days
  const int64_t z = day_of(unix_ms) + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t doe = z - era * 146097;
  const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  int64_t y = yoe + era * 400;
  const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const int64_t mp = (5 * doy + 2) / 153;
  const int64_t m = mp < 10 ? mp + 3 : mp - 9;
  if (m <= 2) ++y;
  return y * 12 + (m - 1);
}

int64_t day_end_ms(int64_t day) { return (day + 1) * kDayMs; }

int64_t month_end_ms(int64_t month) {
  const int64_t next = month + 1;
  return days_from_civil(floor_div(next, 12), next - floor_div(next, 12) * 12 + 1, 1) * kDayMs;
}

double drained(double level, int64_t last_ms, int64_t limit, int64_t now_ms) {
  if (now_ms <= last_ms) return level;  // a clock that went back drains nothing
  const double out = static_cast<double>(now_ms - last_ms) * static_cast<double>(limit) / kMinuteMs;
  return std::max(0.0, level - out);
}

Outcome bucket_outcome(double level_now, int64_t limit, int64_t cost) {
  const double lim = static_cast<double>(limit);
  const double per_ms = lim / kMinuteMs;
  Outcome o;
  o.ok = level_now + static_cast<double>(cost) <= lim;
  const double level = o.ok ? level_now + static_cast<double>(cost) : level_now;
  o.remaining = static_cast<int64_t>(std::floor(std::max(0.0, lim - level)));
  o.reset_ms = ceil_div_ms(level / per_ms);
  if (!o.ok) o.retry_ms = cost > limit ? -1 : ceil_div_ms((level_now + static_cast<double>(cost) - lim) / per_ms);
  return o;
}

Outcome budget_outcome(int64_t used, int64_t limit, int64_t cost, int64_t period_end_ms, int64_t now_ms) {
  Outcome o;
  o.ok = used + cost <= limit;
  o.remaining = std::max<int64_t>(0, limit - used - (o.ok ? cost : 0));
  o.reset_ms = std::max<int64_t>(0, period_end_ms - now_ms);
  if (!o.ok) o.retry_ms = cost > limit ? -1 : o.reset_ms;
  return o;
}

Outcome concurrency_outcome(int64_t held, int64_t limit) {
  Outcome o;
  o.ok = held < limit;
  o.remaining = std::max<int64_t>(0, limit - held - (o.ok ? 1 : 0));
  if (!o.ok) o.retry_ms = 1000;  // unknown: when a running request finishes
  return o;
}

}  // namespace llmpool::ratelimit
