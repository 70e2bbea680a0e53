#include "ratelimit/redis_limiter.h"

#include <hiredis/hiredis.h>
#include <sys/time.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <future>
#include <iterator>
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
// An allotment's bounds: requests it is sized for, lease slots it holds, and
// the share of any one limit it may take.
constexpr int64_t kMaxSliceRequests = 256;
constexpr int64_t kMaxSliceLeases = 64;
constexpr int64_t kSliceShare = 16;  // at most limit / 16 per slice

// The budget period a check of `kind` is charged to (0: not a budget).
int64_t period_of(Kind kind, int64_t day, int64_t month) {
  return kind == Kind::kDaily ? day : kind == Kind::kMonthly ? month : 0;
}

// The lease members of a grant of `n` leases under `ticket` (kAdmit's names).
std::vector<std::string> lease_members(const std::string& ticket, int64_t n) {
  if (n == 1) return {ticket};
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(n));
  for (int64_t i = 1; i <= n; ++i) out.push_back(fmt::format("{}.{}", ticket, i));
  return out;
}

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
  if (options.allotment < std::chrono::milliseconds(0) || options.allotment > std::chrono::seconds(10)) {
    return Status::invalid_argument("rate limiter: allotment must be 0 (off) to 10 s", "allotment");
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
  // Allotments give back what they hold: unused units, and the leases of
  // requests still running (this process is going away).
  std::vector<Finishing> returns;
  {
    std::lock_guard lock(mu_);
    Followups then;
    for (auto& [key, st] : subjects_) {
      if (st.open) close_slice(st, *st.open, false, then);
      hand_over(st, nullptr, then);
    }
    returns = std::move(then.returns);
    for (auto& [ticket, s] : slices_) {
      Finishing f;
      f.ticket = ticket;
      f.charged.tenant = s->subject.tenant;
      for (size_t c = 0; c < s->checks.size(); ++c) {
        const Check& ch = s->checks[c];
        if (ch.kind == Kind::kConcurrent) {
          if (!s->members[c].empty()) f.charged.held.push_back({s->keys[c], ch.kind, ch.limit, 0, 0, 0, s->members[c]});
        } else if (s->granted[c] != s->used[c]) {
          f.charged.held.push_back(settle(*s, c));
        }
      }
      if (!f.charged.held.empty()) returns.push_back(std::move(f));
    }
    slices_.clear();
    local_.clear();
  }
  for (size_t i = 0; i < returns.size(); i += kMaxBatch) {
    std::vector<Finishing> part(std::make_move_iterator(returns.begin() + static_cast<std::ptrdiff_t>(i)),
                                std::make_move_iterator(returns.begin() + static_cast<std::ptrdiff_t>(std::min(returns.size(), i + kMaxBatch))));
    run(finish_calls(part));
  }
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
  if (options_.allotment.count() == 0 || a.checks.empty()) {
    name_for_redis(a);
    return a;
  }
  // Slices are per subject and per limits: a reload that changes a limit
  // starts new ones. A request its slice admits needs no more (its ticket
  // is the slice's to give): the Redis names wait until it goes there.
  a.subject_key.reserve(subject.tenant.size() + subject.key.size() + 24 * a.checks.size());
  a.subject_key = subject.tenant;
  a.subject_key += '\n';
  a.subject_key += subject.key;
  char digits[24];
  for (const Check& c : a.checks) {
    a.subject_key += '\n';
    a.subject_key += c.scope == Scope::kTenant ? 't' : 'k';
    a.subject_key += static_cast<char>('0' + static_cast<int>(c.kind));
    a.subject_key += ':';
    a.subject_key.append(digits, std::to_chars(digits, digits + sizeof digits, c.limit).ptr);
  }
  return a;
}

