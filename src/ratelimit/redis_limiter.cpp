#include "ratelimit/redis_limiter.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <random>

#include <fmt/format.h>

#include "obs/metrics.h"
#include "ratelimit/redis_scripts.h"

namespace llmpool::ratelimit {
namespace {

constexpr int kAdmitScript = 0;
constexpr int kFinishScript = 1;
constexpr int kRenewScript = 2;
constexpr int kClaimOnceScript = 3;
// A tenant's finishes and admissions of one round in one call: the finishes
// first, then the admissions, each hash read and written once for both.
constexpr int kRoundScript = 4;
const std::array<std::string, 5> kScripts = {
    std::string(scripts::kHashes) + scripts::kAdmit,
    std::string(scripts::kHashes) + scripts::kFinish + scripts::kFinishEnd,
    scripts::kRenew,
    scripts::kClaimOnce,
    std::string(scripts::kHashes) + scripts::kFinish + scripts::kAdmit};
constexpr std::chrono::milliseconds kDownBackoff{500};

timeval to_timeval(std::chrono::milliseconds ms) {
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(ms.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((ms.count() % 1000) * 1000);
  return tv;
}

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Result<std::string> percent_decode(std::string_view s, const char* what) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] != '%') {
      out += s[i];
      continue;
    }
    const int hi = i + 2 < s.size() ? hex_value(s[i + 1]) : -1;
    const int lo = i + 2 < s.size() ? hex_value(s[i + 2]) : -1;
    if (hi < 0 || lo < 0) {
      return Status::invalid_argument(fmt::format("redis url: a bad %-escape in the {}", what), "url");
    }
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  return out;
}

bool parse_int(std::string_view s, int lo, int hi, int& out) {
  if (s.empty() || s.size() > 9) return false;
  int v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc() || p != s.data() + s.size() || v < lo || v > hi) return false;
  out = v;
  return true;
}

// 96 bits from the OS per limiter: tickets of different instances (and of
// forked processes, which would copy a seeded generator) never meet.
std::string instance_id() {
  std::random_device rd;
  return fmt::format("r{:08x}{:08x}{:08x}.", rd(), rd(), rd());
}

}  // namespace

Result<RedisAddress> parse_redis_url(std::string_view url) {
  constexpr std::string_view kScheme = "redis://";
  if (url.substr(0, kScheme.size()) != kScheme) {
    return Status::invalid_argument("redis url: must start with redis:// (TLS, rediss://, is not supported)", "url");
  }
  std::string_view rest = url.substr(kScheme.size());
  RedisAddress a;
  if (size_t at = rest.rfind('@'); at != std::string_view::npos) {
    std::string_view userinfo = rest.substr(0, at);
    rest = rest.substr(at + 1);
    size_t colon = userinfo.find(':');
    std::string_view user = colon == std::string_view::npos ? std::string_view() : userinfo.substr(0, colon);
    std::string_view pass = colon == std::string_view::npos ? userinfo : userinfo.substr(colon + 1);
    ASSIGN_OR_RETURN(a.user, percent_decode(user, "user name"));
    ASSIGN_OR_RETURN(a.password, percent_decode(pass, "password"));
    if (a.password.empty()) return Status::invalid_argument("redis url: an empty password", "url");
  }
  std::string_view hostport = rest;
  if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
    hostport = rest.substr(0, slash);
    std::string_view db = rest.substr(slash + 1);
    if (!db.empty() && !parse_int(db, 0, 1000000, a.db)) {
      return Status::invalid_argument("redis url: the database after '/' must be a number from 0", "url");
    }
  }
  std::string_view host = hostport;
  if (!hostport.empty() && hostport.front() == '[') {  // [ipv6]:port
    size_t close = hostport.find(']');
    if (close == std::string_view::npos) return Status::invalid_argument("redis url: an unclosed '[' in the host", "url");
    host = hostport.substr(1, close - 1);
    std::string_view after = hostport.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':' || !parse_int(after.substr(1), 1, 65535, a.port)) {
        return Status::invalid_argument("redis url: the port must be a number from 1 to 65535", "url");
      }
    }
  } else if (size_t colon = hostport.rfind(':'); colon != std::string_view::npos) {
    host = hostport.substr(0, colon);
    if (!parse_int(hostport.substr(colon + 1), 1, 65535, a.port)) {
      return Status::invalid_argument("redis url: the port must be a number from 1 to 65535", "url");
    }
  }
  if (host.empty() || host.size() > 253 ||
      !std::all_of(host.begin(), host.end(), [](char c) {
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
               c == '-' || c == ':' || c == '_';
      })) {
    return Status::invalid_argument("redis url: a missing or malformed host", "url");
  }
  a.host = std::string(host);
  return a;
}

