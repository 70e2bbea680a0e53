#include "pool/model_pool.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "providers/factory.h"
#include "providers/local_provider.h"
#include "providers/registry.h"

namespace llmpool::pool {
namespace {

namespace fs = std::filesystem;
using providers::ProviderPtr;

// What identifies a model file's version: a failed model is retried when it changes.
struct FileStamp {
  bool exists = false;
  uint64_t size = 0;
  int64_t mtime_ns = 0;
  bool operator==(const FileStamp&) const = default;
};

FileStamp stamp_of(const std::string& path) {
  FileStamp s;
  std::error_code ec;
  uint64_t size = fs::file_size(path, ec);
  if (ec) return s;
  auto t = fs::last_write_time(path, ec);
  if (ec) return s;
  s.exists = true;
  s.size = size;
  s.mtime_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
  return s;
}

// Memory a model will take, known before loading it: its weights and KV
// cache (the GGUF header's sizes), or the file's size when those are unknown.
// Remembered per file version and settings: the header is read once, not
// at every load under the pool's lock.
uint64_t estimate_bytes(const config::ModelConfig& m) {
  if (m.is_remote()) return 0;
  const FileStamp stamp = stamp_of(m.path);
  if (!stamp.exists) return 0;
  const std::string key = m.path + '\n' + std::to_string(stamp.size) + '\n' + std::to_string(stamp.mtime_ns) + '\n' +
                          std::to_string(m.context) + 'x' + std::to_string(m.parallel) + '\n' + m.kv_type;
  static std::mutex memo_mu;
  static std::map<std::string, uint64_t> memo;
  {
    std::lock_guard<std::mutex> lock(memo_mu);
    if (auto it = memo.find(key); it != memo.end()) return it->second;
  }
  uint64_t use = providers::LocalProvider::estimate_memory(m);
  if (use == 0) use = stamp.size;
  std::lock_guard<std::mutex> lock(memo_mu);
  if (memo.size() > 1024) memo.clear();
  memo[key] = use;
  return use;
}

std::string mib(uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f MiB", static_cast<double>(bytes) / 1048576.0);
  return buf;
}

providers::ModelInfo info_from_config(const config::ModelConfig& m) {
  return {m.name, m.aliases, m.type, m.capabilities, m.context};
}

std::vector<double> load_time_buckets() { return {0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300}; }

}  // namespace

const char* model_state_name(ModelState state) {
  switch (state) {
    case ModelState::kUnloaded: return "unloaded";
    case ModelState::kLoading: return "loading";
    case ModelState::kReady: return "ready";
    case ModelState::kFailed: return "failed";
  }
  return "unknown";
}

std::optional<MemInfo> read_meminfo() {
  std::ifstream in("/proc/meminfo");
  if (!in) return std::nullopt;
  MemInfo m;
  bool total = false, avail = false;
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (in >> key >> kib) {
    std::getline(in, unit);
    if (key == "MemTotal:") m.total_bytes = kib * 1024, total = true;
    else if (key == "MemAvailable:") m.available_bytes = kib * 1024, avail = true;
    if (total && avail) return m;
  }
  return std::nullopt;
}

// How many uses a loaded model has (leases alive + requests running) and
// when it was last used. Shared by the pool and the leases; lock-free.
struct ModelPool::Usage {
  explicit Usage(std::function<TimePoint()> c) : clock(std::move(c)) { touch(); }
  void touch() { last_used.store(clock().time_since_epoch().count(), std::memory_order_relaxed); }
  void enter() {
    touch();
    in_flight.fetch_add(1, std::memory_order_acq_rel);
  }
  void leave() {
    touch();
    in_flight.fetch_sub(1, std::memory_order_acq_rel);
  }
  TimePoint last() const { return TimePoint(SteadyClock::duration(last_used.load(std::memory_order_relaxed))); }

  std::atomic<int64_t> in_flight{0};
  std::atomic<SteadyClock::rep> last_used{0};
  std::function<TimePoint()> clock;
};

namespace {

// One use of a model that ends exactly once: when released, or when the
// last copy of the callback holding it is destroyed without having run
// (a provider that drops a request must not pin the model forever).
template <typename UsageT>
class UseToken {
 public:
  explicit UseToken(std::shared_ptr<UsageT> usage) : usage_(std::move(usage)) { usage_->enter(); }
  ~UseToken() { release(); }
  UseToken(const UseToken&) = delete;
  UseToken& operator=(const UseToken&) = delete;
  void release() {
    if (!released_.exchange(true)) usage_->leave();
  }