void RedisLimiter::name_for_redis(Admission& a) {
  if (a.ticket.empty()) a.ticket = next_ticket();
  if (!a.keys.empty() || a.checks.empty()) return;
  a.keys.reserve(a.checks.size());
  for (const Check& c : a.checks) a.keys.push_back(redis_key(a.subject, c));
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
      for (size_t n = 0; n < a.checks.size(); ++n) {
        const Check& c = a.checks[n];
        call.args.push_back(std::to_string(static_cast<int>(c.kind)));
        call.args.push_back(std::to_string(std::min(c.limit, kMaxReserve * 1024)));
        call.args.push_back(std::to_string(c.cost));
        call.args.push_back(std::to_string(a.want.empty() ? c.cost : std::max(c.cost, a.want[n])));
      }
    }
  }
  return calls;
}

std::vector<Result<Decision>> RedisLimiter::admission_answers(std::vector<Admission>& batch,
                                                              const std::vector<std::vector<size_t>>& groups,
                                                              std::vector<Result<std::shared_ptr<Reply>>>& replies,
                                                              Followups& then) {
  std::vector<Result<Decision>> out(batch.size(), Status::unavailable("redis: no reply"));
  std::vector<std::pair<std::string, Ticket>> charged;  // recorded under one lock
  struct TakeAnswer {
    size_t i;
    bool admitted;
    std::vector<Outcome> outcomes;
    std::vector<int64_t> grants;
    int64_t day, month;
  };
  std::vector<TakeAnswer> takes;  // also under that lock
  for (size_t g = 0; g < groups.size(); ++g) {
    Result<std::shared_ptr<Reply>>& r = replies[g];
    const redisReply* rep = r.is_ok() ? (*r)->reply : nullptr;
    size_t want = 3;
    for (size_t i : groups[g]) want += 1 + 5 * batch[i].checks.size();
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
        if (!batch[i].want.empty()) takes.push_back({i, false, {}, {}, 0, 0});
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
      std::vector<int64_t> grants;
      outcomes.reserve(a.checks.size());
      grants.reserve(a.checks.size());
      for (size_t c = 0; c < a.checks.size(); ++c) {
        const size_t o = next + 1 + 5 * c;
        outcomes.push_back(Outcome{at(o) == 1, at(o + 1), at(o + 2), at(o + 3)});
        grants.push_back(std::max<int64_t>(a.checks[c].cost, at(o + 4)));
      }
      next += 1 + 5 * a.checks.size();
      Decision d = decide(a.subject, a.checks, outcomes);
      if (!d.admitted || !flagged) {
        d.admitted = false;
        out[i] = std::move(d);
        if (!a.want.empty()) takes.push_back({i, false, {}, {}, 0, 0});
        continue;
      }
      if (!a.want.empty()) {  // a take: the slice gives the decision (take_answered)
        takes.push_back({i, true, std::move(outcomes), std::move(grants), day, month});
        continue;
      }
      Ticket t{a.subject.tenant, {}};
      for (size_t c = 0; c < a.checks.size(); ++c) {
        const Check& check = a.checks[c];
        if (check.kind == Kind::kRequests) continue;
        t.held.push_back(Held{a.keys[c], check.kind, check.limit, check.cost, period_of(check.kind, day, month), 0, {}});
      }
      d.ticket = a.ticket;
      if (!t.held.empty()) charged.emplace_back(a.ticket, std::move(t));
      out[i] = std::move(d);
    }
  }
  if (!charged.empty() || !takes.empty()) {
    std::lock_guard lock(mu_);
    for (auto& [ticket, t] : charged) tickets_.emplace(std::move(ticket), std::move(t));
    for (TakeAnswer& t : takes) {
      if (!t.admitted) {
        take_failed(batch[t.i], then);
        continue;
      }
      out[t.i] = take_answered(batch[t.i], t.outcomes, t.grants, t.day, t.month, then);
    }
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
      call.args.push_back(std::to_string(f.charged.held.size()));
      for (const Held& h : f.charged.held) {
        call.keys.push_back(h.key);
        call.args.push_back(std::to_string(static_cast<int>(h.kind)));
        call.args.push_back(std::to_string(std::min(h.limit, kMaxReserve * 1024)));
        call.args.push_back(std::to_string(h.cost));
        call.args.push_back(std::to_string(h.period));
        call.args.push_back(std::to_string(h.used));
        call.args.push_back(std::to_string(h.members.size()));
        call.args.insert(call.args.end(), h.members.begin(), h.members.end());
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
  if (options_.allotment.count() > 0) {  // slices live on the worker's rounds
    std::promise<Result<Decision>> answer;
    std::future<Result<Decision>> answered = answer.get_future();
    admit_async(subject, reserve_tokens, [&answer](Result<Decision> r) { answer.set_value(std::move(r)); });
    return answered.get();
  }
  ASSIGN_OR_RETURN(Admission a, prepare(subject, reserve_tokens));
  if (a.checks.empty()) return unchecked(std::move(a));
  std::vector<Admission> one;
  one.push_back(std::move(a));
  std::vector<std::vector<size_t>> groups;
  auto replies = run(admission_calls(one, groups));
  Followups none;  // no takes without allotments
  return std::move(admission_answers(one, groups, replies, none).front());
}

void RedisLimiter::admit_async(const Subject& subject, int64_t reserve_tokens, AdmitDone done) {
  Result<Admission> a = prepare(subject, reserve_tokens);
  if (!a.is_ok()) return done(a.status());
  if (a->checks.empty()) return done(unchecked(std::move(a).value()));
  a->done = std::move(done);
  if (options_.allotment.count() > 0) {
    Followups then;
    std::optional<Decision> local;
    bool waits = false;
    {
      std::lock_guard lock(mu_);
      Subjects& st = subjects_[a->subject_key];
      const auto now = std::chrono::steady_clock::now();
      if (st.open) {
        local = admit_from(st.open, *a, now);
        if (!local) close_slice(st, *st.open, now < st.open->open_until, then);
      }
      if (!local) name_for_redis(*a);
      if (!local && st.taking && st.covers) {
        st.waiting.push_back(std::move(a).value());
        waits = true;
      } else if (!local && !st.taking) {
        st.covers = make_take(st, *a, 0);
      }  // else: behind a take too small to hold it, to Redis by itself
    }
    if (local) {
      AdmitDone answer = std::move(a->done);
      follow_up(std::move(then));
      return answer(std::move(*local));
    }
    if (!waits) then.queue.push_back(std::move(a).value());
    return follow_up(std::move(then));
  }
  {
    std::lock_guard lock(work_mu_);
    start_worker_locked();
    admissions_.push_back(std::move(a).value());
  }
  work_cv_.notify_one();
}

std::optional<Decision> RedisLimiter::admit_from(const std::shared_ptr<Slice>& slice, const Admission& a,
                                                 std::chrono::steady_clock::time_point now) {
  Slice& s = *slice;
  if (s.closed || now >= s.open_until) return std::nullopt;
  int64_t tokens = 0;
  for (size_t c = 0; c < a.checks.size(); ++c) {
    const Check& ch = a.checks[c];
    if (ch.kind == Kind::kConcurrent) {
      if (s.free[c].empty()) return std::nullopt;
    } else if (s.used[c] + ch.cost > s.granted[c]) {
      return std::nullopt;
    }
    if (ch.kind != Kind::kRequests && ch.kind != Kind::kConcurrent) tokens = ch.cost;
  }
  LocalTicket t;
  t.slice = slice;
  t.reserved = tokens;
  t.slots.resize(a.checks.size());
  std::vector<Outcome> outcomes(a.checks.size());
  for (size_t c = 0; c < a.checks.size(); ++c) {
    const Check& ch = a.checks[c];
    if (ch.kind == Kind::kConcurrent) {
      t.slots[c] = std::move(s.free[c].back());
      s.free[c].pop_back();
    }
    s.used[c] += ch.kind == Kind::kRequests || ch.kind == Kind::kConcurrent ? 1 : ch.cost;
    // As Redis would say had it charged only what this slice has used.
    outcomes[c] = Outcome{true, std::max<int64_t>(0, s.outcomes[c].remaining + s.granted[c] - s.used[c]),
                          s.outcomes[c].reset_ms, -1};
  }
  ++s.admitted;
  ++s.running;
  Decision d = decide(a.subject, a.checks, outcomes);
  d.ticket = next_ticket();
  local_.emplace(d.ticket, std::move(t));
  return d;
}

void RedisLimiter::close_slice(Subjects& st, Slice& s, bool used_up, Followups& then) {
  if (s.closed) return;
  s.closed = true;
  // Used up while open: the next one is twice the size; expired: as many as it admitted.
  st.next_size = std::clamp<int64_t>(used_up ? 2 * s.size : s.admitted, 1, kMaxSliceRequests);
  Finishing f;
  f.ticket = s.ticket;
  f.charged.tenant = s.subject.tenant;
  for (size_t c = 0; c < s.checks.size(); ++c) {
    const Check& ch = s.checks[c];
    if (ch.kind == Kind::kConcurrent) {
      if (s.free[c].empty()) continue;
      for (const std::string& m : s.free[c]) s.members[c].erase(std::find(s.members[c].begin(), s.members[c].end(), m));
      f.charged.held.push_back({s.keys[c], ch.kind, ch.limit, 0, 0, 0, std::move(s.free[c])});
      s.free[c].clear();
    } else if (s.granted[c] != s.used[c]) {
      f.charged.held.push_back(settle(s, c));  // unused units go back now; what runs on, when it ends
    }
  }
  if (!f.charged.held.empty()) then.returns.push_back(std::move(f));
  const std::string ticket = s.ticket;  // `s` may go with the erase
  if (st.open.get() == &s) st.open.reset();
  if (s.running == 0) slices_.erase(ticket);
}

RedisLimiter::Held RedisLimiter::settle(Slice& s, size_t c) {
  const Check& ch = s.checks[c];
  Held h{s.keys[c], ch.kind, ch.limit, s.granted[c], period_of(ch.kind, s.day, s.month), s.used[c], {}};
  s.granted[c] = s.used[c];
  return h;
}

bool RedisLimiter::make_take(Subjects& st, Admission& a, size_t waiting) const {
  st.taking = true;
  const int64_t k =
      std::clamp<int64_t>(std::max<int64_t>(st.next_size, 1 + static_cast<int64_t>(waiting)), 1, kMaxSliceRequests);
  st.next_size = k;
  a.want.resize(a.checks.size());
  bool covers = true;
  for (size_t c = 0; c < a.checks.size(); ++c) {
    const Check& ch = a.checks[c];
    const int64_t share = std::max<int64_t>(1, ch.limit / kSliceShare);
    const int64_t unit = ch.kind == Kind::kRequests || ch.kind == Kind::kConcurrent ? 1 : std::max<int64_t>(ch.cost, 1);
    const int64_t cap = ch.kind == Kind::kConcurrent ? std::min(share, kMaxSliceLeases) : share;
    a.want[c] = std::max(ch.cost, std::min(k * unit, cap));
    // Enough for this request and those that wait with it, all at once.
    covers = covers && a.want[c] >= (1 + static_cast<int64_t>(waiting)) * unit;
  }
  return covers;
}

Decision RedisLimiter::take_answered(Admission& a, const std::vector<Outcome>& outcomes,
                                     const std::vector<int64_t>& grants, int64_t day, int64_t month, Followups& then) {
  Subjects& st = subjects_[a.subject_key];
  st.taking = false;
  const auto now = std::chrono::steady_clock::now();
  auto s = std::make_shared<Slice>();
  s->ticket = a.ticket;
  s->subject_key = a.subject_key;
  s->subject = a.subject;
  s->checks = a.checks;
  s->keys = a.keys;
  s->granted = grants;
  s->used.assign(a.checks.size(), 0);
  s->outcomes = outcomes;
  s->members.resize(a.checks.size());
  s->free.resize(a.checks.size());
  bool short_grant = false;
  for (size_t c = 0; c < a.checks.size(); ++c) {
    if (a.checks[c].kind == Kind::kConcurrent) {
      s->members[c] = lease_members(a.ticket, grants[c]);
      s->free[c] = s->members[c];
    }
    short_grant = short_grant || grants[c] < a.want[c];
  }
  s->day = day;
  s->month = month;
  s->size = st.next_size;
  s->open_until = now + options_.allotment;
  slices_.emplace(s->ticket, s);
  st.open = s;
  then.opened = true;
  hand_over(st, s.get(), then);
  // The take's own request fits: every grant is at least its cost.
  std::optional<Decision> own = admit_from(s, a, now);
  // The requests that waited: from the slice while it holds them; then a
  // new take if this one got all it asked for, else one by one in Redis
  // (the limit binds: Redis refuses or admits each exactly).
  std::deque<Admission> waiting = std::move(st.waiting);
  st.waiting.clear();
  bool covered = true;  // the next take, if any, is sized for all that still wait
  for (size_t i = 0; i < waiting.size(); ++i) {
    Admission& w = waiting[i];
    if (!st.taking) {
      if (std::optional<Decision> d = admit_from(s, w, now)) {
        then.answered.emplace_back(std::move(w.done), std::move(*d));
        continue;
      }
      if (!short_grant) {
        if (st.open) close_slice(st, *s, true, then);
        covered = st.covers = make_take(st, w, waiting.size() - i - 1);  // sized for those behind it too
      }
      then.queue.push_back(std::move(w));
      continue;
    }
    // Behind a new take: wait for its slice, or (when it cannot hold them:
    // a limit's 1/16 is less) go to Redis one by one in the same round.
    if (covered) {
      st.waiting.push_back(std::move(w));
    } else {
      then.queue.push_back(std::move(w));
    }
  }
  if (own) return std::move(*own);
  Decision refused;  // not reached: a grant below its cost is not an admission
  refused.code = "rate_limit_exceeded";
  refused.message = "rate limits: an allotment smaller than its own request";
  return refused;
}

void RedisLimiter::hand_over(Subjects& st, Slice* s, Followups& then) {
  Leftover& left = st.left;
  if (left.checks.empty()) return;
  if (s && s->day == left.day && s->month == left.month && s->checks.size() == left.checks.size()) {
    for (size_t c = 0; c < s->checks.size(); ++c) {
      s->used[c] += left.delta[c];
      for (std::string& m : left.members[c]) {
        s->members[c].push_back(m);
        s->free[c].push_back(std::move(m));
        ++s->granted[c];
      }
    }
  } else {  // no slice to take them (or one of another period): back to Redis
    Finishing f;
    f.ticket = "leftover";  // its leases are named
    f.charged.tenant = left.tenant;
    for (size_t c = 0; c < left.checks.size(); ++c) {
      const Check& ch = left.checks[c];
      if (ch.kind == Kind::kConcurrent && !left.members[c].empty()) {
        f.charged.held.push_back({left.keys[c], ch.kind, ch.limit, 0, 0, 0, std::move(left.members[c])});
      } else if (ch.kind != Kind::kConcurrent && ch.kind != Kind::kRequests && left.delta[c] != 0) {
        f.charged.held.push_back({left.keys[c], ch.kind, ch.limit, 0, period_of(ch.kind, left.day, left.month),
                                  left.delta[c], {}});
      }
    }
    if (!f.charged.held.empty()) then.returns.push_back(std::move(f));
  }
  left = Leftover{};
}

void RedisLimiter::take_failed(Admission& a, Followups& then) {
  Subjects& st = subjects_[a.subject_key];
  st.taking = false;
  hand_over(st, nullptr, then);
  // Refused or not answered: those that waited go to Redis one by one.
  for (Admission& w : st.waiting) then.queue.push_back(std::move(w));
  st.waiting.clear();
}

std::chrono::steady_clock::time_point RedisLimiter::sweep(Followups& then) {
  const auto now = std::chrono::steady_clock::now();
  auto next = std::chrono::steady_clock::time_point::max();
  for (auto it = subjects_.begin(); it != subjects_.end();) {
    Subjects& st = it->second;
    if (st.open && now >= st.open->open_until) close_slice(st, *st.open, false, then);
    if (st.open) next = std::min(next, st.open->open_until);
    if (!st.open && !st.taking && st.waiting.empty() && st.next_size <= 1) {
      it = subjects_.erase(it);
    } else {
      ++it;
    }
  }
  return next;
}

void RedisLimiter::follow_up(Followups then) {
  for (auto& [done, d] : then.answered) {
    try {
      done(std::move(d));
    } catch (...) {
      // The waiter's own failure: the others still get theirs.
    }
  }
  if (then.queue.empty() && then.returns.empty()) return;
  {
    std::lock_guard lock(work_mu_);
    start_worker_locked();
    for (Admission& a : then.queue) admissions_.push_back(std::move(a));
    for (Finishing& f : then.returns) finishes_.push_back(std::move(f));
  }
  work_cv_.notify_one();
}

void RedisLimiter::finish(const std::string& ticket, int64_t used_tokens) {
  const int64_t used = clamp_reserve(used_tokens);
  Finishing f;
  {
    std::lock_guard lock(mu_);
    if (auto lt = local_.find(ticket); lt != local_.end()) {
      // Admitted from a slice: reconciled in it while it is open; once it
      // is closed, the lease goes back now and the tokens with the last one.
      LocalTicket t = std::move(lt->second);
      local_.erase(lt);
      Slice& s = *t.slice;
      --s.running;
      f.ticket = s.ticket;
      f.charged.tenant = s.subject.tenant;
      // A closed slice hands the lease and the tokens' difference to the
      // subject's open one (same keys and periods), which gives them back
      // when it closes: no Redis call per request.
      // While its next take is out, they wait for the slice it brings.
      Slice* heir = nullptr;
      Leftover* left = nullptr;
      if (s.closed) {
        auto st = subjects_.find(s.subject_key);
        if (st != subjects_.end() && st->second.open && st->second.open->day == s.day &&
            st->second.open->month == s.month) {
          heir = st->second.open.get();
        } else if (st != subjects_.end() && st->second.taking &&
                   (st->second.left.checks.empty() ||
                    (st->second.left.day == s.day && st->second.left.month == s.month))) {
          left = &st->second.left;
          if (left->checks.empty()) {
            left->tenant = s.subject.tenant;
            left->checks = s.checks;
            left->keys = s.keys;
            left->members.assign(s.checks.size(), {});
            left->delta.assign(s.checks.size(), 0);
            left->day = s.day;
            left->month = s.month;
          }
        }
      }
      for (size_t c = 0; c < s.checks.size(); ++c) {
        const Check& ch = s.checks[c];
        if (ch.kind == Kind::kRequests) continue;
        if (ch.kind != Kind::kConcurrent) {
          (heir ? heir->used[c] : left ? left->delta[c] : s.used[c]) += used - t.reserved;
          continue;
        }
        --s.used[c];
        if (!s.closed) {
          s.free[c].push_back(std::move(t.slots[c]));
          continue;
        }
        s.members[c].erase(std::find(s.members[c].begin(), s.members[c].end(), t.slots[c]));
        if (heir) {
          heir->members[c].push_back(t.slots[c]);
          heir->free[c].push_back(std::move(t.slots[c]));
          ++heir->granted[c];
          continue;
        }
        if (left) {
          left->members[c].push_back(std::move(t.slots[c]));
          continue;
        }
        f.charged.held.push_back({s.keys[c], ch.kind, ch.limit, 0, 0, 0, {std::move(t.slots[c])}});
      }
      if (s.closed && s.running == 0) {
        for (size_t c = 0; c < s.checks.size(); ++c) {
          if (s.checks[c].kind != Kind::kConcurrent && s.granted[c] != s.used[c]) f.charged.held.push_back(settle(s, c));
        }
        slices_.erase(s.ticket);
      }
      if (f.charged.held.empty()) return;
    } else {
      auto it = tickets_.find(ticket);
      if (it == tickets_.end()) return;
      f.charged = std::move(it->second);
      tickets_.erase(it);
      f.ticket = ticket;
      for (Held& h : f.charged.held) h.used = used;
    }
  }
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

std::vector<RedisLimiter::ScriptCall> RedisLimiter::round_calls(std::vector<ScriptCall> finishing,
                                                                std::vector<ScriptCall> admitting,
                                                                size_t& first_admission) {
  // A tenant with both finishes and admissions gets one call (kRoundScript):
  // its finishes' keys and arguments, then its admissions'.
  std::vector<ScriptCall> calls;
  for (ScriptCall& f : finishing) {
    auto same = std::find_if(admitting.begin(), admitting.end(),
                             [&](const ScriptCall& a) { return a.tenant == f.tenant; });
    if (same == admitting.end()) {
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
  first_admission = calls.size();
  for (ScriptCall& c : admitting) calls.push_back(std::move(c));
  return calls;
}

void RedisLimiter::start_worker_locked() {
  if (!worker_.joinable() && !stopping_work_) worker_ = std::thread([this] { work_loop(); });
}

void RedisLimiter::work_loop() {
  std::unique_lock lock(work_mu_);
  const auto ready = [&] { return stopping_work_ || !admissions_.empty() || !finishes_.empty(); };
  for (;;) {
    if (sweep_at_ == std::chrono::steady_clock::time_point::max()) {
      work_cv_.wait(lock, ready);
    } else {
      work_cv_.wait_until(lock, sweep_at_, ready);
    }
    if (std::chrono::steady_clock::now() >= sweep_at_) {
      // Allotments whose time is up give back what they did not use.
      sweep_at_ = std::chrono::steady_clock::time_point::max();
      lock.unlock();
      Followups then;
      std::chrono::steady_clock::time_point next;
      {
        std::lock_guard slices(mu_);
        next = sweep(then);
      }
      follow_up(std::move(then));
      lock.lock();
      sweep_at_ = std::min(sweep_at_, next);
    }
    if (admissions_.empty() && finishes_.empty()) {
      if (stopping_work_) return;  // everything queued is done
      continue;
    }
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
    size_t first_admission = 0;
    std::vector<ScriptCall> calls =
        round_calls(finish_calls(finishing), admission_calls(admitting, groups), first_admission);
    std::vector<Result<std::shared_ptr<Reply>>> replies = run(calls);
    std::vector<Result<std::shared_ptr<Reply>>> admission_replies(
        std::make_move_iterator(replies.begin() + static_cast<std::ptrdiff_t>(first_admission)),
        std::make_move_iterator(replies.end()));
    Followups then;
    std::vector<Result<Decision>> answers = admission_answers(admitting, groups, admission_replies, then);
    for (size_t i = 0; i < admitting.size(); ++i) {
      try {
        admitting[i].done(std::move(answers[i]));
      } catch (...) {
        // The waiter's own failure (the API answers its request itself): the others still get theirs.
      }
    }
    const bool opened = then.opened;
    follow_up(std::move(then));
    lock.lock();
    if (opened) sweep_at_ = std::min(sweep_at_, std::chrono::steady_clock::now() + options_.allotment);
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
    for (const auto& [ticket, s] : slices_) {
      for (size_t c = 0; c < s->checks.size(); ++c) {
        for (const std::string& m : s->members[c]) {
          keys.push_back(s->keys[c]);
          args.push_back(m);
        }
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
  return tickets_.size() + local_.size();
}

}  // namespace llmpool::ratelimit
