// FabricJobRunner: batch::JobRunner over the JetStream fabric (issue 11
// item 5; docs/fabric.md, "Batch jobs").
//
// submit() publishes the job on llm.<tenant>.infer.requests.v1.<model token>
// with Nats-Msg-Id = job id (a second submit of the id within the dedupe
// window is dropped by the stream). Results come from the durable pull
// consumer `durable` (default "batch") on llm.<tenant>.infer.results.v1,
// one thread per tenant; each is acked only after the sink returned ok,
// and NAKed (redelivered after 1 s) otherwise, so results survive a restart
// of this process until the sink took them. cancel() publishes the ids on
// ctrl.<tenant>.jobs.cancel: workers drop the jobs they have not started
// (result 499) and cancel those they run.
// Thread-safe. The sink runs on the runner's consumer threads. The
// destructor stops and joins them (results not yet acked are redelivered
// to the next runner).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "batch/job_runner.h"
#include "fabric/connection.h"

namespace llmpool::fabric {

class FabricJobRunner : public batch::JobRunner {
 public:
  // `tenants`: whose results to consume from the start (a tenant submitted
  // for later is added then).
  FabricJobRunner(ConnectionPtr conn, std::vector<std::string> tenants, std::string durable = "batch");
  ~FabricJobRunner() override;
  // Stops and joins the consumer threads: the sink is not called after it
  // returns (results not acked yet are redelivered to the next runner).
  // submit() fails afterwards. Idempotent; the destructor calls it.
  void stop();

  void set_result_sink(batch::ResultSink sink) override;
  Status submit(const batch::Job& job) override;
  void cancel(const std::vector<std::string>& job_ids) override;

 private:
  Status ensure(const std::string& tenant);  // streams + the result consumer thread
  void consume(std::string tenant);

  ConnectionPtr conn_;
  std::string durable_;
  std::mutex mu_;
  batch::ResultSink sink_;               // set once, before the threads start
  std::set<std::string> tenants_;        // ensured; guarded by mu_
  std::vector<std::string> initial_;
  std::vector<std::thread> threads_;     // guarded by mu_
  std::atomic<bool> stop_{false};
};

}  // namespace llmpool::fabric