struct RedisLimiter::Reply {
  explicit Reply(redisReply* r) : reply(r) {}
  ~Reply() {
    if (reply) freeReplyObject(reply);
  }
  Reply(const Reply&) = delete;
  Reply& operator=(const Reply&) = delete;
  redisReply* reply;
};

// Up to `size` connections, each lent to one thread at a time.
class RedisLimiter::Pool {
 public:
  Pool(RedisAddress address, const Options& o) : address_(std::move(address)), options_(o) {}
  ~Pool() {
    for (redisContext* c : idle_) redisFree(c);
  }

  // A connection (made if needed), or the error; give it back with put().
  Result<redisContext*> take() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return !idle_.empty() || open_ < options_.pool_size; });
    if (!idle_.empty()) {
      redisContext* c = idle_.back();
      idle_.pop_back();
      return c;
    }
    if (std::chrono::steady_clock::now() < down_until_) {
      return Status::unavailable("redis is unreachable (retrying shortly)");
    }
    ++open_;
    lock.unlock();
    Result<redisContext*> c = connect();
    if (!c.is_ok()) {
      lock.lock();
      --open_;
      down_until_ = std::chrono::steady_clock::now() + kDownBackoff;
      cv_.notify_one();
    }
    return c;
  }
  // healthy: back to the pool; otherwise closed (the next take() reconnects).
  void put(redisContext* c, bool healthy) {
    std::lock_guard lock(mu_);
    if (healthy && c->err == 0) {
      idle_.push_back(c);
    } else {
      redisFree(c);
      --open_;
    }
    cv_.notify_one();
  }

  // The digest SCRIPT LOAD gave for script `which`; "" until loaded.
  std::string sha(int which) {
    std::lock_guard lock(mu_);
    return shas_[static_cast<size_t>(which)];
  }
  void set_sha(int which, std::string s) {
    std::lock_guard lock(mu_);
    shas_[static_cast<size_t>(which)] = std::move(s);
  }

 private:
  Result<redisContext*> connect() {
    redisContext* c = redisConnectWithTimeout(address_.host.c_str(), address_.port, to_timeval(options_.connect_timeout));
    if (c == nullptr) return Status::unavailable("redis: out of memory making a connection");
    if (c->err) {
      std::string why = c->errstr;
      redisFree(c);
      return Status::unavailable(fmt::format("redis: cannot connect to {}:{}: {}", address_.host, address_.port, why));
    }
    if (redisSetTimeout(c, to_timeval(options_.command_timeout)) != REDIS_OK) {
      redisFree(c);
      return Status::unavailable("redis: cannot set the command timeout");
    }
    auto command = [&](std::vector<std::string> argv) -> Status {
      std::vector<const char*> ptrs;
      std::vector<size_t> lens;
      for (const std::string& a : argv) ptrs.push_back(a.data()), lens.push_back(a.size());
      Reply r(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(argv.size()), ptrs.data(), lens.data())));
      if (r.reply == nullptr) return Status::unavailable(fmt::format("redis: {}", c->errstr));
      if (r.reply->type == REDIS_REPLY_ERROR) {
        // The server's words, not ours: they never contain the password.
        return Status::unavailable(fmt::format("redis: {} refused: {}", argv[0],
                                               std::string_view(r.reply->str, std::min<size_t>(r.reply->len, 200))));
      }
      return Status::ok();
    };
    Status st = Status::ok();
    if (!address_.password.empty()) {
      st = address_.user.empty() ? command({"AUTH", address_.password})
                                 : command({"AUTH", address_.user, address_.password});
    }
    if (st.is_ok() && address_.db != 0) st = command({"SELECT", std::to_string(address_.db)});
    if (!st.is_ok()) {
      redisFree(c);
      return st;
    }
    return c;
  }

  const RedisAddress address_;
  const Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<redisContext*> idle_;  // guarded by mu_
  int open_ = 0;                     // guarded by mu_: lent + idle
  std::chrono::steady_clock::time_point down_until_{};  // guarded by mu_
  std::array<std::string, kScripts.size()> shas_;       // guarded by mu_; one per script
};

