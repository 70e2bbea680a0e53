// ModelPool: the ModelDirectory that runs many models on one machine. It
// loads each model when it is first asked for, unloads it after its
// keep-alive when idle, evicts least-recently-used models when loading
// another would pass the memory budget or the loaded-model limit, and
// applies a new configuration as a diff without dropping a request.
//
// Lifecycle of one configured model (an Entry):
//
//   unloaded --acquire/warm/operator load--> loading --ok--> ready
//                                               \--error--> failed
//   ready --keep-alive expiry / eviction / operator unload--> unloaded
//   failed --the GGUF file (size or mtime) or the model's config changes,
//            or an operator load--> loading
//
// Local models load on the pool's loader thread (never on the caller's);
// requests for a loading model wait, bounded by pool.load_timeout_ms, and
// all get the same result. Remote models (openai, ollama) are "loaded" at
// once on the caller's thread (creating them is cheap) and count no memory
// and no slot in max_loaded_models.
//
// In-flight accounting: acquire() hands out a lease — a Provider decorator
// that counts as one use of the model from the moment it is handed out until
// it is destroyed, plus one use per generate()/embed() started through it
// until that call's on_done. A model with uses is busy: it is never evicted
// or unloaded. The pool keeps the only long-lived reference to a provider
// and drops it on one of its own threads, so a model is never destroyed
// on its own engine thread.
//
// Memory: a local model counts, while loading, its weights and the KV cache
// its GGUF header implies for context x parallel at its kv_type (the file's
// size when the header cannot be read), and once ready the provider's
// stats().memory_bytes: weights, KV cache and compute buffers as llama.cpp
// allocated them.
// Eviction order among idle, unpinned models: lowest `priority` first, then
// least recently used. If nothing can be evicted, acquire() fails with
// ResourceExhausted (HTTP 429) saying which models hold the memory.
//
// The watchdog (every pool.watchdog_interval_ms) reads MemAvailable and
// MemTotal and, under pool.watchdog_free_memory_percent free, evicts idle
// unpinned models until the shortfall is covered.
//
// Reload (apply()): models whose settings are unchanged keep their loaded
// provider; added models appear; removed and changed models leave the
// directory at once, and their old provider is dropped when its last
// request ends (a changed model gets a fresh entry, loaded on demand).
//
// Threading: every public method is thread-safe. Callbacks given to
// acquire()/load() run on the caller's thread, the loader thread or the
// housekeeping thread, never under the pool's lock. start() runs the loader
// and (unless Options::housekeeping_thread is false) the housekeeping thread
// that calls tick(); stop() joins them, fails waiting requests with
// Unavailable and drops every provider. The destructor calls stop().
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "obs/metrics.h"
#include "providers/directory.h"

namespace llmpool::pool {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;

enum class ModelState { kUnloaded, kLoading, kReady, kFailed };
const char* model_state_name(ModelState state);

// Total and available memory, as /proc/meminfo reports them.
struct MemInfo {
  uint64_t total_bytes = 0;
  uint64_t available_bytes = 0;
};
// Reads /proc/meminfo (MemTotal, MemAvailable); nullopt if unreadable.
std::optional<MemInfo> read_meminfo();

// One model's figures for /api/capacity-status.
struct ModelStatus {
  config::ModelConfig config;
  ModelState state = ModelState::kUnloaded;
  uint64_t memory_bytes = 0;          // counted against the budget (estimate while loading)
  int64_t in_flight = 0;              // leases and running requests
  int64_t waiting_for_load = 0;       // requests waiting for the model to load
  std::optional<TimePoint> last_used;
  std::string error;                  // when failed
  providers::ProviderStats stats;     // zero unless ready
};

struct PoolStatus {
  config::PoolConfig config;
  uint64_t memory_used_bytes = 0;     // ready + loading + old versions still busy
  int32_t loaded_local_models = 0;    // ready or loading local models (counted by max_loaded_models)
  int32_t retired_busy = 0;           // old versions (reload, operator) finishing their requests
  std::vector<ModelStatus> models;    // configuration order
};

// What apply() did, for logs and tests.
struct ApplySummary {
  std::vector<std::string> added, changed, removed, unchanged;
};

class ModelPool : public providers::ModelDirectory {
 public:
  // Creates a provider from its config; blocks while a local model loads.
  using ProviderMaker = std::function<Result<providers::ProviderPtr>(const config::ModelConfig&)>;

