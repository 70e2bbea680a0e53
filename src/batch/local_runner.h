// LocalJobRunner: the JobRunner of a server without a fabric. It runs each
// job in-process through `dispatch` (the server passes the route table, so a
// batch line takes the path a client's request takes: admission, routing,
// the model's provider), at most `max_concurrent` at once, in submission
// order. A job answered 429 or 503 (admission full, a model loading) is
// tried again after `retry_delay`, up to `max_attempts` times in all; its
// last answer is its result.
//
// Jobs live in memory only: after a restart the Batch service resubmits
// the ones without a stored result (the store is the durable part). submit()
// of an id already queued or running is ignored. cancel() drops queued jobs,
// each yielding a 499 result; running ones finish.
//
// Thread-safe. The dispatcher thread starts jobs; `dispatch` may answer on
// any thread, also synchronously. stop() (or the destructor) stops starting
// jobs and waits for sink calls in progress; answers that arrive later are
// dropped (they are resubmitted on the next start).
#pragma once

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <thread>

#include "batch/job_runner.h"

namespace llmpool::batch {

class LocalJobRunner : public JobRunner {
 public:
  // Runs `job` and calls `done` once with its result (status code and body).
  using Done = std::function<void(int32_t status_code, std::string body)>;
  using Dispatch = std::function<void(const Job& job, Done done)>;

  struct Options {
    int max_concurrent = 4;
    int max_attempts = 5;
    std::chrono::milliseconds retry_delay{1000};
  };

  LocalJobRunner(Dispatch dispatch, Options options);
  ~LocalJobRunner() override;

  void set_result_sink(ResultSink sink) override;
  Status submit(const Job& job) override;
  void cancel(const std::vector<std::string>& job_ids) override;
  void stop();

 private:
  struct Entry {
    Job job;
    int attempts = 0;
    std::chrono::steady_clock::time_point not_before{};
  };
  struct State;
  void run();

  Dispatch dispatch_;
  Options options_;
  std::shared_ptr<State> state_;  // shared with the answers in flight
  std::thread thread_;
};

}  // namespace llmpool::batch