Result<std::unique_ptr<RedisLimiter>> RedisLimiter::create(const Options& options) {
  ASSIGN_OR_RETURN(RedisAddress address, parse_redis_url(options.url));
  if (options.pool_size < 1 || options.pool_size > 64) {
    return Status::invalid_argument("rate limiter: pool_size must be 1 to 64", "pool_size");
  }
  if (options.lease_ttl < std::chrono::milliseconds(300) || options.lease_ttl > std::chrono::hours(24)) {
    return Status::invalid_argument("rate limiter: lease_ttl must be 300 ms to 24 h", "lease_ttl");
  }
  for (auto t : {options.connect_timeout, options.command_timeout}) {
    if (t < std::chrono::milliseconds(1) || t > std::chrono::minutes(1)) {
      return Status::invalid_argument("rate limiter: redis timeouts must be 1 ms to 60 s", "timeout");
    }
  }
  if (options.key_prefix.size() > 128) {
    return Status::invalid_argument("rate limiter: key_prefix is longer than 128 bytes", "key_prefix");
  }
  return std::unique_ptr<RedisLimiter>(new RedisLimiter(options, std::move(address)));
}

RedisLimiter::RedisLimiter(const Options& options, RedisAddress address)
    : options_(options), pool_(std::make_unique<Pool>(std::move(address), options)), instance_(instance_id()) {
  if (options_.metrics) {
    errors_ = &options_.metrics->counter(
        "llmpool_ratelimit_backend_errors_total",
        "Rate limiter backend (Redis) failures, by what the limiter did: admitted anyway (open) or refused (closed)",
        {{"mode", options_.fail_open ? "open" : "closed"}});
  }
  renewer_ = std::thread([this] { renew_loop(); });
}

RedisLimiter::~RedisLimiter() {
  {  // answers and writes what is queued, then ends
    std::lock_guard lock(work_mu_);
    stopping_work_ = true;
  }
  work_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  stop_cv_.notify_all();
  renewer_.join();
}

std::string RedisLimiter::redis_key(const Subject& s, const Check& c) const {
  // The tenant holds no '{', '}' or ':' (validate_subject), so the hash tag
  // and the fields cannot be confused; the key id comes last, as bytes.
  // A concurrency check has a ZSET of its own ("c"); a subject's buckets and
  // budgets share one hash ("h"), read and written once per script.
  std::string k = fmt::format("{}{{{}}}:{}:", options_.key_prefix, s.tenant, c.kind == Kind::kConcurrent ? 'c' : 'h');
  if (c.scope == Scope::kTenant) {
    k += 't';
  } else {
    k += "k:";
    k += s.key;
  }
  return k;
}

std::string RedisLimiter::next_ticket() {
  return instance_ + std::to_string(ticket_seq_.fetch_add(1, std::memory_order_relaxed));
}

void RedisLimiter::backend_error() {
  if (errors_) errors_->inc();
}

Result<std::shared_ptr<RedisLimiter::Reply>> RedisLimiter::eval(int which, const std::vector<std::string>& keys,
                                                                 const std::vector<std::string>& args) {
  return std::move(eval_many({ScriptArgs{which, keys, args}}).front());
}

