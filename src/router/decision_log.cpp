#include "router/decision_log.h"

#include <algorithm>
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
    : path_(std::move(path)), options_(options), file_(file), max_bytes_(options.max_bytes), keep_(options.keep) {
  std::error_code ec;
  auto size = std::filesystem::file_size(path_, ec);
  file_bytes_ = ec ? 0 : size;  // appending to what an earlier run left
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
  if (file_ != nullptr) std::fclose(file_);
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
  int64_t lost = write_locked(batch);
  if (file_ != nullptr) std::fflush(file_);
  std::lock_guard lock(mu_);
  written_ += lines - lost;
  dropped_ += lost;
}

int64_t DecisionLog::write_locked(const std::string& batch) {
  auto lines_from = [&batch](size_t pos) {
    return static_cast<int64_t>(std::count(batch.begin() + static_cast<std::ptrdiff_t>(pos), batch.end(), '\n'));
  };
  if (file_ == nullptr) {  // a rotation failed to open the new file: try again
    file_ = std::fopen(path_.c_str(), "ab");
    if (file_ == nullptr) return lines_from(0);
    file_bytes_ = 0;
  }
  size_t pos = 0;
  while (pos < batch.size()) {
    size_t end = batch.size();
    if (max_bytes_ > 0 && file_bytes_ + (end - pos) > max_bytes_) {
      // The longest run of whole lines that still fits, else a new file.
      const uint64_t room = file_bytes_ < max_bytes_ ? max_bytes_ - file_bytes_ : 0;
      size_t cut = room > 0 ? batch.rfind('\n', pos + room - 1) : std::string::npos;
      if (cut == std::string::npos || cut < pos) {
        if (file_bytes_ > 0) {
          if (!rotate_locked()) return lines_from(pos);
          continue;
        }
        cut = batch.find('\n', pos);  // one line longer than max_bytes: a file of its own
      }
      end = cut + 1;
    }
    std::fwrite(batch.data() + pos, 1, end - pos, file_);
    file_bytes_ += end - pos;
    pos = end;
  }
  return 0;
}

bool DecisionLog::rotate_locked() {
  std::fclose(file_);
  file_ = nullptr;
  std::error_code ec;
  auto numbered = [this](int32_t i) { return path_ + "." + std::to_string(i); };
  if (keep_ == 0) {
    std::filesystem::remove(path_, ec);
  } else {
    std::filesystem::remove(numbered(keep_), ec);
    for (int32_t i = keep_ - 1; i >= 1; --i)
      if (std::filesystem::exists(numbered(i), ec)) std::filesystem::rename(numbered(i), numbered(i + 1), ec);
    std::filesystem::rename(path_, numbered(1), ec);
  }
  {
    std::lock_guard lock(mu_);
    ++rotations_;
  }
  file_ = std::fopen(path_.c_str(), "ab");
  file_bytes_ = 0;
  return file_ != nullptr;
}

void DecisionLog::set_rotation(uint64_t max_bytes, int32_t keep) {
  std::lock_guard wl(write_mu_);
  max_bytes_ = max_bytes;
  keep_ = keep;
}

int64_t DecisionLog::rotations() const {
  std::lock_guard lock(mu_);
  return rotations_;
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
