// ConfigWatcher: hot reload with rollback. Watches the config file (polls
// its size, mtime and inode) and reloads it when it changes and has stayed
// unchanged for one more poll (so a file caught half-written is not read),
// or at once when reload() is called (serve calls it on SIGHUP).
//
// A reload parses and validates the whole file first. An invalid file
// changes nothing: every issue is logged and the failure is counted in
// llmpool_config_reloads_total{result="failed"}. A valid file is applied to
// the ModelPool as a diff (ModelPool::apply), then handed to `on_applied`
// (serve applies the routing part there). When on_applied refuses its part,
// the reload counts as failed too and reload() returns that error: the
// pool runs the new models, the refused part keeps its previous state (the
// file is still the one the watcher compares against, so the next change,
// or SIGHUP, tries again). Changes to `server:` need a restart (logged),
// except config_poll_ms.
//
// Thread-safe; reloads are serialised. start() runs the polling thread;
// stop() (and the destructor) joins it. The pool and the metrics registry
// must outlive the watcher.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "config/config.h"
#include "obs/metrics.h"
#include "pool/model_pool.h"

namespace llmpool::pool {

class ConfigWatcher {
 public:
  struct Options {
    obs::MetricsRegistry* metrics = nullptr;
    bool check_files = true;  // as load_config(): local model files must exist
    // Called after a valid file was applied to the pool, with the previous
    // and new config. An error (logged by the caller) makes the reload count
    // as failed.
    std::function<Status(const config::Config& previous, const config::Config& next)> on_applied;
  };

  // `current` is the config the pool was built from (its `path` is watched).
  ConfigWatcher(config::Config current, ModelPool& pool, Options options);
  ~ConfigWatcher();
  ConfigWatcher(const ConfigWatcher&) = delete;
  ConfigWatcher& operator=(const ConfigWatcher&) = delete;

  // Starts polling every server.config_poll_ms (no thread when it is 0).
  void start();
  void stop();

  // Reloads the file now. Ok when applied; InvalidArgument listing the
  // problems when the file is invalid (then nothing changed); on_applied's
  // error when it refused its part.
  Status reload();
  // Polls once: reloads if the file changed and is stable (tests call this).
  void poll();

  config::Config current() const;

 private:
  struct Stamp {
    bool exists = false;
    uint64_t size = 0;
    int64_t mtime_ns = 0;
    uint64_t inode = 0;
    bool operator==(const Stamp&) const = default;
  };
  static Stamp stamp_of(const std::string& path);
  void run();
  void count(bool ok);

  ModelPool& pool_;
  Options options_;
  std::mutex reload_mu_;             // serialises reloads
  mutable std::mutex mu_;
  std::condition_variable cv_;
  config::Config current_;           // guarded by mu_
  Stamp applied_;                    // the file as last read; guarded by mu_
  Stamp pending_;                    // a change seen once, waiting to be stable; guarded by mu_
  bool stopping_ = false;            // guarded by mu_
  std::thread thread_;
};

}  // namespace llmpool::pool