// The calls are pipelined: written together, then their replies read in
// order (one round trip, and Redis reads them in one go).
std::vector<Result<std::shared_ptr<RedisLimiter::Reply>>> RedisLimiter::eval_many(const std::vector<ScriptArgs>& calls) {
  std::vector<Result<std::shared_ptr<Reply>>> out(calls.size(), Status::unavailable("redis: no reply"));
  if (calls.empty()) return out;
  Result<redisContext*> taken = pool_->take();
  if (!taken.is_ok()) {
    for (auto& r : out) r = taken.status();
    return out;
  }
  redisContext* c = *taken;
  bool healthy = true;
  std::vector<size_t> todo(calls.size());
  for (size_t i = 0; i < todo.size(); ++i) todo[i] = i;
  for (int attempt = 0; attempt < 2 && !todo.empty(); ++attempt) {
    // The digest of each script the calls run, loaded where not yet (once:
    // a script whose load failed fails its other calls without another try).
    std::array<std::string, kScripts.size()> shas;
    std::array<Status, kScripts.size()> load_failed;
    std::vector<size_t> ready;
    for (size_t i : todo) {
      const auto which = static_cast<size_t>(calls[i].which);
      if (!load_failed[which].is_ok()) {
        out[i] = load_failed[which];
        continue;
      }
      if (shas[which].empty()) shas[which] = pool_->sha(calls[i].which);
      if (shas[which].empty()) {
        const char* load_argv[] = {"SCRIPT", "LOAD", kScripts[which].c_str()};
        Reply r(static_cast<redisReply*>(redisCommandArgv(c, 3, load_argv, nullptr)));
        Status failed;
        if (r.reply == nullptr) {
          healthy = false;
          failed = Status::unavailable(fmt::format("redis: {}", c->errstr));
        } else if (r.reply->type != REDIS_REPLY_STRING) {
          failed = Status::unavailable("redis: SCRIPT LOAD did not answer a digest");
        }
        if (!failed.is_ok()) {
          out[i] = load_failed[which] = failed;
          if (!healthy) break;
          continue;
        }
        shas[which].assign(r.reply->str, r.reply->len);
        pool_->set_sha(calls[i].which, shas[which]);
      }
      ready.push_back(i);
    }
    if (!healthy) {
      for (size_t i : todo) out[i] = Status::unavailable(fmt::format("redis: {}", c->errstr));
      break;
    }
    std::vector<const char*> ptrs;
    std::vector<size_t> lens;
    for (size_t i : ready) {
      const ScriptArgs& call = calls[i];
      const std::string& sha = shas[static_cast<size_t>(call.which)];
      const std::string nkeys = std::to_string(call.keys.size());
      ptrs.assign({"EVALSHA", sha.data(), nkeys.data()});
      lens.assign({7, sha.size(), nkeys.size()});
      for (const std::string& k : call.keys) ptrs.push_back(k.data()), lens.push_back(k.size());
      for (const std::string& a : call.args) ptrs.push_back(a.data()), lens.push_back(a.size());
      redisAppendCommandArgv(c, static_cast<int>(ptrs.size()), ptrs.data(), lens.data());
    }
    std::vector<size_t> again;  // NOSCRIPT: the server was flushed or is a new one
    for (size_t n = 0; n < ready.size(); ++n) {
      const size_t i = ready[n];
      void* raw = nullptr;
      if (redisGetReply(c, &raw) != REDIS_OK || raw == nullptr) {
        healthy = false;
        const Status broken = Status::unavailable(fmt::format("redis: {}", c->errstr));
        for (size_t m = n; m < ready.size(); ++m) out[ready[m]] = broken;
        again.clear();
        break;
      }
      auto reply = std::make_shared<Reply>(static_cast<redisReply*>(raw));
      if (reply->reply->type == REDIS_REPLY_ERROR) {
        std::string_view err(reply->reply->str, reply->reply->len);
        if (err.substr(0, 8) == "NOSCRIPT" && attempt == 0) {
          again.push_back(i);
          pool_->set_sha(calls[i].which, "");
          continue;
        }
        out[i] = Status::unavailable(fmt::format("redis: script failed: {}", err.substr(0, 300)));
        continue;
      }
      out[i] = std::move(reply);
    }
    if (!healthy) break;
    todo = std::move(again);
  }
  pool_->put(c, healthy);
  return out;
}

Result<bool> RedisLimiter::claim_once(std::string_view token, int64_t ttl_seconds) {
  if (token.empty() || token.size() > 512) return Status::invalid_argument("a one-time token is 1..512 bytes");
  Result<std::shared_ptr<Reply>> r = eval(kClaimOnceScript, {options_.key_prefix + "once:" + std::string(token)},
                                          {std::to_string(std::max<int64_t>(1, ttl_seconds))});
  if (!r) {
    backend_error();
    return r.status();
  }
  const redisReply* reply = (*r)->reply;
  if (reply->type != REDIS_REPLY_INTEGER) {
    backend_error();
    return Status::unavailable("redis: the one-time check did not answer an integer");
  }
  return reply->integer == 1;
}

Result<RedisLimiter::Admission> RedisLimiter::prepare(const Subject& subject, int64_t reserve_tokens) {
  RETURN_IF_ERROR(validate_subject(subject));
  Admission a;
  a.checks = checks_for(subject, reserve_tokens);
  a.subject = subject;
  a.ticket = next_ticket();
  a.keys.reserve(a.checks.size());
  for (const Check& c : a.checks) a.keys.push_back(redis_key(subject, c));
  return a;
}

