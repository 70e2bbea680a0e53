// FleetView: what an API node knows of the worker fleet, from the
// heartbeats on ctrl.<tenant>.workers.heartbeat of the configured tenants.
// A worker is `silent` once no heartbeat came for 3 heartbeat periods; it
// is forgotten after 10 minutes of silence. Queue models read their load
// and health here; GET /api/workers lists it.
// Thread-safe; owns its subscriptions (stop() or the destructor ends them).
#pragma once

#include <chrono>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "fabric/connection.h"
#include "fabric/wire.h"

namespace llmpool::fabric {

struct WorkerEntry {
  Heartbeat last;
  int64_t age_ms = 0;   // since the last heartbeat arrived
  bool silent = false;
};

struct ModelFleet {
  int32_t workers = 0;  // live workers serving the model
  int32_t slots = 0;
  int32_t free = 0;
  int64_t pending = 0;  // the largest queue lag reported
};

class FleetView {
 public:
  ~FleetView();
  static Result<std::shared_ptr<FleetView>> start(ConnectionPtr conn, std::vector<std::string> tenants,
                                                  int64_t heartbeat_ms);
  std::vector<WorkerEntry> list() const;
  ModelFleet model(const std::string& tenant, const std::string& model) const;
  // True once the view has listened for 3 heartbeat periods, so an empty
  // fleet means no worker rather than "not heard yet".
  bool settled() const;
  int64_t heartbeat_ms() const { return heartbeat_ms_; }
  // For tests and the subscription callback: records one heartbeat.
  void record(const Heartbeat& h);
  void stop();

 private:
  FleetView(ConnectionPtr conn, int64_t heartbeat_ms)
      : conn_(std::move(conn)), heartbeat_ms_(heartbeat_ms), started_(std::chrono::steady_clock::now()) {}
  static void on_msg(natsConnection*, natsSubscription*, natsMsg* msg, void* closure);

  ConnectionPtr conn_;
  int64_t heartbeat_ms_;
  std::chrono::steady_clock::time_point started_;
  mutable std::mutex mu_;
  struct Seen {
    Heartbeat hb;
    std::chrono::steady_clock::time_point at;
  };
  std::map<std::string, Seen> workers_;  // "<tenant>/<id>"; guarded by mu_
  std::vector<SubPtr> subs_;
};

using FleetViewPtr = std::shared_ptr<FleetView>;

// The fleet view queue models of this process use (set by `serve`).
void set_process_fleet(FleetViewPtr f);
FleetViewPtr process_fleet();

}  // namespace llmpool::fabric
