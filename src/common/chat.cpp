#include "common/chat.h"
#include "common/json.h"

#include <algorithm>

namespace llmpool {

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::kStop: return "stop";
    case FinishReason::kLength: return "length";
    case FinishReason::kToolCalls: return "tool_calls";
    case FinishReason::kCancelled: return "cancelled";
  }
  return "stop";
}

void write_tool_calls(JsonWriter& w, const std::vector<ToolCall>& calls) {
  w.begin_array();
  for (const auto& c : calls) {
    w.begin_object().key("function").begin_object().key("arguments").string(c.arguments).key("name").string(c.name);
    w.end_object().key("id").string(c.id).key("type").string("function").end_object();
  }
  w.end_array();
}

void CancelToken::cancel() {
  bool expected = false;
  if (!cancelled_.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) return;
  at_ns_.store(std::chrono::steady_clock::now().time_since_epoch().count(), std::memory_order_release);
  // The flag is set before the list is drained under the lock, so a
  // subscribe() either lands in the list (and runs here) or sees the flag
  // (and runs its callback itself): each callback runs exactly once.
  std::unique_lock lock(mu_);
  running_on_ = std::this_thread::get_id();
  while (!callbacks_.empty()) {
    auto [id, callback] = std::move(callbacks_.front());
    callbacks_.erase(callbacks_.begin());
    running_ = id;
    lock.unlock();
    callback();
    callback = nullptr;  // what it holds is released before a waiting reset() returns
    lock.lock();
    running_ = 0;
    callback_done_.notify_all();
  }
  running_on_ = std::thread::id();
}

CancelToken::Subscription CancelToken::subscribe(std::function<void()> callback) {
  {
    std::lock_guard lock(mu_);
    if (!cancelled()) {
      const uint64_t id = next_id_++;
      callbacks_.emplace_back(id, std::move(callback));
      return Subscription(shared_from_this(), id);
    }
  }
  callback();
  return Subscription();
}

void CancelToken::unsubscribe(uint64_t id) {
  std::unique_lock lock(mu_);
  auto it = std::find_if(callbacks_.begin(), callbacks_.end(), [id](const auto& c) { return c.first == id; });
  if (it != callbacks_.end()) {
    callbacks_.erase(it);
    return;
  }
  // Running (or done): wait for it unless this is the callback's own thread.
  if (running_on_ == std::this_thread::get_id()) return;
  callback_done_.wait(lock, [&] { return running_ != id; });
}

CancelToken::Subscription& CancelToken::Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    reset();
    token_ = std::move(other.token_);
    id_ = other.id_;
    other.token_ = nullptr;
  }
  return *this;
}

void CancelToken::Subscription::reset() {
  if (!token_) return;
  std::shared_ptr<CancelToken> token = std::move(token_);
  token_ = nullptr;
  token->unsubscribe(id_);
}

}  // namespace llmpool
