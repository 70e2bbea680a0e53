#include "router/decision_log.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace llmpool::router {

Result<std::unique_ptr<DecisionLog>> DecisionLog::open(const std::string& path, Options options) {
  std::error_code ec;
  std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent, ec);
  std::FILE* f = std::fopen(path.c_str(), "ab");
  if (f == nullptr)
    return Status::unavailable("cannot open the decision log " + path + ": " + std::strerror(errno));
  return std::unique_ptr<DecisionLog>(new DecisionLog(path, f, options));
}

DecisionLog::DecisionLog(std::string path, std::FILE* file, Options options)
    : path_(std::move(path)), file_(file), options_(options) {
  thread_ = std::thread([this] { run(); });
}

DecisionLog::~DecisionLog() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  thread_.join();
  flush();
  std::fclose(file_);
}

void DecisionLog::append(std::string line) {
  bool wake = false;
  {
    std::lock_guard lock(mu_);
    if (buffer_.size() + line.size() + 1 > options_.max_buffer) {
      ++dropped_;
      return;
    }
    buffer_ += line;
    buffer_ += '\n';
    ++buffered_lines_;
    wake = buffer_.size() >= options_.flush_bytes;
  }
  if (wake) cv_.notify_all();
}

void DecisionLog::flush() {
  // The writer lock is taken before the buffer is swapped, so batches reach
  // the file in the order they were appended.
  std::lock_guard wl(write_mu_);
  std::string batch;
  int64_t lines = 0;
  {
    std::lock_guard lock(mu_);
    batch.swap(buffer_);
    std::swap(lines, buffered_lines_);
  }
  if (batch.empty()) return;
  std::fwrite(batch.data(), 1, batch.size(), file_);
  std::fflush(file_);
  std::lock_guard lock(mu_);
  written_ += lines;
}

void DecisionLog::run() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    cv_.wait_for(lock, options_.flush_interval, [this] { return stop_ || buffer_.size() >= options_.flush_bytes; });
    if (buffer_.empty()) continue;
    lock.unlock();
    flush();
    lock.lock();
  }
}

int64_t DecisionLog::written() const {
  std::lock_guard lock(mu_);
  return written_;
}

int64_t DecisionLog::dropped() const {
  std::lock_guard lock(mu_);
  return dropped_;
}

}  // namespace llmpool::router
