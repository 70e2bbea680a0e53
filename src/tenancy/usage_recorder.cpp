#include "tenancy/usage_recorder.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace llmpool::tenancy {

UsageRecorder::UsageRecorder(std::shared_ptr<TenantStore> store, std::chrono::milliseconds flush_interval,
                             const WallClock& clock)
    : store_(std::move(store)), interval_(flush_interval), clock_(clock), thread_([this] { run(); }) {}

UsageRecorder::~UsageRecorder() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  thread_.join();
  if (Status st = flush(); !st) spdlog::error("usage: the last counts were not written: {}", st.message());
}

void UsageRecorder::add(const std::string& tenant, const std::string& key_id, const std::string& model,
                        int64_t requests, int64_t prompt_tokens, int64_t completion_tokens) {
  const int64_t now = clock_.now_unix();
  const int64_t day_number = now >= 0 ? now / 86400 : (now - 86399) / 86400;
  std::lock_guard lock(mu_);
  if (day_number != day_number_) {
    day_ = usage_day(now);
    day_number_ = day_number;
  }
  auto it = pending_.find(std::forward_as_tuple(tenant, key_id, model, day_));
  if (it == pending_.end())
    it = pending_.emplace(Key{tenant, key_id, model, day_}, UsageRecord{tenant, key_id, model, day_, 0, 0, 0}).first;
  UsageRecord& r = it->second;
  r.requests += std::max<int64_t>(0, requests);
  r.prompt_tokens += std::max<int64_t>(0, prompt_tokens);
  r.completion_tokens += std::max<int64_t>(0, completion_tokens);
}

Status UsageRecorder::flush() {
  std::lock_guard writer(flush_mu_);
  decltype(pending_) batch;
  {
    std::lock_guard lock(mu_);
    batch.swap(pending_);
  }
  Status first;
  for (auto& [key, r] : batch) {
    Status st = store_->record_usage(r);
    if (st) continue;
    // InvalidArgument will never pass: drop it. Anything else: keep it for the next flush.
    if (st.code() != StatusCode::kInvalidArgument) {
      std::lock_guard lock(mu_);
      UsageRecord& back = pending_[key];
      if (back.tenant.empty()) back = {r.tenant, r.key_id, r.model, r.day, 0, 0, 0};
      back.requests += r.requests;
      back.prompt_tokens += r.prompt_tokens;
      back.completion_tokens += r.completion_tokens;
    }
    if (first) first = st;
  }
  return first;
}

void UsageRecorder::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    cv_.wait_for(lock, interval_, [this] { return stopping_; });
    if (stopping_) break;
    lock.unlock();
    if (Status st = flush(); !st) spdlog::warn("usage: counts not written yet: {}", st.message());
    lock.lock();
  }
}

}  // namespace llmpool::tenancy
