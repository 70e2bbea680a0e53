#include "fabric/fleet.h"

#include <spdlog/spdlog.h>

#include <algorithm>

#include "common/topic.h"

namespace llmpool::fabric {
namespace {

constexpr auto kForgetAfter = std::chrono::minutes(10);
std::mutex g_fleet_mu;
FleetViewPtr g_fleet;  // guarded by g_fleet_mu

}  // namespace

Result<std::shared_ptr<FleetView>> FleetView::start(ConnectionPtr conn, std::vector<std::string> tenants,
                                                    int64_t heartbeat_ms) {
  std::shared_ptr<FleetView> v(new FleetView(conn, heartbeat_ms));
  for (const auto& t : tenants) {
    ASSIGN_OR_RETURN(std::string subject, TopicNamer::control(t, "workers.heartbeat"));
    ASSIGN_OR_RETURN(SubPtr sub, conn->subscribe(subject, &FleetView::on_msg, v.get()));
    v->subs_.push_back(std::move(sub));
  }
  return v;
}

FleetView::~FleetView() { stop(); }

void FleetView::stop() {
  std::vector<SubPtr> subs;
  {
    std::lock_guard<std::mutex> lock(mu_);
    subs.swap(subs_);
  }
  subs.clear();  // unsubscribes; nats.c waits for a running callback
}

void FleetView::on_msg(natsConnection*, natsSubscription*, natsMsg* raw, void* closure) {
  MsgPtr msg(raw);
  auto* self = static_cast<FleetView*>(closure);
  auto hb = decode_heartbeat(std::string_view(natsMsg_GetData(raw), natsMsg_GetDataLength(raw)), 256 << 10);
  if (!hb) {
    spdlog::warn("fabric: unreadable heartbeat on {}: {}", natsMsg_GetSubject(raw), hb.status().message());
    return;
  }
  // The tenant is the subject's, never the message's: ctrl.<tenant>.workers.heartbeat.
  std::string subject = natsMsg_GetSubject(raw);
  size_t a = subject.find('.'), b = subject.find('.', a + 1);
  hb->tenant = subject.substr(a + 1, b - a - 1);
  self->record(*hb);
}

void FleetView::record(const Heartbeat& h) {
  std::lock_guard<std::mutex> lock(mu_);
  auto now = std::chrono::steady_clock::now();
  workers_[h.tenant + "/" + h.id] = Seen{h, now};
  for (auto it = workers_.begin(); it != workers_.end();) {
    if (now - it->second.at > kForgetAfter) it = workers_.erase(it);
    else ++it;
  }
}

std::vector<WorkerEntry> FleetView::list() const {
  std::lock_guard<std::mutex> lock(mu_);
  auto now = std::chrono::steady_clock::now();
  std::vector<WorkerEntry> out;
  for (const auto& [key, seen] : workers_) {
    WorkerEntry e;
    e.last = seen.hb;
    e.age_ms = std::chrono::duration_cast<std::chrono::milliseconds>(now - seen.at).count();
    e.silent = e.age_ms > 3 * heartbeat_ms_;
    out.push_back(std::move(e));
  }
  return out;
}

ModelFleet FleetView::model(const std::string& tenant, const std::string& model) const {
  ModelFleet f;
  for (const auto& w : list()) {
    if (w.silent || w.last.tenant != tenant) continue;
    for (const auto& m : w.last.models) {
      if (m.name != model) continue;
      ++f.workers;
      if (!w.last.paused) {
        f.slots += m.slots;
        f.free += m.free;
      }
      f.pending = std::max(f.pending, m.pending);
    }
  }
  return f;
}

bool FleetView::settled() const {
  return std::chrono::steady_clock::now() - started_ > std::chrono::milliseconds(3 * heartbeat_ms_);
}

void set_process_fleet(FleetViewPtr f) {
  std::lock_guard<std::mutex> lock(g_fleet_mu);
  g_fleet = std::move(f);
}

FleetViewPtr process_fleet() {
  std::lock_guard<std::mutex> lock(g_fleet_mu);
  return g_fleet;
}

}  // namespace llmpool::fabric