 private:
  std::shared_ptr<UsageT> usage_;
  std::atomic<bool> released_{false};
};

}  // namespace

// The provider handed out by acquire(): the model's provider plus a use
// held for the lease's lifetime and one per generation started through it.
class ModelPool::Lease : public providers::Provider {
 public:
  Lease(ProviderPtr inner, std::shared_ptr<Usage> usage) : inner_(std::move(inner)), token_(usage), usage_(usage) {}

  const providers::ModelInfo& info() const override { return inner_->info(); }

  void generate(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks) override {
    auto token = std::make_shared<UseToken<Usage>>(usage_);
    GenerateCallbacks wrapped;
    wrapped.on_delta = std::move(callbacks.on_delta);
    // The use ends before the caller hears of the end, so whoever reacts to
    // it (an operator's unload, a test) sees the model idle.
    wrapped.on_done = [token, done = std::move(callbacks.on_done)](Result<Completion> r) {
      token->release();
      if (done) done(std::move(r));
    };
    inner_->generate(std::move(request), std::move(cancel), std::move(wrapped));
  }

  void embed(std::vector<std::string> inputs, EmbedCallback done) override {
    auto token = std::make_shared<UseToken<Usage>>(usage_);
    inner_->embed(std::move(inputs), [token, done = std::move(done)](Result<Embeddings> r) {
      token->release();
      if (done) done(std::move(r));
    });
  }

  Result<std::vector<int32_t>> tokenize(const std::string& text, bool add_special) override {
    return inner_->tokenize(text, add_special);
  }
  Result<std::string> detokenize(const std::vector<int32_t>& tokens) override { return inner_->detokenize(tokens); }
  providers::ProviderStats stats() const override { return inner_->stats(); }

 private:
  ProviderPtr inner_;
  UseToken<Usage> token_;
  std::shared_ptr<Usage> usage_;
};

struct ModelPool::Waiter {
  TimePoint deadline;
  std::function<void(Result<ProviderPtr>)> done;
};

struct ModelPool::Entry {
  config::ModelConfig cfg;                   // immutable once the entry exists
  ModelState state = ModelState::kUnloaded;
  ProviderPtr provider;                      // when ready
  std::shared_ptr<Usage> usage;              // when ready
  uint64_t memory_bytes = 0;                 // ready: measured; loading: estimated
  std::string error;                         // when failed
  FileStamp failed_stamp;                    // the file as it was when loading failed
  std::vector<Waiter> waiters;               // when loading
  uint64_t load_seq = 0;                     // which load a loader result belongs to
  bool retired = false;                      // removed or replaced by a reload
  std::optional<TimePoint> last_used;        // of the last loaded instance

  std::optional<TimePoint> last() const {
    if (usage) return usage->last();
    return last_used;
  }
};

// An old provider that left the directory (reload) and still has uses.
struct ModelPool::Retired {
  std::string name;
  ProviderPtr provider;
  std::shared_ptr<Usage> usage;
  uint64_t memory_bytes = 0;
  bool local = true;
};

ModelPool::ModelPool(const config::Config& config, Options options) : options_(std::move(options)) {
  if (!options_.make_provider) options_.make_provider = providers::create_provider;
  if (!options_.clock) options_.clock = [] { return SteadyClock::now(); };
  if (!options_.meminfo) options_.meminfo = read_meminfo;
  pool_config_ = config.pool;
  for (const auto& m : config.models) {
    auto e = std::make_shared<Entry>();
    e->cfg = m;
    entries_.push_back(e);
    by_name_[m.name] = e;
    for (const auto& a : m.aliases) by_name_[a] = e;
  }
  std::lock_guard<std::mutex> lock(mu_);
  update_gauges_locked();
}

ModelPool::~ModelPool() { stop(); }

void ModelPool::start() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (started_ || stopping_) return;
    started_ = true;
  }
  loader_ = std::thread([this] { loader_main(); });
  if (options_.housekeeping_thread) housekeeping_ = std::thread([this] { housekeeping_main(); });
  start_warm_loads();
}

