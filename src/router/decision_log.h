// DecisionLog: the routing decision log, one JSON object per line (JSONL)
// appended to a file. append() only copies the line into a buffer under a
// mutex; a background thread writes the buffer out every `flush_interval`
// (or sooner once it holds `flush_bytes`), so the request path never waits
// on the disk. flush() writes what is buffered now; the destructor flushes
// and joins the thread, so nothing appended is lost on an orderly shutdown.
//
// open() fails with Unavailable when the file cannot be opened for appending
// (its folder is created if missing). Lines that do not fit in `max_buffer`
// bytes while the disk is behind are dropped and counted (dropped()).
//
// Rotation by size: a write that would take the file past `max_bytes`
// first renames it to `path.1` (`path.1` to `path.2`, ..., up to `keep`
// files; the oldest is deleted) and starts a new one, so every file holds
// whole lines and at most max_bytes (a single longer line gets a file of
// its own). keep 0 deletes the full file instead; max_bytes 0 never rotates.
// The disk holds at most about max_bytes * (keep + 1). If the new file
// cannot be opened, lines are dropped (and counted) until a later rotation
// succeeds.
//
// Thread-safe. Owned by the router service.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "common/status.h"

namespace llmpool::router {

class DecisionLog {
 public:
  struct Options {
    std::chrono::milliseconds flush_interval{1000};
    size_t flush_bytes = 64 * 1024;       // wake the writer early past this much
    size_t max_buffer = 16 * 1024 * 1024; // drop lines past this much unwritten
    uint64_t max_bytes = 64ull << 20;     // rotate past this size (0: never)
    int32_t keep = 3;                     // rotated files kept: path.1 (newest) .. path.keep
  };

  static Result<std::unique_ptr<DecisionLog>> open(const std::string& path, Options options);
  static Result<std::unique_ptr<DecisionLog>> open(const std::string& path) { return open(path, Options{}); }
  ~DecisionLog();
  DecisionLog(const DecisionLog&) = delete;
  DecisionLog& operator=(const DecisionLog&) = delete;

  // Queues one line (a newline is added). Never blocks on I/O.
  void append(std::string line);
  // Writes everything queued so far and fflush()es the file.
  void flush();

  // Changes the rotation limits (a reload); the next write applies them.
  void set_rotation(uint64_t max_bytes, int32_t keep);

  const std::string& path() const { return path_; }
  int64_t rotations() const;  // files rotated away
  int64_t written() const;  // lines written to the file
  int64_t dropped() const;  // lines dropped because the buffer was full

 private:
  DecisionLog(std::string path, std::FILE* file, Options options);
  void run();
  // Writes `batch` (whole lines), rotating where it must. Under write_mu_;
  // returns the lines dropped because no file could be opened.
  int64_t write_locked(const std::string& batch);
  bool rotate_locked();

  const std::string path_;
  const Options options_;
  std::mutex write_mu_;  // serialises writers of the file (the thread and flush())
  std::FILE* file_;      // null after a failed rotation; guarded by write_mu_
  uint64_t file_bytes_ = 0;  // guarded by write_mu_
  uint64_t max_bytes_;   // guarded by write_mu_
  int32_t keep_;         // guarded by write_mu_
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::string buffer_;   // guarded by mu_
  int64_t buffered_lines_ = 0;  // guarded by mu_
  int64_t written_ = 0;  // guarded by mu_
  int64_t dropped_ = 0;  // guarded by mu_
  int64_t rotations_ = 0;  // guarded by mu_
  bool stop_ = false;    // guarded by mu_
  std::thread thread_;
};

}  // namespace llmpool::router
