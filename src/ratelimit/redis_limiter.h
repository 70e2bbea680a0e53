// RedisLimiter: the Limiter shared by every llmpool instance that points at
// one Redis (issue 10 item 5), over hiredis's synchronous API.
//
// - admit() runs ONE Lua script (EVALSHA; loaded with SCRIPT LOAD, and again
//   after a NOSCRIPT answer) that reads Redis's TIME, checks every limit of
//   the tenant and of the key, and charges all of them only if all pass.
//   Scripts run one at a time in Redis, so instances cannot race each other:
//   together they never admit more than a limit.
// - Per-minute limits are GCRA buckets (a level and a time), budgets a UTC
//   period and its usage, all of one subject (the tenant, or a key) in one
//   hash that each script reads once and writes once; concurrency is a ZSET
//   of ticket -> lease expiry whose expired members each admission purges.
//   (One hash per subject: with every limit set, an admission runs 14 Redis
//   commands instead of 30, and costs Redis about half the time.)
// - finish() runs a second script: unused tokens go back to the buckets and
//   budgets (of the period charged), the lease is removed.
// - A background thread renews the leases of running requests every
//   lease_ttl / 3 (ZADD XX: a lease that finish removed is not brought back;
//   nor is one that expired because this instance stalled for longer than
//   lease_ttl, so the request runs on without it). An instance that dies
//   stops renewing, and its leases expire.
// - admit() and finish() each wait for one Redis round trip (bounded by
//   command_timeout): call them off the HTTP I/O threads, or accept that
//   cost there; finish() can run after the response has been sent.
// - Redis keys: <prefix>{<tenant>}:h:t (the hash) and <prefix>{<tenant>}:c:t
//   (the leases) for the tenant, ...:h:k:<key id> and ...:c:k:<key id> for a
//   key; all keys of a tenant share a hash slot. Every key expires once it no
//   longer matters.
// - Connections: up to Options::pool_size, each used by one thread at a
//   time; connect and command timeouts from Options. A connection that fails
//   is dropped and made again on next use; after a failed connect, calls
//   fail at once for 500 ms instead of each waiting for the timeout.
// - Any backend failure (connect, timeout, protocol, script error) in
//   admit() fails open or closed by Options::fail_open and is counted in
//   llmpool_ratelimit_backend_errors_total{mode}. A failed finish() leaves
//   the reservation charged (never more than was admitted) and the lease to
//   expire; it is counted too.
//
// Ownership: the limiter owns its connections and its renewal thread (the
// destructor joins it). Thread-safe.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "ratelimit/checks.h"
#include "ratelimit/limiter.h"

struct redisContext;

namespace llmpool::obs {
class Counter;
}

namespace llmpool::ratelimit {

struct RedisAddress {
  std::string host;
  int port = 6379;
  int db = 0;
  std::string user;      // "" for the default user
  std::string password;  // "" for none
};

// redis://[[user]:password@]host[:port][/db]; InvalidArgument (with a
// message that never contains the password) otherwise.
Result<RedisAddress> parse_redis_url(std::string_view url);

class RedisLimiter final : public Limiter {
 public:
  // InvalidArgument for a bad url or option. Does not connect yet.
  static Result<std::unique_ptr<RedisLimiter>> create(const Options& options);
  ~RedisLimiter() override;

  Result<Decision> admit(const Subject& subject, int64_t reserve_tokens) override;
  void finish(const std::string& ticket, int64_t used_tokens) override;
  // With Options::async_finish the reconciliation is queued and written by
  // a thread of the limiter's own (the caller, often a model's only HTTP
  // client thread, does not wait for Redis); otherwise it is written now.
  // SET NX EX under key_prefix + "once:" + token: shared by every instance.
  Result<bool> claim_once(std::string_view token, int64_t ttl_seconds) override;

  // Renews the leases of running requests now (the background thread does
  // this every lease_ttl / 3). Returns the backend's error, if any.
  Status renew_leases();
  // Admitted requests not finished yet.
  size_t open_tickets() const;
  // Until every queued finish (async_finish) is written (tests, shutdown).
  void wait_for_finishes();

 private:
  struct Held {
    std::string key;
    Kind kind;
    int64_t limit;
    int64_t cost;
    int64_t period;
  };
  struct Reply;  // an owned redisReply
  class Pool;

  RedisLimiter(const Options& options, RedisAddress address);
  std::string redis_key(const Subject& s, const Check& c) const;
  struct ScriptCall {
    std::vector<std::string> keys, args;
  };
  // One call's keys and args, borrowed (eval_many copies no strings).
  struct ScriptArgs {
    const std::vector<std::string>& keys;
    const std::vector<std::string>& args;
  };
  // Runs script `which` with keys and args; the reply, or the backend error.
  Result<std::shared_ptr<Reply>> eval(int which, const std::vector<std::string>& keys,
                                      const std::vector<std::string>& args);
  // Runs it once per call, pipelined on one connection; the replies in order.
  std::vector<Result<std::shared_ptr<Reply>>> eval_many(int which, const std::vector<ScriptArgs>& calls);
  std::string next_ticket();
  void backend_error();
  void renew_loop();

  Options options_;
  std::unique_ptr<Pool> pool_;
  obs::Counter* errors_ = nullptr;
  const std::string instance_;  // random; the prefix of this limiter's tickets
  std::atomic<uint64_t> ticket_seq_{1};

  mutable std::mutex mu_;
  std::unordered_map<std::string, std::vector<Held>> tickets_;  // guarded by mu_
  bool stopping_ = false;                                       // guarded by mu_
  std::condition_variable stop_cv_;
  std::thread renewer_;

  static constexpr size_t kMaxFinishBatch = 64;  // finishes written in one round trip
  void finish_loop();
  std::mutex finish_mu_;
  std::condition_variable finish_cv_;    // a finish was queued, or stop
  std::condition_variable drained_cv_;   // the queue emptied
  std::deque<ScriptCall> finishes_;      // guarded by finish_mu_
  bool writing_ = false;                 // guarded by finish_mu_: a batch is being written
  bool finishing_stop_ = false;          // guarded by finish_mu_
  std::thread finisher_;                 // async_finish only; joined first in the destructor
};

}  // namespace llmpool::ratelimit