  struct Options {
    ProviderMaker make_provider;                       // default: providers::create_provider
    std::function<TimePoint()> clock;                  // default: steady_clock::now; must be thread-safe
    std::function<std::optional<MemInfo>()> meminfo;   // default: read_meminfo
    obs::MetricsRegistry* metrics = nullptr;           // optional; must outlive the pool
    bool housekeeping_thread = true;                   // false: the owner calls tick() (tests)
    std::chrono::milliseconds tick_interval{100};      // housekeeping period
  };

  ModelPool(const config::Config& config, Options options);
  ~ModelPool() override;
  ModelPool(const ModelPool&) = delete;
  ModelPool& operator=(const ModelPool&) = delete;

  // Starts the threads and the loading of `warm` models. Call once.
  void start();
  // Idempotent. Joins the threads (waiting for a load in progress), fails
  // waiting requests with Unavailable, drops every provider; requests still
  // holding a lease keep their model until they end.
  void stop();

  // ModelDirectory. Errors: NotFound for an unknown name; Unavailable for a
  // failed model (with the load error) or a stopped pool; ResourceExhausted
  // when it would not fit and nothing can be evicted; DeadlineExceeded when
  // it did not load within load_timeout_ms.
  void acquire(const std::string& name, std::function<void(Result<providers::ProviderPtr>)> done) override;
  std::vector<providers::ModelEntry> list() const override;

  // Operator load: like acquire() but retries a failed model at once and
  // holds no lease; `done` gets ok once the model is ready.
  void load(const std::string& name, std::function<void(Status)> done);
  // Operator unload of an idle model (pinned ones too). NotFound; an error
  // with code "model_busy" when it has requests in flight or is loading.
  // Unloading a failed model clears the failure.
  Status unload(const std::string& name);

  // Applies a new, valid configuration as a diff (see the file comment) and
  // starts loading new warm models.
  ApplySummary apply(const config::Config& config);

  PoolStatus status() const;

  // Housekeeping: keep-alive expiry, load timeouts, the watchdog, dropping
  // old providers whose last request ended. Called by the housekeeping
  // thread; tests with an injected clock call it directly.
  void tick();

 private:
  struct Usage;
  class Lease;
  struct Entry;
  struct Retired;
  struct Waiter;
  using EntryPtr = std::shared_ptr<Entry>;
  using Callbacks = std::vector<std::function<void()>>;  // run after unlocking

  void acquire_impl(const std::string& name, bool force_retry, std::function<void(Result<providers::ProviderPtr>)> done);
  EntryPtr find_locked(const std::string& name) const;
  // Starts (or joins) a load of `entry` for `waiter`; may evict. Sets
  // `inline_load` when the caller must run a remote model's load itself.
  void request_locked(const EntryPtr& entry, Waiter waiter, bool force_retry, Callbacks& after,
                      bool& inline_load);
  Status make_room_locked(const EntryPtr& entry, uint64_t need);
  void evict_locked(const EntryPtr& entry, const char* reason, bool is_eviction);
  void retire_locked(const EntryPtr& entry);
  void run_load(const EntryPtr& entry, uint64_t seq);  // cfg is immutable: no lock needed
  void finish_load(const EntryPtr& entry, uint64_t seq, Result<providers::ProviderPtr> result, double seconds);
  providers::ProviderPtr lease_locked(const EntryPtr& entry);
  bool busy(const EntryPtr& entry) const;
  uint64_t used_memory_locked() const;
  int32_t loaded_local_locked() const;
  void update_gauges_locked();
  void start_warm_loads();
  void loader_main();
  void housekeeping_main();
  std::vector<providers::ProviderPtr> take_graveyard_locked();
  TimePoint now() const { return options_.clock(); }

  Options options_;
  mutable std::mutex mu_;
  std::condition_variable loader_cv_;
  std::condition_variable housekeeping_cv_;
  config::PoolConfig pool_config_;                 // guarded by mu_
  std::vector<EntryPtr> entries_;                  // configuration order; guarded by mu_
  std::map<std::string, EntryPtr> by_name_;        // names and aliases; guarded by mu_
  std::vector<Retired> retired_;                   // guarded by mu_
  std::vector<providers::ProviderPtr> graveyard_;  // to drop off the lock; guarded by mu_
  std::deque<std::pair<EntryPtr, uint64_t>> load_queue_;  // guarded by mu_
  std::vector<EntryPtr> orphans_;                  // left the config while loading; guarded by mu_
  std::optional<TimePoint> last_watchdog_;         // guarded by mu_
  bool started_ = false;                           // guarded by mu_
  bool stopping_ = false;                          // guarded by mu_
  std::thread loader_;
  std::thread housekeeping_;
};

}  // namespace llmpool::pool