void ModelPool::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) return;
    stopping_ = true;
  }
  loader_cv_.notify_all();
  housekeeping_cv_.notify_all();
  if (loader_.joinable()) loader_.join();
  if (housekeeping_.joinable()) housekeeping_.join();

  Callbacks after;
  std::vector<ProviderPtr> drop;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<EntryPtr> all = entries_;
    all.insert(all.end(), orphans_.begin(), orphans_.end());
    for (const auto& e : all) {
      for (auto& w : e->waiters)
        after.push_back([d = std::move(w.done), name = e->cfg.name] {
          d(Status::unavailable("the server is shutting down; model '" + name + "' was not loaded"));
        });
      e->waiters.clear();
      if (e->provider) drop.push_back(std::move(e->provider));
      e->usage.reset();
      e->state = ModelState::kUnloaded;
      e->memory_bytes = 0;
    }
    orphans_.clear();
    for (auto& r : retired_) drop.push_back(std::move(r.provider));
    retired_.clear();
    load_queue_.clear();
    auto g = take_graveyard_locked();
    drop.insert(drop.end(), g.begin(), g.end());
    update_gauges_locked();
  }
  for (auto& f : after) f();
  drop.clear();
}

ModelPool::EntryPtr ModelPool::find_locked(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

void ModelPool::acquire(const std::string& name, std::function<void(Result<ProviderPtr>)> done) {
  acquire_impl(name, false, std::move(done));
}

void ModelPool::load(const std::string& name, std::function<void(Status)> done) {
  acquire_impl(name, true, [done = std::move(done)](Result<ProviderPtr> r) {
    Status st = r.is_ok() ? Status::ok() : r.status();
    { Result<ProviderPtr> lease = std::move(r); }  // no use held once the operator hears back
    done(st);
  });
}

// One lock per request: the waiter's deadline (pool.load_timeout_ms from
// now) is taken under the same lock as the entry.
void ModelPool::acquire_impl(const std::string& name, bool force_retry, std::function<void(Result<ProviderPtr>)> done) {
  Callbacks after;
  bool inline_load = false;
  EntryPtr entry;
  ProviderPtr ready;
  uint64_t seq = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_) {
      after.push_back([d = std::move(done)] { d(Status::unavailable("the server is shutting down")); });
    } else if (!(entry = find_locked(name))) {
      after.push_back([d = std::move(done), name] { d(providers::model_not_found(name)); });
    } else if (entry->state == ModelState::kReady) {
      ready = lease_locked(entry);  // the common case: nothing queued for after the lock
    } else {
      const TimePoint deadline = now() + std::chrono::milliseconds(pool_config_.load_timeout_ms);
      request_locked(entry, Waiter{deadline, std::move(done)}, force_retry, after, inline_load);
      seq = entry->load_seq;
    }
  }
  if (ready) {
    done(std::move(ready));
    return;
  }
  if (inline_load) run_load(entry, seq);
  for (auto& f : after) f();
}

void ModelPool::request_locked(const EntryPtr& entry, Waiter waiter, bool force_retry, Callbacks& after,
                               bool& inline_load) {
  const config::ModelConfig& cfg = entry->cfg;
  switch (entry->state) {
    case ModelState::kReady: {
      ProviderPtr lease = lease_locked(entry);
      after.push_back([d = std::move(waiter.done), lease]() mutable { d(std::move(lease)); });
      return;
    }
    case ModelState::kLoading:
      entry->waiters.push_back(std::move(waiter));
      return;
    case ModelState::kFailed:
      if (!force_retry) {
        bool file_changed = !cfg.is_remote() && !(stamp_of(cfg.path) == entry->failed_stamp);
        if (!file_changed) {
          after.push_back([d = std::move(waiter.done),
                           st = Status::unavailable("model '" + cfg.name + "' failed to load: " + entry->error)] {
            d(st);
          });
          return;
        }
        spdlog::info("model '{}': {} changed since it failed to load; loading it again", cfg.name, cfg.path);
      }
      [[fallthrough]];
    case ModelState::kUnloaded: {
      uint64_t need = estimate_bytes(cfg);
      Status room = make_room_locked(entry, need);
      if (!room) {
        spdlog::warn("{}", room.message());
        after.push_back([d = std::move(waiter.done), room] { d(room); });
        return;
      }
      entry->state = ModelState::kLoading;
      entry->error.clear();
      entry->memory_bytes = need;
      ++entry->load_seq;
      entry->waiters.push_back(std::move(waiter));
      if (cfg.is_remote()) {
        inline_load = true;
      } else {
        load_queue_.emplace_back(entry, entry->load_seq);
        loader_cv_.notify_one();
      }
      update_gauges_locked();
      return;
    }
  }
}

