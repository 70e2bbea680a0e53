// QueueProvider (type "queue"): a model served by whichever `llmpool
// worker` processes serve `upstream_model` (the model's own name when
// empty), through the JetStream fabric (docs/fabric.md).
//
// generate() publishes a job on llm.<tenant>.infer.requests.v1.<model
// token> (Nats-Msg-Id = the job id) whose reply subject is
// llm.<tenant>.infer.stream.v1.<node>.<job>, a core NATS subject this
// provider listens on. Workers send a `start` event, then (streamed
// requests) one `chunk` per delta with sequence numbers 1, 2, ..., `alive`
// every second, and `done` with the whole answer. A gap in the sequence
// fails the request (Unavailable "stream events lost"). A worker that
// stops sending for 3 heartbeat periods after deltas went out ends the
// stream with Unavailable "the worker '<id>' serving this stream stopped
// answering mid-stream; the stream ended early"; before any delta went out
// the job is simply redelivered to another worker and the request waits.
// The request's deadline is the model's deadline_ms, else
// fabric.request_timeout; past it the job is cancelled on
// ctrl.<tenant>.jobs.cancel and the request ends with DeadlineExceeded.
// Cancelling the request cancels the job the same way and ends it with
// FinishReason::kCancelled choices.
//
// Load and health come from the fleet's heartbeats: stats() reports the
// live workers' slots; once the fleet view has settled and no live worker
// serves the model, generate() fails at once with Unavailable, so routing
// and breakers move on.
//
// Needs the process connection (fabric::set_process_connection); create()
// is Unavailable without one. Thread-safe; callbacks run on nats.c's
// subscription thread or the provider's timer thread. Destroying the
// provider ends requests in flight with Unavailable.
#pragma once

#include <memory>

#include "config/config.h"
#include "providers/provider.h"

namespace llmpool::providers {

class QueueProvider : public Provider {
 public:
  static Result<ProviderPtr> create(const config::ModelConfig& config);
  ~QueueProvider() override;

  const ModelInfo& info() const override { return info_; }
  void generate(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks) override;
  ProviderStats stats() const override;

  struct Shared;

 private:
  QueueProvider(ModelInfo info, std::shared_ptr<Shared> shared) : info_(std::move(info)), shared_(std::move(shared)) {}
  ModelInfo info_;
  std::shared_ptr<Shared> shared_;
};

}  // namespace llmpool::providers
