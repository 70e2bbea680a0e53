// BatchStore: the Files and Batch APIs' state in SQLite (data_dir/batch.db,
// WAL, versioned migrations): uploaded and generated files (content as a
// BLOB beside its metadata, so a file and its row are written in one
// transaction), batches with every OpenAI Batch field, one job per input
// line, and each job's result, stored once (INSERT OR IGNORE by job id).
//
// Every read and write a client can cause takes the tenant: a row of
// another tenant is NotFound, exactly like a missing one. The tenant ""
// is the one tenant there is without tenancy.
//
// Thread-safe (one mutex around the connection); every call blocks on
// SQLite, which is quick for metadata and proportional to the size of the
// file it reads or writes.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "batch/job_runner.h"
#include "common/status.h"

namespace llmpool::batch {

// The statuses of a batch, as OpenAI names them.
inline constexpr const char* kValidating = "validating";
inline constexpr const char* kInProgress = "in_progress";
inline constexpr const char* kFinalizing = "finalizing";
inline constexpr const char* kCompleted = "completed";
inline constexpr const char* kFailed = "failed";
inline constexpr const char* kCancelling = "cancelling";
inline constexpr const char* kCancelled = "cancelled";
inline constexpr const char* kExpired = "expired";

struct FileRecord {
  std::string id;        // "file-..."
  std::string tenant;
  std::string purpose;   // "batch", or "batch_output" for what a batch wrote
  std::string filename;
  int64_t bytes = 0;
  int64_t created_at = 0;  // unix seconds
};

struct BatchRecord {
  std::string id;  // "batch_..."
  std::string tenant;
  std::string endpoint;
  std::string input_file_id;
  std::string completion_window = "24h";
  std::string status = kValidating;
  std::optional<std::string> output_file_id;
  std::optional<std::string> error_file_id;
  int64_t created_at = 0;
  std::optional<int64_t> in_progress_at, expires_at, finalizing_at, completed_at, failed_at, expired_at,
      cancelling_at, cancelled_at;
  int64_t total = 0;      // request_counts.total
  int64_t completed = 0;  // request_counts.completed: lines answered 2xx
  int64_t failed = 0;     // request_counts.failed: lines answered otherwise
  int64_t cancelled = 0;  // lines the runner dropped (status 499); not an OpenAI field
  std::string metadata = "null";  // JSON text: null or an object of strings
  std::string errors = "null";    // JSON text: null or {"object":"list","data":[...]}

  // Lines with a result of any kind.
  int64_t done() const { return completed + failed + cancelled; }
};

// One line of an input file, as a job.
struct JobRecord {
  std::string id;  // "<batch id>:<line index>"
  int64_t line = 0;  // 1-based line number in the input file
  std::string custom_id;
  std::string model;
  std::string body;  // JSON text of the line's body
};

// A job and its result, when it has one.
struct LineOutcome {
  JobRecord job;
  std::optional<JobResult> result;
};

// A file a batch writes when it ends, with its content.
struct NewFile {
  FileRecord record;
  std::string content;
};

// What finalize()'s builder returns: the files to store (either may be
// absent) and the batch as it should be saved.
struct Finalized {
  std::optional<NewFile> output;
  std::optional<NewFile> errors;
};

// What put_result() did.
struct ResultStored {
  bool stored = false;   // false: a duplicate, an unknown job, or a batch that has ended
  std::string batch_id;  // "" for an unknown job
  bool batch_done = false;  // every line of the batch now has a result
};

struct Page {
  std::string after;  // an id: list what comes after it; "" from the start
  int64_t limit = 20;
  bool ascending = false;  // files only; batches list newest first
};

class BatchStore {
 public:
  // Opens (creating) data_dir/batch.db, owner-only, and migrates it.
  static Result<std::unique_ptr<BatchStore>> open(const std::string& data_dir);
  ~BatchStore();

  static int current_schema_version();
  Result<int> schema_version();

  // Files. add_file fails with AlreadyExists for a taken id.
  Status add_file(const FileRecord& file, std::string_view content);
  Result<FileRecord> get_file(const std::string& tenant, const std::string& id);
  Result<std::string> file_content(const std::string& tenant, const std::string& id);
  // Up to page.limit + 1 files (the extra one tells has_more); `purpose`
  // "" lists every purpose.
  Result<std::vector<FileRecord>> list_files(const std::string& tenant, const std::string& purpose, const Page& page);
  Status delete_file(const std::string& tenant, const std::string& id);

  // Batches.
  Status add_batch(const BatchRecord& batch);
  Result<BatchRecord> get_batch(const std::string& tenant, const std::string& id);
  // Any tenant's (the service's own bookkeeping).
  Result<BatchRecord> get_batch(const std::string& id);
  // Up to page.limit + 1 batches, newest first.
  Result<std::vector<BatchRecord>> list_batches(const std::string& tenant, const Page& page);
  // The ids of every batch in `status`, oldest first.
  Result<std::vector<std::string>> batches_with_status(const std::string& status);
  // Saves every mutable field of `batch` if its stored status is still
  // `expected_status`; false when it is not (someone moved it meanwhile).
  Result<bool> update_batch(const BatchRecord& batch, const std::string& expected_status);

  // Moves a validating batch to `batch` (in_progress, total set) and adds
  // its jobs, in one transaction; false when it was no longer validating.
  Result<bool> start_batch(const BatchRecord& batch, const std::vector<JobRecord>& jobs);
  // Jobs of the batch without a result, in line order.
  Result<std::vector<JobRecord>> pending_jobs(const std::string& batch_id);
  // Stores the result once: the first result for a job id wins, later ones
  // are ignored; so are results for unknown jobs and for batches that are
  // no longer in_progress or cancelling. Counts it in request_counts.
  Result<ResultStored> put_result(const JobResult& result);

  // Ends a batch in one transaction: if its status is still
  // `expected_status`, calls `build` with the batch and every line's
  // outcome (in line order); `build` sets the batch's final fields and
  // returns the files to write. False when the status had moved on.
  using Builder = std::function<Result<Finalized>(BatchRecord&, const std::vector<LineOutcome>&)>;
  Result<bool> finalize(const std::string& batch_id, const std::string& expected_status, const Builder& build);

 private:
  struct Impl;
  explicit BatchStore(std::unique_ptr<Impl> impl);
  std::mutex mu_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace llmpool::batch