ProviderPtr ModelPool::lease_locked(const EntryPtr& entry) {
  return std::make_shared<Lease>(entry->provider, entry->usage);
}

bool ModelPool::busy(const EntryPtr& entry) const {
  return entry->usage && entry->usage->in_flight.load(std::memory_order_acquire) > 0;
}

uint64_t ModelPool::used_memory_locked() const {
  uint64_t used = 0;
  for (const auto& e : entries_)
    if (e->state == ModelState::kReady || e->state == ModelState::kLoading) used += e->memory_bytes;
  for (const auto& e : orphans_) used += e->memory_bytes;
  for (const auto& r : retired_) used += r.memory_bytes;
  return used;
}

int32_t ModelPool::loaded_local_locked() const {
  int32_t n = 0;
  auto counts = [](const EntryPtr& e) {
    return !e->cfg.is_remote() && (e->state == ModelState::kReady || e->state == ModelState::kLoading);
  };
  for (const auto& e : entries_) n += counts(e);
  for (const auto& e : orphans_) n += counts(e);
  for (const auto& r : retired_) n += r.local;
  return n;
}

namespace {

// Eviction order: lowest priority first, then least recently used.
template <typename EntryPtrT>
void sort_for_eviction(std::vector<EntryPtrT>& v) {
  std::stable_sort(v.begin(), v.end(), [](const EntryPtrT& a, const EntryPtrT& b) {
    if (a->cfg.priority != b->cfg.priority) return a->cfg.priority < b->cfg.priority;
    return a->last().value_or(TimePoint{}) < b->last().value_or(TimePoint{});
  });
}

}  // namespace

Status ModelPool::make_room_locked(const EntryPtr& entry, uint64_t need) {
  if (entry->cfg.is_remote()) return Status::ok();  // no memory, no slot
  const uint64_t budget = pool_config_.memory_budget_bytes;
  const int32_t max_loaded = pool_config_.max_loaded_models;
  const std::string& name = entry->cfg.name;
  if (budget > 0 && need > budget)
    return Status::resource_exhausted("cannot load model '" + name + "': it needs " + mib(need) +
                                      ", more than the whole pool.memory_budget (" + mib(budget) + ")");
  uint64_t used = used_memory_locked();
  int32_t count = loaded_local_locked();
  auto over_budget = [&] { return budget > 0 && used + need > budget; };
  auto over_count = [&] { return max_loaded > 0 && count + 1 > max_loaded; };
  if (!over_budget() && !over_count()) return Status::ok();
  const char* reason = over_budget() ? "memory_budget" : "max_loaded_models";

  std::vector<EntryPtr> candidates;
  for (const auto& e : entries_)
    if (e != entry && e->state == ModelState::kReady && !e->cfg.is_remote() && !e->cfg.pinned && !busy(e))
      candidates.push_back(e);
  sort_for_eviction(candidates);
  std::vector<EntryPtr> victims;
  for (const auto& c : candidates) {
    if (!over_budget() && !over_count()) break;
    victims.push_back(c);
    used -= std::min(used, c->memory_bytes);
    --count;
  }
  if (over_budget() || over_count()) {
    // Say who holds the room, so the operator knows what to change.
    std::string holders;
    auto add = [&](const std::string& who, uint64_t bytes, const std::string& why) {
      holders += (holders.empty() ? "" : ", ") + who + " (" + mib(bytes) + ", " + why + ")";
    };
    for (const auto& e : entries_) {
      if (e == entry || e->cfg.is_remote()) continue;
      if (e->state == ModelState::kLoading) add("'" + e->cfg.name + "'", e->memory_bytes, "loading");
      else if (e->state == ModelState::kReady && busy(e))
        add("'" + e->cfg.name + "'", e->memory_bytes,
            "busy: " + std::to_string(e->usage->in_flight.load()) + " request(s) in flight");
      else if (e->state == ModelState::kReady && e->cfg.pinned) add("'" + e->cfg.name + "'", e->memory_bytes, "pinned");
    }
    for (const auto& e : orphans_) add("'" + e->cfg.name + "' (old version)", e->memory_bytes, "loading");
    for (const auto& r : retired_)
      if (r.local) add("'" + r.name + "' (old version)", r.memory_bytes, "finishing its requests");
    std::string limit = over_budget()
                            ? "pool.memory_budget (" + mib(budget) + "; " + mib(used_memory_locked()) + " in use)"
                            : "pool.max_loaded_models (" + std::to_string(max_loaded) + ")";
    return Status::resource_exhausted("cannot load model '" + name + "' (" + mib(need) + "): it would pass " + limit +
                                      " and no idle, unpinned model can be evicted; held by: " +
                                      (holders.empty() ? "nothing evictable" : holders));
  }
  for (const auto& v : victims) evict_locked(v, reason, true);
  return Status::ok();
}

