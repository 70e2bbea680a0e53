#include "pool/config_watcher.h"

#include <spdlog/spdlog.h>
#include <sys/stat.h>

namespace llmpool::pool {

namespace {
constexpr const char* kReloadsHelp = "Config reloads, by result (ok; failed: refused, or its routing part was).";
}  // namespace

ConfigWatcher::ConfigWatcher(config::Config current, ModelPool& pool, Options options)
    : pool_(pool), options_(std::move(options)), current_(std::move(current)) {
  applied_ = stamp_of(current_.path);
  pending_ = applied_;
  if (options_.metrics) {  // both series exist from the start, so rates and alerts work at once
    for (const char* result : {"ok", "failed"})
      options_.metrics->counter("llmpool_config_reloads_total", kReloadsHelp,
                                {{"result", result}});
  }
}

ConfigWatcher::~ConfigWatcher() { stop(); }

ConfigWatcher::Stamp ConfigWatcher::stamp_of(const std::string& path) {
  Stamp s;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return s;
  s.exists = true;
  s.size = static_cast<uint64_t>(st.st_size);
  s.mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  s.inode = static_cast<uint64_t>(st.st_ino);
  return s;
}

void ConfigWatcher::start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (thread_.joinable() || stopping_) return;
  thread_ = std::thread([this] { run(); });
}

void ConfigWatcher::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

void ConfigWatcher::run() {
  std::unique_lock<std::mutex> lock(mu_);
  while (!stopping_) {
    int32_t ms = current_.server.config_poll_ms;
    // With polling off, wake now and then in case a reload turns it back on.
    cv_.wait_for(lock, std::chrono::milliseconds(ms > 0 ? ms : 1000));
    if (stopping_ || current_.server.config_poll_ms == 0) continue;
    lock.unlock();
    poll();
    lock.lock();
  }
}

void ConfigWatcher::poll() {
  std::string path;
  {
    std::lock_guard<std::mutex> lock(mu_);
    path = current_.path;
  }
  Stamp now = stamp_of(path);
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (now == applied_) {
      pending_ = now;
      return;
    }
    if (!(now == pending_)) {  // changed since the last poll: wait until it settles
      pending_ = now;
      return;
    }
  }
  if (!now.exists) {
    // A missing file (an editor's rename in progress, or deleted): keep the
    // running config; it is read again once it is back.
    return;
  }
  spdlog::info("config file {} changed; reloading", path);
  (void)reload();
}

void ConfigWatcher::count(bool ok) {
  if (!options_.metrics) return;
  options_.metrics
      ->counter("llmpool_config_reloads_total", kReloadsHelp,
                {{"result", ok ? "ok" : "failed"}})
      .inc();
  options_.metrics->gauge("llmpool_config_last_reload_ok", "1 if the last config reload was applied, 0 if refused.")
      .set(ok ? 1.0 : 0.0);
}

Status ConfigWatcher::reload() {
  std::lock_guard<std::mutex> serial(reload_mu_);
  config::Config previous = current();
  Stamp stamp = stamp_of(previous.path);
  config::LoadResult loaded = config::load_config(previous.path, options_.check_files);
  {
    std::lock_guard<std::mutex> lock(mu_);
    applied_ = stamp;
    pending_ = stamp;
  }
  if (!loaded.ok()) {
    for (const auto& issue : loaded.issues) spdlog::error("config reload: {}", issue.to_string());
    spdlog::error("config reload refused: {} problem(s) in {}; still serving the previous configuration",
                  loaded.issues.size(), previous.path);
    count(false);
    std::string first = loaded.issues.front().to_string();
    return Status::invalid_argument(std::to_string(loaded.issues.size()) + " problem(s) in " + previous.path +
                                    ", the first: " + first);
  }
  config::Config next = std::move(loaded.config);
  config::ServerConfig a = previous.server, b = next.server;
  a.config_poll_ms = b.config_poll_ms = 0;
  if (!(a == b)) spdlog::warn("config reload: changes to server: take effect at the next restart");
  pool_.apply(next);
  Status applied = options_.on_applied ? options_.on_applied(previous, next) : Status::ok();
  {
    std::lock_guard<std::mutex> lock(mu_);
    current_ = next;
  }
  cv_.notify_all();  // the poll interval may have changed
  count(applied.is_ok());
  if (!applied)
    spdlog::error("config reload of {} counted as failed: the models were applied, but not all of the rest: {}",
                  previous.path, applied.message());
  return applied;
}

config::Config ConfigWatcher::current() const {
  std::lock_guard<std::mutex> lock(mu_);
  return current_;
}

}  // namespace llmpool::pool
