#include "batch/local_runner.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace llmpool::batch {

struct LocalJobRunner::State {
  std::mutex mu;
  std::condition_variable cv;
  ResultSink sink;
  std::deque<Entry> queue;
  std::set<std::string> known;  // queued or running
  int running = 0;
  int delivering = 0;  // sink calls in progress
  bool stopped = false;

  // Hands `result` to the sink unless stopped; waits for nothing.
  void deliver(const JobResult& result) {
    {
      std::lock_guard lock(mu);
      if (stopped) return;
      ++delivering;
    }
    Status s = sink ? sink(result) : Status::internal("no result sink");
    // The store is local: a failure here is a full disk or a broken file,
    // which another try a moment later does not fix. The job stays without
    // a result and runs again on the next start.
    if (!s) spdlog::error("batch: cannot store the result of job {}: {}", result.id, s.message());
    std::lock_guard lock(mu);
    --delivering;
    cv.notify_all();
  }
};

LocalJobRunner::LocalJobRunner(Dispatch dispatch, Options options)
    : dispatch_(std::move(dispatch)), options_(options), state_(std::make_shared<State>()) {
  options_.max_concurrent = std::max(1, options_.max_concurrent);
  options_.max_attempts = std::max(1, options_.max_attempts);
  thread_ = std::thread([this] { run(); });
}

LocalJobRunner::~LocalJobRunner() { stop(); }

void LocalJobRunner::set_result_sink(ResultSink sink) {
  std::lock_guard lock(state_->mu);
  state_->sink = std::move(sink);
}

Status LocalJobRunner::submit(const Job& job) {
  std::lock_guard lock(state_->mu);
  if (state_->stopped) return Status::unavailable("the batch runner is stopping");
  if (!state_->known.insert(job.id).second) return Status::ok();  // already queued or running
  state_->queue.push_back(Entry{job, 0, {}});
  state_->cv.notify_all();
  return Status::ok();
}

void LocalJobRunner::cancel(const std::vector<std::string>& job_ids) {
  std::set<std::string> ids(job_ids.begin(), job_ids.end());
  std::vector<std::string> dropped;
  {
    std::lock_guard lock(state_->mu);
    auto& q = state_->queue;
    for (auto it = q.begin(); it != q.end();) {
      if (ids.count(it->job.id)) {
        dropped.push_back(it->job.id);
        state_->known.erase(it->job.id);
        it = q.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (const auto& id : dropped)
    state_->deliver(JobResult{id, 499, R"({"error":{"message":"the batch was cancelled before this request ran",)"
                                       R"("type":"invalid_request_error","param":null,"code":"batch_cancelled"}})"});
}

void LocalJobRunner::stop() {
  {
    std::unique_lock lock(state_->mu);
    if (state_->stopped && !thread_.joinable()) return;
    state_->stopped = true;
    state_->queue.clear();
    state_->cv.notify_all();
    state_->cv.wait(lock, [&] { return state_->delivering == 0; });
  }
  if (thread_.joinable()) thread_.join();
}

void LocalJobRunner::run() {
  std::shared_ptr<State> st = state_;
  std::unique_lock lock(st->mu);
  while (!st->stopped) {
    auto now = std::chrono::steady_clock::now();
    auto ready = std::find_if(st->queue.begin(), st->queue.end(),
                              [&](const Entry& e) { return e.not_before <= now; });
    if (st->running >= options_.max_concurrent || ready == st->queue.end()) {
      // Wake for a finished job, a new one, stop, or the next retry.
      auto next = std::chrono::steady_clock::time_point::max();
      for (const Entry& e : st->queue) next = std::min(next, e.not_before);
      if (st->running < options_.max_concurrent && next != std::chrono::steady_clock::time_point::max())
        st->cv.wait_until(lock, next);
      else
        st->cv.wait(lock);
      continue;
    }
    Entry entry = std::move(*ready);
    st->queue.erase(ready);
    ++entry.attempts;
    ++st->running;
    lock.unlock();
    const int max_attempts = options_.max_attempts;
    const auto delay = options_.retry_delay;
    auto answered = std::make_shared<std::once_flag>();
    Job job = entry.job;
    dispatch_(job, [st, entry, answered, max_attempts, delay](int32_t status, std::string body) mutable {
      std::call_once(*answered, [&] {
        bool retry = (status == 429 || status == 503) && entry.attempts < max_attempts;
        {
          std::lock_guard l(st->mu);
          --st->running;
          if (retry && !st->stopped) {
            entry.not_before = std::chrono::steady_clock::now() + delay;
            st->queue.push_back(std::move(entry));
            st->cv.notify_all();
            return;
          }
          st->known.erase(entry.job.id);
          st->cv.notify_all();
        }
        st->deliver(JobResult{entry.job.id, status, std::move(body)});
      });
    });
    lock.lock();
  }
}

}  // namespace llmpool::batch