namespace {

// The indices of `items` grouped by tenant, in order of first appearance
// and in order within a group: one script call per tenant keeps every call's
// keys in one hash slot.
template <class T, class Tenant>
std::vector<std::vector<size_t>> by_tenant(const std::vector<T>& items, Tenant tenant_of) {
  std::vector<std::vector<size_t>> groups;
  std::unordered_map<std::string_view, size_t> where;
  for (size_t i = 0; i < items.size(); ++i) {
    auto [it, added] = where.emplace(tenant_of(items[i]), groups.size());
    if (added) groups.emplace_back();
    groups[it->second].push_back(i);
  }
  return groups;
}

}  // namespace

std::vector<RedisLimiter::ScriptCall> RedisLimiter::admission_calls(const std::vector<Admission>& batch,
                                                                    std::vector<std::vector<size_t>>& groups) const {
  groups = by_tenant(batch, [](const Admission& a) -> std::string_view { return a.subject.tenant; });
  std::vector<ScriptCall> calls(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    ScriptCall& call = calls[g];
    call.which = kAdmitScript;
    call.tenant = batch[groups[g].front()].subject.tenant;
    call.args = {std::to_string(options_.lease_ttl.count()), std::to_string(groups[g].size())};
    for (size_t i : groups[g]) {
      const Admission& a = batch[i];
      call.keys.insert(call.keys.end(), a.keys.begin(), a.keys.end());
      call.args.push_back(a.ticket);
      call.args.push_back(std::to_string(a.checks.size()));
      for (const Check& c : a.checks) {
        call.args.push_back(std::to_string(static_cast<int>(c.kind)));
        call.args.push_back(std::to_string(std::min(c.limit, kMaxReserve * 1024)));
        call.args.push_back(std::to_string(c.cost));
      }
    }
  }
  return calls;
}

std::vector<Result<Decision>> RedisLimiter::admission_answers(std::vector<Admission>& batch,
                                                              const std::vector<std::vector<size_t>>& groups,
                                                              std::vector<Result<std::shared_ptr<Reply>>>& replies) {
  std::vector<Result<Decision>> out(batch.size(), Status::unavailable("redis: no reply"));
  std::vector<std::pair<std::string, Ticket>> charged;  // recorded under one lock
  for (size_t g = 0; g < groups.size(); ++g) {
    Result<std::shared_ptr<Reply>>& r = replies[g];
    const redisReply* rep = r.is_ok() ? (*r)->reply : nullptr;
    size_t want = 3;
    for (size_t i : groups[g]) want += 1 + 4 * batch[i].checks.size();
    if (r.is_ok() && (rep->type != REDIS_REPLY_ARRAY || rep->elements != want ||
                      !std::all_of(rep->element, rep->element + rep->elements,
                                   [](const redisReply* e) { return e->type == REDIS_REPLY_INTEGER; }))) {
      r = Status::unavailable("redis: the admission script answered an unexpected shape");
    }
    if (!r.is_ok()) {
      for (size_t i : groups[g]) {
        backend_error();
        if (!options_.fail_open) {
          out[i] = Status::unavailable("rate limits cannot be checked right now (the limiter's backend is down)");
        } else {
          Decision d;
          d.admitted = true;  // failing open: nothing charged, nothing to finish
          out[i] = std::move(d);
        }
      }
      continue;
    }
    auto at = [&](size_t i) { return rep->element[i]->integer; };
    const int64_t day = at(1);
    const int64_t month = at(2);
    size_t next = 3;
    for (size_t i : groups[g]) {
      Admission& a = batch[i];
      const bool flagged = at(next) == 1;
      std::vector<Outcome> outcomes;
      outcomes.reserve(a.checks.size());
      for (size_t c = 0; c < a.checks.size(); ++c) {
        const size_t o = next + 1 + 4 * c;
        outcomes.push_back(Outcome{at(o) == 1, at(o + 1), at(o + 2), at(o + 3)});
      }
      next += 1 + 4 * a.checks.size();
      Decision d = decide(a.subject, a.checks, outcomes);
      if (!d.admitted || !flagged) {
        d.admitted = false;
        out[i] = std::move(d);
        continue;
      }
      Ticket t{a.subject.tenant, {}};
      for (size_t c = 0; c < a.checks.size(); ++c) {
        const Check& check = a.checks[c];
        if (check.kind == Kind::kRequests) continue;
        t.held.push_back(Held{a.keys[c], check.kind, check.limit, check.cost,
                              check.kind == Kind::kDaily ? day : check.kind == Kind::kMonthly ? month : 0});
      }
      d.ticket = a.ticket;
      if (!t.held.empty()) charged.emplace_back(a.ticket, std::move(t));
      out[i] = std::move(d);
    }
  }
  if (!charged.empty()) {
    std::lock_guard lock(mu_);
    for (auto& [ticket, t] : charged) tickets_.emplace(std::move(ticket), std::move(t));
  }
  return out;
}

