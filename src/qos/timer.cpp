#include "qos/timer.h"

namespace llmpool::qos {

ThreadTimer::ThreadTimer() : thread_([this] { loop(); }) {}

ThreadTimer::~ThreadTimer() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
    tasks_.clear();
    due_of_.clear();
  }
  cv_.notify_all();
  thread_.join();
}

Timer::TaskId ThreadTimer::schedule_after(Clock::Duration delay, std::function<void()> fn) {
  TaskId id;
  {
    std::lock_guard lock(mu_);
    id = next_id_++;
    auto due = std::chrono::steady_clock::now() + (delay < Clock::Duration::zero() ? Clock::Duration::zero() : delay);
    tasks_.emplace(std::make_pair(due, id), std::move(fn));
    due_of_.emplace(id, due);
  }
  cv_.notify_all();
  return id;
}

bool ThreadTimer::cancel(TaskId id) {
  std::lock_guard lock(mu_);
  auto it = due_of_.find(id);
  if (it == due_of_.end()) return false;
  tasks_.erase({it->second, id});
  due_of_.erase(it);
  return true;
}

void ThreadTimer::loop() {
  std::unique_lock lock(mu_);
  while (!stop_) {
    if (tasks_.empty()) {
      cv_.wait(lock);
      continue;
    }
    auto first = tasks_.begin();
    // A copy: wait_until reads the time again after waking, and by then
    // cancel() (or the destructor) may have erased the task that held it.
    const auto due = first->first.first;
    if (due > std::chrono::steady_clock::now()) {
      cv_.wait_until(lock, due);
      continue;
    }
    auto fn = std::move(first->second);
    due_of_.erase(first->first.second);
    tasks_.erase(first);
    lock.unlock();
    fn();
    lock.lock();
  }
}

Timer::TaskId ManualTimer::schedule_after(Clock::Duration delay, std::function<void()> fn) {
  std::lock_guard lock(mu_);
  TaskId id = next_id_++;
  auto due = clock_.now() + (delay < Clock::Duration::zero() ? Clock::Duration::zero() : delay);
  tasks_.emplace(std::make_pair(due, id), std::move(fn));
  due_of_.emplace(id, due);
  return id;
}

bool ManualTimer::cancel(TaskId id) {
  std::lock_guard lock(mu_);
  auto it = due_of_.find(id);
  if (it == due_of_.end()) return false;
  tasks_.erase({it->second, id});
  due_of_.erase(it);
  return true;
}

size_t ManualTimer::advance(Clock::Duration d) {
  const Clock::TimePoint target = clock_.now() + (d < Clock::Duration::zero() ? Clock::Duration::zero() : d);
  size_t ran = 0;
  for (;;) {
    std::function<void()> fn;
    {
      std::lock_guard lock(mu_);
      auto first = tasks_.begin();
      if (first == tasks_.end() || first->first.first > target) break;
      clock_.set(first->first.first);
      fn = std::move(first->second);
      due_of_.erase(first->first.second);
      tasks_.erase(first);
    }
    fn();  // outside the lock: it may schedule more work
    ++ran;
  }
  clock_.set(target);
  return ran;
}

size_t ManualTimer::pending() const {
  std::lock_guard lock(mu_);
  return tasks_.size();
}

Clock::TimePoint ManualTimer::next_due() const {
  std::lock_guard lock(mu_);
  return tasks_.empty() ? Clock::TimePoint::max() : tasks_.begin()->first.first;
}

}  // namespace llmpool::qos
