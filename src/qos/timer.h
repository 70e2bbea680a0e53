// Timer: runs a callback after a delay. The hedging and deadline logic of
// the ensemble runner take a Timer by injection so that tests drive time by
// hand (ManualTimer) while production uses a real one (ThreadTimer, or an
// adapter over an Asio steady_timer written by whoever wires the server).
//
// schedule_after() returns an id; cancel(id) prevents a callback that has
// not started yet (true) and is a no-op otherwise (false). Callbacks run on
// the timer's thread (ThreadTimer) or on the thread that calls
// ManualTimer::advance(); they must be quick and must not block on the
// timer. A callback may schedule or cancel other callbacks.
//
// Thread-safe. ThreadTimer's destructor drops pending callbacks and joins
// its thread; ManualTimer needs its ManualClock to outlive it.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <thread>
#include <utility>

#include "qos/clock.h"

namespace llmpool::qos {

class Timer {
 public:
  using TaskId = uint64_t;
  virtual ~Timer() = default;
  virtual TaskId schedule_after(Clock::Duration delay, std::function<void()> fn) = 0;
  virtual bool cancel(TaskId id) = 0;
};

// A real timer with one background thread and the steady clock.
class ThreadTimer final : public Timer {
 public:
  ThreadTimer();
  ~ThreadTimer() override;
  ThreadTimer(const ThreadTimer&) = delete;
  ThreadTimer& operator=(const ThreadTimer&) = delete;

  TaskId schedule_after(Clock::Duration delay, std::function<void()> fn) override;
  bool cancel(TaskId id) override;

 private:
  void loop();

  std::mutex mu_;
  std::condition_variable cv_;
  // (due, id) -> task: ordered by due time, then by scheduling order.
  std::map<std::pair<Clock::TimePoint, TaskId>, std::function<void()>> tasks_;
  std::map<TaskId, Clock::TimePoint> due_of_;
  TaskId next_id_ = 1;
  bool stop_ = false;
  std::thread thread_;
};

// A timer for tests: nothing runs until advance() moves the clock.
class ManualTimer final : public Timer {
 public:
  explicit ManualTimer(ManualClock& clock) : clock_(clock) {}

  TaskId schedule_after(Clock::Duration delay, std::function<void()> fn) override;
  bool cancel(TaskId id) override;

  // Moves the clock forward by `d`, stopping at each due time on the way to
  // run what is due then, in due order (ties in scheduling order). Returns
  // how many callbacks ran.
  size_t advance(Clock::Duration d);
  // Runs the callbacks due at the current time.
  size_t run_due() { return advance(Clock::Duration::zero()); }
  size_t pending() const;
  // When the next callback is due, or TimePoint::max() if none.
  Clock::TimePoint next_due() const;

 private:
  ManualClock& clock_;
  mutable std::mutex mu_;
  std::map<std::pair<Clock::TimePoint, TaskId>, std::function<void()>> tasks_;
  std::map<TaskId, Clock::TimePoint> due_of_;
  TaskId next_id_ = 1;
};

}  // namespace llmpool::qos