std::vector<RedisLimiter::ScriptCall> RedisLimiter::finish_calls(const std::vector<Finishing>& batch) const {
  const auto groups = by_tenant(batch, [](const Finishing& f) -> std::string_view { return f.charged.tenant; });
  std::vector<ScriptCall> calls(groups.size());
  for (size_t g = 0; g < groups.size(); ++g) {
    ScriptCall& call = calls[g];
    call.which = kFinishScript;
    call.tenant = batch[groups[g].front()].charged.tenant;
    call.finishes = groups[g].size();
    call.args = {std::to_string(groups[g].size())};
    for (size_t i : groups[g]) {
      const Finishing& f = batch[i];
      call.args.push_back(f.ticket);
      call.args.push_back(std::to_string(f.used));
      call.args.push_back(std::to_string(f.charged.held.size()));
      for (const Held& h : f.charged.held) {
        call.keys.push_back(h.key);
        call.args.push_back(std::to_string(static_cast<int>(h.kind)));
        call.args.push_back(std::to_string(std::min(h.limit, kMaxReserve * 1024)));
        call.args.push_back(std::to_string(h.cost));
        call.args.push_back(std::to_string(h.period));
      }
    }
  }
  return calls;
}

std::vector<Result<std::shared_ptr<RedisLimiter::Reply>>> RedisLimiter::run(const std::vector<ScriptCall>& calls) {
  std::vector<ScriptArgs> borrowed;
  borrowed.reserve(calls.size());
  for (const ScriptCall& c : calls) borrowed.push_back({c.which, c.keys, c.args});
  std::vector<Result<std::shared_ptr<Reply>>> replies = eval_many(borrowed);
  for (size_t i = 0; i < calls.size(); ++i) {
    if (calls[i].finishes == 0 || replies[i].is_ok()) continue;
    for (size_t n = 0; n < calls[i].finishes; ++n) backend_error();  // each finish counts, as each admission does
  }
  return replies;
}

Decision RedisLimiter::unchecked(Admission a) {
  Decision d;
  d.admitted = true;
  d.ticket = std::move(a.ticket);  // nothing to reconcile: finish() ignores it
  return d;
}

Result<Decision> RedisLimiter::admit(const Subject& subject, int64_t reserve_tokens) {
  ASSIGN_OR_RETURN(Admission a, prepare(subject, reserve_tokens));
  if (a.checks.empty()) return unchecked(std::move(a));
  std::vector<Admission> one;
  one.push_back(std::move(a));
  std::vector<std::vector<size_t>> groups;
  auto replies = run(admission_calls(one, groups));
  return std::move(admission_answers(one, groups, replies).front());
}

void RedisLimiter::admit_async(const Subject& subject, int64_t reserve_tokens, AdmitDone done) {
  Result<Admission> a = prepare(subject, reserve_tokens);
  if (!a.is_ok()) return done(a.status());
  if (a->checks.empty()) return done(unchecked(std::move(a).value()));
  a->done = std::move(done);
  {
    std::lock_guard lock(work_mu_);
    start_worker_locked();
    admissions_.push_back(std::move(a).value());
  }
  work_cv_.notify_one();
}

void RedisLimiter::finish(const std::string& ticket, int64_t used_tokens) {
  Finishing f;
  {
    std::lock_guard lock(mu_);
    auto it = tickets_.find(ticket);
    if (it == tickets_.end()) return;
    f.charged = std::move(it->second);
    tickets_.erase(it);
  }
  f.ticket = ticket;
  f.used = clamp_reserve(used_tokens);
  if (!options_.async_finish) {
    run(finish_calls({f}));
    return;
  }
  {
    std::lock_guard lock(work_mu_);
    start_worker_locked();
    finishes_.push_back(std::move(f));
  }
  work_cv_.notify_one();
}

