// UsageRecorder: counts each finished request's usage (per tenant, key,
// model and UTC day) in memory and writes the sums into the TenantStore
// from a thread of its own, so that no request thread (an engine's or an
// HTTP I/O thread) waits for SQLite. It writes every `flush_interval` and
// when destroyed; flush() writes now (tests, shutdown).
//
// Thread-safety: add() and flush() are thread-safe. Ownership: the store
// is shared; the destructor flushes and joins. Errors: a failed write is
// logged and its counts are kept for the next flush.
#pragma once

#include <chrono>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <thread>
#include <tuple>

#include "common/status.h"
#include "tenancy/tenant_store.h"

namespace llmpool::tenancy {

class UsageRecorder {
 public:
  explicit UsageRecorder(std::shared_ptr<TenantStore> store,
                         std::chrono::milliseconds flush_interval = std::chrono::milliseconds(1000),
                         const WallClock& clock = SystemWallClock::instance());
  ~UsageRecorder();
  UsageRecorder(const UsageRecorder&) = delete;
  UsageRecorder& operator=(const UsageRecorder&) = delete;

  // One finished request of `tenant` through `key_id` on `model` (today, UTC).
  void add(const std::string& tenant, const std::string& key_id, const std::string& model, int64_t requests,
           int64_t prompt_tokens, int64_t completion_tokens);
  // Writes what is pending now. The first failure, if any.
  Status flush();

 private:
  using Key = std::tuple<std::string, std::string, std::string, std::string>;  // tenant, key, model, day
  void run();

  std::shared_ptr<TenantStore> store_;
  const std::chrono::milliseconds interval_;
  const WallClock& clock_;
  std::mutex flush_mu_;  // one writer at a time
  std::mutex mu_;
  std::condition_variable cv_;
  std::map<Key, UsageRecord, std::less<>> pending_;  // guarded by mu_ (found by references: no copies)
  int64_t day_number_ = -1;                           // guarded by mu_: the day `day_` names
  std::string day_;                                   // guarded by mu_: usage_day() of it, made once a day
  bool stopping_ = false;                             // guarded by mu_
  std::thread thread_;                  // last: starts after the members above
};

}  // namespace llmpool::tenancy