void ModelPool::evict_locked(const EntryPtr& entry, const char* reason, bool is_eviction) {
  if (entry->state != ModelState::kReady) return;
  spdlog::info("model '{}' unloaded ({}, {} freed)", entry->cfg.name, reason, mib(entry->memory_bytes));
  entry->last_used = entry->last();
  graveyard_.push_back(std::move(entry->provider));
  entry->provider.reset();
  entry->usage.reset();
  entry->state = ModelState::kUnloaded;
  entry->memory_bytes = 0;
  if (options_.metrics) {
    options_.metrics
        ->counter("llmpool_model_unloads_total", "Models unloaded, by reason.",
                  {{"model", entry->cfg.name}, {"reason", reason}})
        .inc();
    if (is_eviction)
      options_.metrics
          ->counter("llmpool_model_evictions_total",
                    "Models evicted to make room (memory_budget, max_loaded_models) or by the memory watchdog.",
                    {{"model", entry->cfg.name}, {"reason", reason}})
          .inc();
  }
  update_gauges_locked();
  loader_cv_.notify_one();  // the loader frees evicted models before its next load
  housekeeping_cv_.notify_one();
}

void ModelPool::retire_locked(const EntryPtr& entry) {
  entry->retired = true;
  if (entry->state == ModelState::kLoading) {
    orphans_.push_back(entry);  // its load finishes for those already waiting
    return;
  }
  if (entry->state != ModelState::kReady) return;
  if (options_.metrics)
    options_.metrics
        ->counter("llmpool_model_unloads_total", "Models unloaded, by reason.",
                  {{"model", entry->cfg.name}, {"reason", "config"}})
        .inc();
  if (busy(entry)) {
    spdlog::info("model '{}' left the configuration; its old version stays until its {} request(s) end",
                 entry->cfg.name, entry->usage->in_flight.load());
    retired_.push_back({entry->cfg.name, std::move(entry->provider), std::move(entry->usage), entry->memory_bytes,
                        !entry->cfg.is_remote()});
  } else {
    graveyard_.push_back(std::move(entry->provider));
    housekeeping_cv_.notify_one();
  }
  entry->provider.reset();
  entry->usage.reset();
  entry->state = ModelState::kUnloaded;
  entry->memory_bytes = 0;
}

void ModelPool::run_load(const EntryPtr& entry, uint64_t seq) {
  const config::ModelConfig& cfg = entry->cfg;
  auto t0 = SteadyClock::now();
  Result<ProviderPtr> r = [&]() -> Result<ProviderPtr> {
    try {
      auto p = options_.make_provider(cfg);
      if (p.is_ok() && !p.value()) return Status::internal("the provider factory returned nothing");
      return p;
    } catch (const std::exception& e) {
      return Status::internal(std::string("loading threw: ") + e.what());
    } catch (...) {
      return Status::internal("loading threw a non-standard exception");
    }
  }();
  double seconds = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  finish_load(entry, seq, std::move(r), seconds);
}

