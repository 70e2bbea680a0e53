#include "qos/admission.h"

#include <string>

namespace llmpool::qos {

void AdmissionGate::Hold::release() {
  if (gate_ != nullptr) {
    gate_->leave();
    gate_ = nullptr;
  }
}

AdmissionGate::AdmissionGate(AdmissionOptions options) : options_(options) {}

AdmissionGate::Hold AdmissionGate::try_enter() {
  auto r = enter();
  if (!r) return Hold();
  return std::move(r).value();
}

Result<AdmissionGate::Hold> AdmissionGate::enter() {
  std::lock_guard lock(mu_);
  if (closed_) return Status::unavailable("server is shutting down");
  if (options_.max_active > 0 && active_ >= options_.max_active) {
    ++rejected_;
    return Status::resource_exhausted("too many active generations (limit " + std::to_string(options_.max_active) +
                                      "); retry after " + std::to_string(options_.retry_after_seconds) + " s");
  }
  ++active_;
  return Hold(this);
}

void AdmissionGate::leave() {
  std::lock_guard lock(mu_);
  if (--active_ == 0) drained_.notify_all();
}

void AdmissionGate::close() {
  std::lock_guard lock(mu_);
  closed_ = true;
}

bool AdmissionGate::closed() const {
  std::lock_guard lock(mu_);
  return closed_;
}

bool AdmissionGate::wait_drained(std::chrono::milliseconds timeout) {
  std::unique_lock lock(mu_);
  return drained_.wait_for(lock, timeout, [&] { return active_ == 0; });
}

int64_t AdmissionGate::active() const {
  std::lock_guard lock(mu_);
  return active_;
}

int64_t AdmissionGate::rejected() const {
  std::lock_guard lock(mu_);
  return rejected_;
}

int32_t AdmissionGate::retry_after_seconds() const {
  std::lock_guard lock(mu_);
  return options_.retry_after_seconds;
}

void AdmissionGate::set_options(AdmissionOptions options) {
  std::lock_guard lock(mu_);
  options_ = options;
}

}  // namespace llmpool::qos
