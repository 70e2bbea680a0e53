#include "fabric/job_runner.h"

#include <spdlog/spdlog.h>

#include "common/topic.h"
#include "fabric/wire.h"

namespace llmpool::fabric {

FabricJobRunner::FabricJobRunner(ConnectionPtr conn, std::vector<std::string> tenants, std::string durable)
    : conn_(std::move(conn)), durable_(std::move(durable)), initial_(std::move(tenants)) {}

FabricJobRunner::~FabricJobRunner() { stop(); }

void FabricJobRunner::stop() {
  stop_ = true;
  std::vector<std::thread> threads;
  {
    std::lock_guard<std::mutex> lock(mu_);
    threads.swap(threads_);
  }
  for (auto& t : threads) t.join();
}

void FabricJobRunner::set_result_sink(batch::ResultSink sink) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    sink_ = std::move(sink);
  }
  for (const auto& t : initial_)
    if (Status st = ensure(t); !st) spdlog::error("fabric: batch results of tenant {}: {}", t, st.message());
}

Status FabricJobRunner::ensure(const std::string& tenant) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (tenants_.count(tenant)) return Status::ok();
  }
  RETURN_IF_ERROR(conn_->ensure_tenant(tenant));
  ASSIGN_OR_RETURN(std::string subject, TopicNamer::topic(tenant, "infer.results"));
  std::string stream = result_stream(tenant);
  jsConsumerConfig cc;
  jsConsumerConfig_Init(&cc);
  cc.Durable = durable_.c_str();
  cc.AckPolicy = js_AckExplicit;
  cc.AckWait = 30000LL * 1000000;
  cc.FilterSubject = subject.c_str();
  cc.DeliverPolicy = js_DeliverAll;
  jsConsumerInfo* ci = nullptr;
  jsErrCode err = static_cast<jsErrCode>(0);
  natsStatus s = js_AddConsumer(&ci, conn_->js(), stream.c_str(), &cc, nullptr, &err);
  if (s != NATS_OK) return nats_status(s, "fabric: result consumer " + durable_ + " on " + stream, err);
  jsConsumerInfo_Destroy(ci);
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return Status::unavailable("fabric: the batch runner is stopped");
  if (!tenants_.insert(tenant).second) return Status::ok();
  threads_.emplace_back([this, tenant] { consume(tenant); });
  return Status::ok();
}

Status FabricJobRunner::submit(const batch::Job& job) {
  const std::string tenant = tenant_or_default(job.tenant);
  if (job.id.empty() || job.id.size() > kMaxIdLength) return Status::invalid_argument("job id must be 1-256 bytes", "id");
  RETURN_IF_ERROR(ensure(tenant));
  ASSIGN_OR_RETURN(std::string subject, request_subject(tenant, job.model));
  JobMessage m{job.id, tenant, job.model, job.endpoint, job.body, "", 0};
  std::string data = encode_job(m);
  if (data.size() > conn_->config().max_message_bytes)
    return Status::invalid_argument("the job is " + std::to_string(data.size()) + " bytes, more than fabric.max_message_bytes");
  return conn_->js_publish(subject, data, job.id);
}

void FabricJobRunner::cancel(const std::vector<std::string>& job_ids) {
  std::set<std::string> tenants;
  {
    std::lock_guard<std::mutex> lock(mu_);
    tenants = tenants_;
  }
  std::string data = encode_cancel(job_ids);
  for (const auto& t : tenants) {
    auto subject = TopicNamer::control(t, "jobs.cancel");
    if (subject) (void)conn_->publish(*subject, data);  // best effort by contract
  }
}

void FabricJobRunner::consume(std::string tenant) {
  std::string subject = *TopicNamer::topic(tenant, "infer.results");
  SubPtr sub;
  while (!stop_) {
    if (!sub) {
      auto made = conn_->pull_subscribe(subject, result_stream(tenant), durable_);
      if (!made) {
        spdlog::warn("fabric: {}; retrying", made.status().message());
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
        continue;
      }
      sub = std::move(made).value();
    }
    natsMsgList list{nullptr, 0};
    natsStatus s = natsSubscription_Fetch(&list, sub.get(), 64, 500, nullptr);
    if (s != NATS_OK && s != NATS_TIMEOUT) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      continue;
    }
    for (int i = 0; i < list.Count; ++i) {
      natsMsg* msg = list.Msgs[i];
      auto r = decode_result(std::string_view(natsMsg_GetData(msg), natsMsg_GetDataLength(msg)),
                             conn_->config().max_message_bytes);
      if (!r) {
        spdlog::error("fabric: dropping an unreadable result on {}: {}", subject, r.status().message());
        natsMsg_Term(msg, nullptr);
        continue;
      }
      batch::ResultSink sink;
      {
        std::lock_guard<std::mutex> lock(mu_);
        sink = sink_;
      }
      batch::JobResult jr{r->id, r->status_code, r->body};
      Status st = sink ? sink(jr) : Status::unavailable("no result sink yet");
      if (st) {
        jsErrCode err = static_cast<jsErrCode>(0);
        if (natsMsg_AckSync(msg, nullptr, &err) != NATS_OK)
          spdlog::warn("fabric: result {} not acked (it comes again)", r->id);
      } else {
        natsMsg_NakWithDelay(msg, 1000, nullptr);
      }
    }
    natsMsgList_Destroy(&list);
  }
}

}  // namespace llmpool::fabric