void ModelPool::finish_load(const EntryPtr& entry, uint64_t seq, Result<ProviderPtr> result, double seconds) {
  const config::ModelConfig& cfg = entry->cfg;
  uint64_t memory = 0;
  if (result.is_ok() && !cfg.is_remote()) {
    memory = result.value()->stats().memory_bytes;
    if (memory == 0) memory = estimate_bytes(cfg);
  }
  FileStamp stamp = cfg.is_remote() ? FileStamp{} : stamp_of(cfg.path);

  Callbacks after;
  std::vector<ProviderPtr> drop;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (options_.metrics) {
      options_.metrics
          ->counter("llmpool_model_loads_total", "Model loads, by result (ok, failed).",
                    {{"model", cfg.name}, {"result", result.is_ok() ? "ok" : "failed"}})
          .inc();
      if (result.is_ok())
        options_.metrics
            ->histogram("llmpool_model_load_seconds", "Time to load a model.", {{"model", cfg.name}},
                        load_time_buckets())
            .observe(seconds);
    }
    if (entry->state != ModelState::kLoading || entry->load_seq != seq) {
      if (result.is_ok()) drop.push_back(std::move(result).value());  // superseded (stop)
    } else {
      std::vector<Waiter> waiters = std::move(entry->waiters);
      entry->waiters.clear();
      if (result.is_ok()) {
        ProviderPtr provider = std::move(result).value();
        auto usage = std::make_shared<Usage>(options_.clock);
        spdlog::info("model '{}' ready ({}, loaded in {:.2f} s)", cfg.name, mib(memory), seconds);
        std::vector<ProviderPtr> leases;
        for (size_t i = 0; i < waiters.size(); ++i) leases.push_back(std::make_shared<Lease>(provider, usage));
        if (entry->retired) {
          // It left the configuration while loading: serve those who waited,
          // then let it go when they are done.
          retired_.push_back({cfg.name, std::move(provider), std::move(usage), memory, !cfg.is_remote()});
          entry->state = ModelState::kUnloaded;
          entry->memory_bytes = 0;
        } else {
          entry->state = ModelState::kReady;
          entry->provider = std::move(provider);
          entry->usage = std::move(usage);
          entry->memory_bytes = memory;
        }
        for (size_t i = 0; i < waiters.size(); ++i)
          after.push_back([d = std::move(waiters[i].done), l = std::move(leases[i])]() mutable { d(std::move(l)); });
      } else {
        std::string error = result.status().message();
        // The reason alone: the message this goes into names the model.
        const std::string named = "model '" + cfg.name + "': ";
        if (error.rfind(named, 0) == 0) error.erase(0, named.size());
        spdlog::error("model '{}' failed to load: {}", cfg.name, error);
        entry->state = ModelState::kFailed;
        entry->error = error;
        entry->failed_stamp = stamp;
        entry->memory_bytes = 0;
        Status st = Status::unavailable("model '" + cfg.name + "' failed to load: " + error);
        for (auto& w : waiters) after.push_back([d = std::move(w.done), st] { d(st); });
      }
      if (entry->retired) orphans_.erase(std::remove(orphans_.begin(), orphans_.end(), entry), orphans_.end());
    }
    update_gauges_locked();
  }
  for (auto& f : after) f();
  // Leases made above are gone by now; `drop` goes off this thread's stack here.
}

Status ModelPool::unload(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  EntryPtr e = find_locked(name);
  if (!e) return providers::model_not_found(name);
  switch (e->state) {
    case ModelState::kLoading:
      return Status::invalid_argument("model '" + e->cfg.name + "' is loading; unload it once it is ready", "model",
                                      "model_busy");
    case ModelState::kReady:
      if (busy(e))
        return Status::invalid_argument("model '" + e->cfg.name + "' has " +
                                            std::to_string(e->usage->in_flight.load()) +
                                            " request(s) in flight; unload it when it is idle",
                                        "model", "model_busy");
      evict_locked(e, "operator", false);
      return Status::ok();
    case ModelState::kFailed:
      e->state = ModelState::kUnloaded;
      e->error.clear();
      return Status::ok();
    case ModelState::kUnloaded:
      return Status::ok();
  }
  return Status::ok();
}

