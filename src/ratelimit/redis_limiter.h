// RedisLimiter: the Limiter shared by every llmpool instance that points at
// one Redis (issue 10 item 5), over hiredis's synchronous API.
//
// - admit() runs ONE Lua script (EVALSHA; loaded with SCRIPT LOAD, and again
//   after a NOSCRIPT answer) that reads Redis's TIME, checks every limit of
//   the tenant and of the key, and charges all of them only if all pass.
//   Scripts run one at a time in Redis, so instances cannot race each other:
//   together they never admit more than a limit. One call can hold a batch
//   of requests of one tenant, decided in order, each as if alone:
//   admit_async() queues, and the limiter's worker thread sends what queued
//   while its last round trip was out (up to 64 admissions, and up to 64
//   queued finishes ahead of them) as one call per tenant, pipelined in one
//   round trip: a tenant with both runs one round script, its finishes
//   first and then its admissions, so that each hash is read and written
//   once for both and Redis pays one script call's overhead, not two.
// - Per-minute limits are GCRA buckets (a level and a time), budgets a UTC
//   period and its usage, all of one subject (the tenant, or a key) in one
//   hash that each script reads once and writes once; concurrency is a ZSET
//   of ticket -> lease expiry whose expired members each admission purges.
//   (One hash per subject: with every limit set, an admission runs 14 Redis
//   commands instead of 30; in Redis's own time per call, 58-60 us instead
//   of 67 us on the 2-core development machine, docs/ratelimits.md.)
// - finish() runs a second script: unused tokens go back to the buckets and
//   budgets (of the period charged), the lease is removed.
// - A background thread renews the leases of running requests every
//   lease_ttl / 3 (ZADD XX: a lease that finish removed is not brought back;
//   nor is one that expired because this instance stalled for longer than
//   lease_ttl, so the request runs on without it). An instance that dies
//   stops renewing, and its leases expire.
// - admit() and a synchronous finish() each wait for one Redis round trip
//   (bounded by command_timeout): call them off the HTTP I/O threads, or
//   use admit_async() and Options::async_finish, which wait on the
//   limiter's worker thread instead.
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
// - Allotments (Options::allotment > 0; off by default): instead of one
//   script per request, an instance takes a slice of each of a subject's
//   limits in one call (requests, tokens, budgets, lease slots: an
//   admission whose grant is more than its own cost), admits from it in
//   process for up to `allotment`, and gives back what it did not use when
//   the slice closes (used up, expired, or the limiter going away): the
//   give-back and the next slice go to Redis in one round trip. Redis still
//   holds every unit handed out, so instances together never pass a limit
//   (per-minute buckets: a unit may be spent up to `allotment` after it was
//   charged, so over any interval T at most L + L * (T + allotment) / 60 s
//   pass, against L + L * T / 60 s without); the price is that an instance
//   may refuse while another holds unused units, at most 1/16 of a limit
//   per open slice. A slice starts at one request's worth and doubles while
//   it is used up before it expires (up to 256 requests, 64 lease slots).
//   One take per subject is in flight at a time; requests that arrive
//   meanwhile wait for it and are admitted from the new slice, and those it
//   cannot hold go to Redis one by one, as without allotments.
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
#include <optional>
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
  // Queued for the limiter's worker thread; `done` runs on it (or here, for
  // a request that breaks Subject's bounds or has nothing to check).
  // Admissions still queued when the limiter is destroyed are run first.
  void admit_async(const Subject& subject, int64_t reserve_tokens, AdmitDone done) override;
  void finish(const std::string& ticket, int64_t used_tokens) override;
  // With Options::async_finish the reconciliation is queued and written by
  // the worker thread, in the round trip of the next admissions (the
  // caller, an HTTP I/O loop, does not wait for Redis); otherwise it is
  // written now.
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
    int64_t cost;    // charged
    int64_t period;
    int64_t used = 0;  // at finish: what the charge should have been (buckets and budgets)
    std::vector<std::string> members;  // concurrency: the lease members to remove ("": the ticket's own)
  };
  struct Ticket {
    std::string tenant;
    std::vector<Held> held;
  };
  // One request's admission, and (admit_async) who waits for it.
  struct Admission {
    Subject subject;
    std::vector<Check> checks;
    std::vector<std::string> keys;  // of checks[i]
    std::string ticket;
    AdmitDone done;
    std::string subject_key;        // allotments: whose slices (subject and limits)
    std::vector<int64_t> want;      // a take: the grant asked for, per check (>= its cost); empty: the cost
  };
  // One ticket's reconciliation, or an allotment's give-back.
  struct Finishing {
    std::string ticket;
    Ticket charged;
  };
  // An allotment: units of each of a subject's limits charged in Redis and
  // admitted from in process (see above). Guarded by mu_.
  struct Slice {
    std::string ticket;                 // its lease members' stem and its give-back's ticket
    std::string subject_key;            // whose: Admission::subject_key
    Subject subject;
    std::vector<Check> checks;          // the take's (kinds and limits)
    std::vector<std::string> keys;      // of checks[i]
    std::vector<int64_t> granted;       // charged in Redis, per check
    std::vector<int64_t> used;          // of it: requests admitted, tokens reserved (then reconciled), leases running
    std::vector<Outcome> outcomes;      // Redis's answer to the take (for the headers)
    std::vector<std::vector<std::string>> members;  // concurrency checks: the lease members held
    std::vector<std::vector<std::string>> free;     // of them, those no request holds
    int64_t day = 0, month = 0;         // the budgets' periods charged
    int64_t admitted = 0;
    int64_t size = 1;                   // the request count it was sized for
    std::chrono::steady_clock::time_point open_until;
    bool closed = false;                // admits no more; gone once nothing runs on it
    int running = 0;
  };
  // A request admitted from a slice. Guarded by mu_.
  struct LocalTicket {
    std::shared_ptr<Slice> slice;
    int64_t reserved = 0;
    std::vector<std::string> slots;     // per check: the lease member it holds ("" for none)
  };
  // What requests of closed slices left while their subject's next take was
  // out: their leases and tokens' differences, for the slice it brings.
  struct Leftover {
    std::string tenant;
    std::vector<Check> checks;                      // the slices' (kinds and limits); empty: nothing left
    std::vector<std::string> keys;                  // of checks[i]
    std::vector<std::vector<std::string>> members;  // per check
    std::vector<int64_t> delta;                     // per check: used - reserved
    int64_t day = 0, month = 0;
  };
  // A subject's allotment state. Guarded by mu_.
  struct Subjects {
    Leftover left;
    std::shared_ptr<Slice> open;        // admitting, or null
    bool taking = false;                // a take is out to Redis
    bool covers = true;                 // and its slice may hold more requests than its own
    std::deque<Admission> waiting;      // arrived while it was out
    int64_t next_size = 1;
  };
  // What a round's answers leave to do, outside the locks.
  struct Followups {
    std::vector<std::pair<AdmitDone, Decision>> answered;  // waiting requests admitted from a new slice
    std::vector<Admission> queue;                          // to Redis: a take, or one by one
    std::vector<Finishing> returns;
    bool opened = false;                                   // a slice opened: the worker sweeps it when it expires
  };
  struct Reply;  // an owned redisReply
  class Pool;

  RedisLimiter(const Options& options, RedisAddress address);
  std::string redis_key(const Subject& s, const Check& c) const;
  struct ScriptCall {
    int which = 0;
    std::string tenant;  // whose keys it holds
    std::vector<std::string> keys, args;
    size_t finishes = 0;  // a finish or round call: how many tickets it reconciles
  };
  // One call's script, keys and args, borrowed (eval_many copies no strings).
  struct ScriptArgs {
    int which;
    const std::vector<std::string>& keys;
    const std::vector<std::string>& args;
  };
  // Runs script `which` with keys and args; the reply, or the backend error.
  Result<std::shared_ptr<Reply>> eval(int which, const std::vector<std::string>& keys,
                                      const std::vector<std::string>& args);
  // Runs the calls pipelined on one connection; the replies in order.
  std::vector<Result<std::shared_ptr<Reply>>> eval_many(const std::vector<ScriptArgs>& calls);
  // eval_many, counting the finishes a failed finish call loses.
  std::vector<Result<std::shared_ptr<Reply>>> run(const std::vector<ScriptCall>& calls);
  // The admission of `subject`, or InvalidArgument; empty checks when
  // nothing is configured to check.
  Result<Admission> prepare(const Subject& subject, int64_t reserve_tokens);
  // Gives `a` what Redis needs of it: its ticket and its keys (once).
  void name_for_redis(Admission& a);
  // The decision for an admission with nothing configured to check.
  static Decision unchecked(Admission a);
  // The calls that decide a batch of admissions: one per tenant (groups:
  // the batch's indices of each call).
  std::vector<ScriptCall> admission_calls(const std::vector<Admission>& batch,
                                          std::vector<std::vector<size_t>>& groups) const;
  // The answers, in the batch's order, from those calls' replies; a take's
  // slice opens and serves the requests that waited for it (`then`).
  std::vector<Result<Decision>> admission_answers(std::vector<Admission>& batch,
                                                  const std::vector<std::vector<size_t>>& groups,
                                                  std::vector<Result<std::shared_ptr<Reply>>>& replies,
                                                  Followups& then);
  // Allotments (all guarded by mu_). The decision for `a` from `s`, or none
  // when it does not fit or `s` no longer admits.
  std::optional<Decision> admit_from(const std::shared_ptr<Slice>& s, const Admission& a,
                                     std::chrono::steady_clock::time_point now);
  // What reconciles check `c` (not a lease) of `s` with Redis: charged
  // `granted`, should have been `used`; `s` then holds only what it used.
  static Held settle(Slice& s, size_t c);
  // Closes `s` (no more admissions) and gives back what it does not use.
  void close_slice(Subjects& st, Slice& s, bool used_up, Followups& then);
  // `a` becomes st's next take, sized from the demand (and for `waiting`
  // more); false when a limit's share caps it below what those need at once.
  bool make_take(Subjects& st, Admission& a, size_t waiting) const;
  // A take's answer: the slice opens, and the requests that waited get theirs.
  Decision take_answered(Admission& a, const std::vector<Outcome>& outcomes, const std::vector<int64_t>& grants,
                         int64_t day, int64_t month, Followups& then);
  void take_failed(Admission& a, Followups& then);
  // Gives what `left` holds to `s` (same periods), or back to Redis.
  void hand_over(Subjects& st, Slice* s, Followups& then);
  // Closes the slices whose time is up; the next time one is up.
  std::chrono::steady_clock::time_point sweep(Followups& then);
  void follow_up(Followups then);
  void queue_finishes(std::vector<Finishing> f);
  // The calls that write a batch of reconciliations: one per tenant.
  std::vector<ScriptCall> finish_calls(const std::vector<Finishing>& batch) const;
  // One round's calls: the finish calls of tenants without admissions, then
  // the admission calls (from `first_admission`), each merged with its
  // tenant's finishes into one round-script call, finishes first.
  static std::vector<ScriptCall> round_calls(std::vector<ScriptCall> finishing, std::vector<ScriptCall> admitting,
                                             size_t& first_admission);
  std::string next_ticket();
  void backend_error();
  void renew_loop();

  Options options_;
  std::unique_ptr<Pool> pool_;
  obs::Counter* errors_ = nullptr;
  const std::string instance_;  // random; the prefix of this limiter's tickets
  std::atomic<uint64_t> ticket_seq_{1};

  mutable std::mutex mu_;
  std::unordered_map<std::string, Ticket> tickets_;  // guarded by mu_
  std::unordered_map<std::string, Subjects> subjects_;              // guarded by mu_: by Admission::subject_key
  std::unordered_map<std::string, LocalTicket> local_;              // guarded by mu_
  std::unordered_map<std::string, std::shared_ptr<Slice>> slices_;  // guarded by mu_: every slice with leases or a charge out
  bool stopping_ = false;                                       // guarded by mu_
  std::condition_variable stop_cv_;
  std::thread renewer_;

  // The limiter's worker: one thread, started on first use, sends what
  // admit_async() and an async finish() queued, up to kMaxBatch of each, in
  // one round trip (finishes first), and answers the admissions.
  static constexpr size_t kMaxBatch = 64;
  void start_worker_locked();
  void work_loop();
  std::mutex work_mu_;
  std::condition_variable work_cv_;      // work was queued, or stop
  std::condition_variable drained_cv_;   // the finish queue emptied
  std::deque<Admission> admissions_;     // guarded by work_mu_
  std::deque<Finishing> finishes_;       // guarded by work_mu_
  bool working_ = false;                 // guarded by work_mu_: a round is out
  bool stopping_work_ = false;           // guarded by work_mu_
  std::chrono::steady_clock::time_point sweep_at_ = std::chrono::steady_clock::time_point::max();  // guarded by work_mu_
  std::thread worker_;                   // guarded by work_mu_ until stopping; joined first in the destructor
};

}  // namespace llmpool::ratelimit