void RedisLimiter::start_worker_locked() {
  if (!worker_.joinable() && !stopping_work_) worker_ = std::thread([this] { work_loop(); });
}

void RedisLimiter::work_loop() {
  std::unique_lock lock(work_mu_);
  for (;;) {
    work_cv_.wait(lock, [&] { return stopping_work_ || !admissions_.empty() || !finishes_.empty(); });
    if (admissions_.empty() && finishes_.empty()) return;  // stopping, and everything queued is done
    // What queued up while the last round was out goes in one round trip:
    // the finishes first, so that what they give back is there for the admissions.
    std::vector<Finishing> finishing;
    while (!finishes_.empty() && finishing.size() < kMaxBatch) {
      finishing.push_back(std::move(finishes_.front()));
      finishes_.pop_front();
    }
    std::vector<Admission> admitting;
    while (!admissions_.empty() && admitting.size() < kMaxBatch) {
      admitting.push_back(std::move(admissions_.front()));
      admissions_.pop_front();
    }
    working_ = true;
    lock.unlock();
    std::vector<std::vector<size_t>> groups;
    std::vector<ScriptCall> admitting_calls = admission_calls(admitting, groups);
    // A tenant with both finishes and admissions gets one call (kRoundScript):
    // its finishes' keys and arguments, then its admissions'.
    std::vector<ScriptCall> calls;
    for (ScriptCall& f : finish_calls(finishing)) {
      auto same = std::find_if(admitting_calls.begin(), admitting_calls.end(),
                               [&](const ScriptCall& a) { return a.tenant == f.tenant; });
      if (same == admitting_calls.end()) {
        calls.push_back(std::move(f));
        continue;
      }
      same->which = kRoundScript;
      same->finishes = f.finishes;
      f.keys.insert(f.keys.end(), std::make_move_iterator(same->keys.begin()), std::make_move_iterator(same->keys.end()));
      f.args.insert(f.args.end(), std::make_move_iterator(same->args.begin()), std::make_move_iterator(same->args.end()));
      same->keys = std::move(f.keys);
      same->args = std::move(f.args);
    }
    const size_t first_admission = calls.size();
    for (ScriptCall& c : admitting_calls) calls.push_back(std::move(c));
    std::vector<Result<std::shared_ptr<Reply>>> replies = run(calls);
    std::vector<Result<std::shared_ptr<Reply>>> admission_replies(
        std::make_move_iterator(replies.begin() + static_cast<std::ptrdiff_t>(first_admission)),
        std::make_move_iterator(replies.end()));
    std::vector<Result<Decision>> answers = admission_answers(admitting, groups, admission_replies);
    for (size_t i = 0; i < admitting.size(); ++i) {
      try {
        admitting[i].done(std::move(answers[i]));
      } catch (...) {
        // The waiter's own failure (the API answers its request itself): the others still get theirs.
      }
    }
    lock.lock();
    working_ = false;
    if (finishes_.empty()) drained_cv_.notify_all();
  }
}

void RedisLimiter::wait_for_finishes() {
  std::unique_lock lock(work_mu_);
  drained_cv_.wait(lock, [&] { return finishes_.empty() && !working_; });
}

Status RedisLimiter::renew_leases() {
  std::vector<std::string> keys;
  std::vector<std::string> args = {std::to_string(options_.lease_ttl.count())};
  {
    std::lock_guard lock(mu_);
    for (const auto& [ticket, t] : tickets_) {
      for (const Held& h : t.held) {
        if (h.kind != Kind::kConcurrent) continue;
        keys.push_back(h.key);
        args.push_back(ticket);
      }
    }
  }
  if (keys.empty()) return Status::ok();
  Result<std::shared_ptr<Reply>> r = eval(kRenewScript, keys, args);
  if (!r.is_ok()) {
    backend_error();
    return r.status();
  }
  return Status::ok();
}

void RedisLimiter::renew_loop() {
  const auto every = options_.lease_ttl / 3;
  std::unique_lock lock(mu_);
  while (!stop_cv_.wait_for(lock, every, [&] { return stopping_; })) {
    lock.unlock();
    (void)renew_leases();  // failures are counted; the next round tries again
    lock.lock();
  }
}

size_t RedisLimiter::open_tickets() const {
  std::lock_guard lock(mu_);
  return tickets_.size();
}

}  // namespace llmpool::ratelimit