ApplySummary ModelPool::apply(const config::Config& config) {
  ApplySummary s;
  {
    std::lock_guard<std::mutex> lock(mu_);
    std::map<std::string, EntryPtr> old;
    for (const auto& e : entries_) old[e->cfg.name] = e;
    std::vector<EntryPtr> next;
    for (const auto& m : config.models) {
      auto it = old.find(m.name);
      if (it != old.end() && config::same_settings(it->second->cfg, m)) {
        next.push_back(it->second);
        s.unchanged.push_back(m.name);
        old.erase(it);
        continue;
      }
      auto e = std::make_shared<Entry>();
      e->cfg = m;
      next.push_back(e);
      if (it != old.end()) {
        retire_locked(it->second);
        s.changed.push_back(m.name);
        old.erase(it);
      } else {
        s.added.push_back(m.name);
      }
    }
    for (auto& [name, e] : old) {
      retire_locked(e);
      s.removed.push_back(name);
    }
    entries_ = std::move(next);
    by_name_.clear();
    for (const auto& e : entries_) {
      by_name_[e->cfg.name] = e;
      for (const auto& a : e->cfg.aliases) by_name_[a] = e;
    }
    pool_config_ = config.pool;
    update_gauges_locked();
  }
  auto names = [](const std::vector<std::string>& v) {
    std::string out;
    for (const auto& n : v) out += (out.empty() ? "" : ", ") + n;
    return out.empty() ? std::string("-") : out;
  };
  spdlog::info("config applied: added [{}], changed [{}], removed [{}], unchanged [{}]", names(s.added),
               names(s.changed), names(s.removed), names(s.unchanged));
  start_warm_loads();
  return s;
}

void ModelPool::start_warm_loads() {
  Callbacks after;
  std::vector<std::pair<EntryPtr, uint64_t>> inline_loads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!started_ || stopping_) return;
    for (const auto& e : entries_) {
      // Remote models cost nothing to create: they are made ready at once.
      if (!(e->cfg.warm || e->cfg.is_remote()) || e->state != ModelState::kUnloaded) continue;
      bool inl = false;
      Waiter w{TimePoint::max(), [name = e->cfg.name](Result<ProviderPtr> r) {
                 if (!r) spdlog::warn("model '{}' was not loaded at start: {}", name, r.status().message());
               }};
      request_locked(e, std::move(w), false, after, inl);
      if (inl) inline_loads.emplace_back(e, e->load_seq);
    }
  }
  for (auto& [e, seq] : inline_loads) run_load(e, seq);
  for (auto& f : after) f();
}

void ModelPool::tick() {
  Callbacks after;
  std::vector<ProviderPtr> drop;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const TimePoint t = now();

    // Requests that waited too long for a load.
    std::vector<EntryPtr> loading = entries_;
    loading.insert(loading.end(), orphans_.begin(), orphans_.end());
    for (const auto& e : loading) {
      if (e->state != ModelState::kLoading) continue;
      auto& ws = e->waiters;
      for (auto it = ws.begin(); it != ws.end();) {
        if (it->deadline > t) {
          ++it;
          continue;
        }
        after.push_back([d = std::move(it->done), name = e->cfg.name, ms = pool_config_.load_timeout_ms] {
          d(Status::deadline_exceeded("model '" + name + "' is still loading after " + std::to_string(ms) +
                                      " ms (pool.load_timeout_ms); try again shortly"));
        });
        it = ws.erase(it);
      }
    }

    // Keep-alive expiry.
    for (const auto& e : entries_) {
      const auto& c = e->cfg;
      if (e->state != ModelState::kReady || c.is_remote() || c.pinned || c.warm) continue;
      if (c.keep_alive_ms < 0 || busy(e)) continue;
      if (t - e->usage->last() >= std::chrono::milliseconds(c.keep_alive_ms)) evict_locked(e, "keep_alive", false);
    }

    // The memory watchdog.
    const auto& pc = pool_config_;
    if (pc.watchdog_free_memory_percent > 0 &&
        (!last_watchdog_ || t - *last_watchdog_ >= std::chrono::milliseconds(pc.watchdog_interval_ms))) {
      last_watchdog_ = t;
      std::optional<MemInfo> mi = options_.meminfo();
      if (mi && mi->total_bytes > 0) {
        uint64_t want = mi->total_bytes / 100 * static_cast<uint64_t>(pc.watchdog_free_memory_percent);
        if (mi->available_bytes < want) {
          uint64_t deficit = want - mi->available_bytes;
          std::vector<EntryPtr> candidates;
          for (const auto& e : entries_)
            if (e->state == ModelState::kReady && !e->cfg.is_remote() && !e->cfg.pinned && !busy(e) &&
                e->memory_bytes > 0)
              candidates.push_back(e);
          sort_for_eviction(candidates);
          uint64_t freed = 0;
          std::string names;
          for (const auto& c : candidates) {
            if (freed >= deficit) break;
            freed += c->memory_bytes;
            names += (names.empty() ? "" : ", ") + c->cfg.name;
            evict_locked(c, "watchdog", true);
          }
          spdlog::warn("memory watchdog: {} of {} available (under {}%); evicted: {}", mib(mi->available_bytes),
                       mib(mi->total_bytes), pc.watchdog_free_memory_percent,
                       names.empty() ? "nothing idle to evict" : names);
        }
      }
    }

    // Old versions whose last request ended.
    for (auto it = retired_.begin(); it != retired_.end();) {
      if (it->usage->in_flight.load(std::memory_order_acquire) > 0) {
        ++it;
        continue;
      }
      spdlog::info("old version of model '{}' released", it->name);
      drop.push_back(std::move(it->provider));
      it = retired_.erase(it);
    }
    auto g = take_graveyard_locked();
    drop.insert(drop.end(), g.begin(), g.end());
    update_gauges_locked();
  }
  for (auto& f : after) f();
  drop.clear();  // destroys unloaded models here, off the lock and off their engine threads
}

