#include "ratelimit/local_limiter.h"

#include <algorithm>

namespace llmpool::ratelimit {
namespace {

constexpr uint64_t kSweepEvery = 4096;

}  // namespace

LocalLimiter::LocalLimiter(const Clock& clock) : clock_(clock) {}

std::string LocalLimiter::state_key(const Subject& s, Scope scope) {
  // The tenant has no '\n' (validate_subject), so the two forms cannot meet.
  return scope == Scope::kTenant ? "t\n" + s.tenant : "k\n" + s.tenant + "\n" + s.key;
}

Outcome LocalLimiter::evaluate(State& st, const Check& c, int64_t now) const {
  switch (c.kind) {
    case Kind::kRequests:
      return bucket_outcome(drained(st.requests.level, st.requests.last_ms, c.limit, now), c.limit, c.cost);
    case Kind::kTokens:
      return bucket_outcome(drained(st.tokens.level, st.tokens.last_ms, c.limit, now), c.limit, c.cost);
    case Kind::kConcurrent:
      return concurrency_outcome(st.running, c.limit);
    case Kind::kDaily: {
      const int64_t day = day_of(now);
      return budget_outcome(st.day.period == day ? st.day.used : 0, c.limit, c.cost, day_end_ms(day), now);
    }
    case Kind::kMonthly: {
      const int64_t month = month_of(now);
      return budget_outcome(st.month.period == month ? st.month.used : 0, c.limit, c.cost, month_end_ms(month),
                            now);
    }
  }
  return {};
}

void LocalLimiter::charge(State& st, const Check& c, int64_t now) {
  auto bucket = [&](Bucket& b) {
    b.level = drained(b.level, b.last_ms, c.limit, now) + static_cast<double>(c.cost);
    b.last_ms = std::max(b.last_ms, now);
    b.limit = c.limit;
  };
  auto budget = [&](Budget& b, int64_t period) {
    if (b.period != period) b = Budget{period, 0};
    b.used += c.cost;
  };
  switch (c.kind) {
    case Kind::kRequests: bucket(st.requests); break;
    case Kind::kTokens: bucket(st.tokens); break;
    case Kind::kConcurrent: ++st.running; break;
    case Kind::kDaily: budget(st.day, day_of(now)); break;
    case Kind::kMonthly: budget(st.month, month_of(now)); break;
  }
}

Result<Decision> LocalLimiter::admit(const Subject& subject, int64_t reserve_tokens) {
  RETURN_IF_ERROR(validate_subject(subject));
  const std::vector<Check> checks = checks_for(subject, reserve_tokens);
  const std::string tenant_key = state_key(subject, Scope::kTenant);
  const std::string key_key = subject.key.empty() ? std::string() : state_key(subject, Scope::kKey);

  std::lock_guard lock(mu_);
  const int64_t now = clock_.now_ms();
  if (++admits_since_sweep_ >= kSweepEvery) sweep_locked(now);
  std::vector<Outcome> outcomes;
  outcomes.reserve(checks.size());
  bool all_ok = true;
  for (const Check& c : checks) {
    State& st = states_[c.scope == Scope::kTenant ? tenant_key : key_key];
    outcomes.push_back(evaluate(st, c, now));
    all_ok = all_ok && outcomes.back().ok;
  }
  Decision d = decide(subject, checks, outcomes);
  if (!all_ok) return d;  // nothing charged

  std::vector<Held> held;
  for (const Check& c : checks) {
    const std::string& k = c.scope == Scope::kTenant ? tenant_key : key_key;
    charge(states_[k], c, now);
    if (c.kind == Kind::kRequests) continue;  // nothing to give back for a request
    const int64_t period = c.kind == Kind::kDaily ? day_of(now) : c.kind == Kind::kMonthly ? month_of(now) : 0;
    held.push_back(Held{k, c.kind, c.limit, c.cost, period});
  }
  d.ticket = "l" + std::to_string(next_ticket_++);
  tickets_.emplace(d.ticket, std::move(held));
  return d;
}

void LocalLimiter::finish(const std::string& ticket, int64_t used_tokens) {
  const int64_t used = clamp_reserve(used_tokens);
  std::lock_guard lock(mu_);
  auto it = tickets_.find(ticket);
  if (it == tickets_.end()) return;
  const int64_t now = clock_.now_ms();
  for (const Held& h : it->second) {
    auto st_it = states_.find(h.state_key);
    if (st_it == states_.end()) continue;
    State& st = st_it->second;
    const int64_t delta = used - h.cost;  // < 0: tokens given back
    switch (h.kind) {
      case Kind::kRequests: break;
      case Kind::kTokens: {
        Bucket& b = st.tokens;
        b.level = std::max(0.0, drained(b.level, b.last_ms, h.limit, now) + static_cast<double>(delta));
        b.last_ms = std::max(b.last_ms, now);
        break;
      }
      case Kind::kConcurrent: st.running = std::max<int64_t>(0, st.running - 1); break;
      case Kind::kDaily:
        if (st.day.period == h.period) st.day.used = std::max<int64_t>(0, st.day.used + delta);
        break;
      case Kind::kMonthly:
        if (st.month.period == h.period) st.month.used = std::max<int64_t>(0, st.month.used + delta);
        break;
    }
  }
  tickets_.erase(it);
}

void LocalLimiter::sweep_locked(int64_t now) {
  admits_since_sweep_ = 0;
  const int64_t day = day_of(now);
  const int64_t month = month_of(now);
  for (auto it = states_.begin(); it != states_.end();) {
    const State& st = it->second;
    // An empty bucket, no lease and no usage in the current periods: the
    // same as no state at all.
    const bool idle = st.running == 0 &&
                      drained(st.requests.level, st.requests.last_ms, st.requests.limit, now) <= 0 &&
                      drained(st.tokens.level, st.tokens.last_ms, st.tokens.limit, now) <= 0 &&
                      (st.day.used == 0 || st.day.period != day) &&
                      (st.month.used == 0 || st.month.period != month);
    if (idle) {
      it = states_.erase(it);
    } else {
      ++it;
    }
  }
}

size_t LocalLimiter::tracked_subjects() const {
  std::lock_guard lock(mu_);
  return states_.size();
}

size_t LocalLimiter::open_tickets() const {
  std::lock_guard lock(mu_);
  return tickets_.size();
}

}  // namespace llmpool::ratelimit
