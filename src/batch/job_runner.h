// JobRunner: where the Batch API (src/batch) sends the lines of a batch,
// one job per line, and where their results come back (issue 11 item 3).
//
// Implementations: the fabric's (src/fabric), which publishes each job on
// llm.<tenant>.infer.requests.v1 with Nats-Msg-Id = job id and consumes
// llm.<tenant>.infer.results.v1 durably; and an in-process one that runs
// jobs through the router when no fabric is configured.
//
// Contract:
//   - submit() is idempotent by job id: submitting the same id twice runs it
//     once (the fabric drops the duplicate within its dedupe window).
//   - Every submitted job yields a result through the sink, at least once,
//     even across a restart of the API node (results are durable until the
//     sink has taken them). The sink must be idempotent by job id; it
//     returns an error when it could not store the result (it is then
//     delivered again).
//   - cancel() is best effort: jobs not yet started are dropped and yield a
//     result with status 499 (cancelled).
// Thread-safe; the sink runs on the runner's own threads.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "common/status.h"

namespace llmpool::batch {

struct Job {
  std::string id;        // unique and stable: "<batch id>:<line index>"
  std::string tenant;    // "" without tenancy
  std::string model;     // the line's body.model
  std::string endpoint;  // "/v1/chat/completions", "/v1/completions", "/v1/embeddings"
  std::string body;      // the line's request body, JSON text
};

struct JobResult {
  std::string id;
  int32_t status_code = 200;  // HTTP status the request would have had
  std::string body;           // response JSON text, or an OpenAI error JSON
};

using ResultSink = std::function<Status(const JobResult&)>;

class JobRunner {
 public:
  virtual ~JobRunner() = default;
  virtual void set_result_sink(ResultSink sink) = 0;  // before the first submit
  virtual Status submit(const Job& job) = 0;
  virtual void cancel(const std::vector<std::string>& job_ids) = 0;
};

}  // namespace llmpool::batch