std::vector<ProviderPtr> ModelPool::take_graveyard_locked() {
  std::vector<ProviderPtr> out;
  out.swap(graveyard_);
  return out;
}

void ModelPool::update_gauges_locked() {
  if (!options_.metrics) return;
  int64_t ready = 0;
  for (const auto& e : entries_) ready += e->state == ModelState::kReady;
  options_.metrics->gauge("llmpool_models_loaded", "Models loaded and ready.").set(static_cast<double>(ready));
  options_.metrics
      ->gauge("llmpool_pool_memory_bytes", "Memory counted against pool.memory_budget (loaded and loading models).")
      .set(static_cast<double>(used_memory_locked()));
  options_.metrics->gauge("llmpool_pool_memory_budget_bytes", "pool.memory_budget; 0 is unlimited.")
      .set(static_cast<double>(pool_config_.memory_budget_bytes));
}

void ModelPool::loader_main() {
  for (;;) {
    std::pair<EntryPtr, uint64_t> job;
    std::vector<ProviderPtr> drop;
    {
      std::unique_lock<std::mutex> lock(mu_);
      loader_cv_.wait(lock, [this] { return stopping_ || !load_queue_.empty() || !graveyard_.empty(); });
      if (stopping_) return;
      drop = take_graveyard_locked();
      if (!load_queue_.empty()) {
        job = std::move(load_queue_.front());
        load_queue_.pop_front();
      }
    }
    drop.clear();  // evicted models free their memory before the next one loads
    if (job.first) run_load(job.first, job.second);
  }
}

void ModelPool::housekeeping_main() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    housekeeping_cv_.wait_for(lock, options_.tick_interval);
    if (stopping_) break;
    lock.unlock();
    tick();
    lock.lock();
  }
}

std::vector<providers::ModelEntry> ModelPool::list() const {
  std::vector<std::pair<providers::ModelEntry, ProviderPtr>> rows;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& e : entries_) {
      providers::ModelEntry m;
      m.info = e->provider ? e->provider->info() : info_from_config(e->cfg);
      m.state = model_state_name(e->state);
      m.error = e->error;
      rows.emplace_back(std::move(m), e->provider);
    }
  }
  std::vector<providers::ModelEntry> out;
  for (auto& [m, p] : rows) {
    if (p) m.stats = p->stats();
    out.push_back(std::move(m));
  }
  return out;
}

PoolStatus ModelPool::status() const {
  PoolStatus s;
  std::vector<ProviderPtr> providers;
  {
    std::lock_guard<std::mutex> lock(mu_);
    s.config = pool_config_;
    s.memory_used_bytes = used_memory_locked();
    s.loaded_local_models = loaded_local_locked();
    for (const auto& r : retired_) s.retired_busy += r.usage->in_flight.load() > 0;
    for (const auto& e : entries_) {
      ModelStatus m;
      m.config = e->cfg;
      m.state = e->state;
      m.memory_bytes = (e->state == ModelState::kReady || e->state == ModelState::kLoading) ? e->memory_bytes : 0;
      m.in_flight = e->usage ? e->usage->in_flight.load() : 0;
      m.waiting_for_load = static_cast<int64_t>(e->waiters.size());
      m.last_used = e->last();
      m.error = e->error;
      s.models.push_back(std::move(m));
      providers.push_back(e->provider);
    }
  }
  for (size_t i = 0; i < providers.size(); ++i)
    if (providers[i]) s.models[i].stats = providers[i]->stats();
  return s;
}

}  // namespace llmpool::pool
