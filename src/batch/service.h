// BatchService: the OpenAI Batch API's life cycle over a BatchStore and a
// JobRunner (docs/batch.md).
//
//   create  -> validating: the input file is checked line by line on the
//              service's thread; any bad line -> failed, with
//              errors.data[] {code, message, line}.
//           -> in_progress: one job per line goes to the runner; results
//              come back through the runner's sink and are stored once.
//           -> finalizing -> completed: output and error files written.
//   cancel  -> cancelling: nothing more is submitted, the runner drops what
//              has not started; once the rest is in (or cancel_grace has
//              passed) -> cancelled, with the partial output.
//   expiry  -> expired once completion_window has passed: the runner drops
//              what is pending and the batch ends with what it has.
//
// A restart loses nothing: start() resubmits the jobs of in_progress batches
// that have no result (the runner and the store are idempotent by job id),
// validates batches still validating and ends those that were ending.
//
// Thread-safe. The service's own thread validates, finalizes and expires;
// the API calls (upload, create, cancel, reads through store()) run on the
// caller's thread and block only on SQLite. The runner must not call the
// sink after stop() returns (LocalJobRunner::stop, the fabric's close).
#pragma once

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>

#include "batch/job_runner.h"
#include "batch/store.h"

namespace llmpool::batch {

// Bounds on what a client may upload and batch (config `batch:`).
struct BatchLimits {
  int64_t max_file_bytes = 8 << 20;    // one uploaded file
  int64_t max_lines = 50000;           // requests in one input file
  int64_t max_line_bytes = 1 << 20;    // one line of an input file
};

// The endpoints a batch may target.
bool is_batch_endpoint(const std::string& endpoint);

struct CreateBatch {
  std::string input_file_id;
  std::string endpoint;
  std::string completion_window = "24h";
  std::string metadata = "null";  // JSON text: null or an object of strings (checked by the caller)
};

class BatchService {
 public:
  struct Options {
    BatchLimits limits;
    std::function<int64_t()> now_unix;  // wall clock in seconds; empty: the system clock
    std::chrono::milliseconds tick{1000};  // how often the service's thread looks for work
    int64_t cancel_grace_seconds = 60;     // how long a cancel waits for running lines
  };

  BatchService(std::unique_ptr<BatchStore> store, std::shared_ptr<JobRunner> runner, Options options);
  ~BatchService();  // stop()

  // Installs the result sink, resubmits unfinished work and starts the thread.
  Status start();
  void stop();

  // POST /v1/files. InvalidArgument for an unsupported purpose or a file
  // over limits.max_file_bytes.
  Result<FileRecord> upload(const std::string& tenant, const std::string& purpose, const std::string& filename,
                            std::string_view content);
  // POST /v1/batches. NotFound for an input file the tenant does not have;
  // InvalidArgument for a file of another purpose, an unknown endpoint or a
  // completion_window other than "24h".
  Result<BatchRecord> create(const std::string& tenant, const CreateBatch& request);
  // POST /v1/batches/{id}/cancel. A batch already cancelling or cancelled
  // comes back as it is; one that has ended otherwise is InvalidArgument.
  Result<BatchRecord> cancel(const std::string& tenant, const std::string& id);

  BatchStore& store() { return *store_; }
  const BatchLimits& limits() const { return options_.limits; }
  // Makes the service's thread look for work now (tests, after a result).
  void wake();

 private:
  int64_t now() const;
  void run();
  void pass();
  void validate(BatchRecord batch);
  void submit_pending(const std::string& batch_id);
  void finish(const std::string& batch_id, bool force);
  void expire(BatchRecord batch);
  Status on_result(const JobResult& result);

  std::unique_ptr<BatchStore> store_;
  std::shared_ptr<JobRunner> runner_;
  Options options_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;
  bool woken_ = false;
  std::set<std::string> recovered_cancels_;  // cancelling at start: end at once; guarded by mu_
  std::thread thread_;
};

}  // namespace llmpool::batch
