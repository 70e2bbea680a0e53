// FakeProvider: a scripted providers::Provider for ensemble and router
// tests. Each generate() call takes the next script (the last one repeats):
// after `latency` on the injected Timer it answers `text` (or `choices`, or
// fails with `error`); `stall` never answers until cancelled. A cancelled
// request answers with FinishReason::kCancelled when it is noticed: at its
// due time, or at the next poll for a stalled one. latency 0 answers inside
// generate(), like a provider that calls back synchronously.
// Streaming: a script with `pieces` sends them as deltas (every choice gets
// the same pieces) when the caller set on_delta: the first at `latency`,
// then one every `piece_gap`, and one gap after the last a delta with
// finish reason stop per choice and on_done (or, with `error` set, on_done
// failing with it). The answer's text is the
// pieces joined when `text` is empty. A cancel stops the pieces.
// Thread-safe.
#pragma once

#include <chrono>
#include <deque>
#include <mutex>
#include <string>
#include <vector>

#include "providers/provider.h"
#include "qos/timer.h"

namespace llmpool::ensemble::testing {

struct Script {
  std::chrono::milliseconds latency{0};
  std::string text;
  std::vector<std::string> choices;  // for n > 1; cycles; empty: `text` for every choice
  Status error;                      // not ok: fail with it
  bool stall = false;
  std::vector<ToolCall> tool_calls;
  Usage usage{10, 5, 0};
  std::vector<std::string> pieces;   // streamed as deltas
  std::chrono::milliseconds piece_gap{10};
};

inline Script streamed(std::vector<std::string> pieces, int ms = 100, int gap_ms = 10) {
  Script s;
  s.pieces = std::move(pieces);
  s.latency = std::chrono::milliseconds(ms);
  s.piece_gap = std::chrono::milliseconds(gap_ms);
  return s;
}

inline Script answer(std::string text, int ms = 100) {
  Script s;
  s.text = std::move(text);
  s.latency = std::chrono::milliseconds(ms);
  return s;
}
inline Script failure(Status error, int ms = 50) {
  Script s;
  s.error = std::move(error);
  s.latency = std::chrono::milliseconds(ms);
  return s;
}
inline Script stall() {
  Script s;
  s.stall = true;
  return s;
}

class FakeProvider : public providers::Provider {
 public:
  FakeProvider(std::string name, qos::Timer& timer, std::vector<Script> scripts,
               std::chrono::milliseconds poll = std::chrono::milliseconds(5))
      : timer_(timer), scripts_(scripts.begin(), scripts.end()), poll_(poll) {
    info_.name = std::move(name);
    info_.type = "fake";
    info_.capabilities = {"general"};
    info_.context = 8192;
  }

  const providers::ModelInfo& info() const override { return info_; }

  void generate(GenerateRequest request, CancelTokenPtr cancel, GenerateCallbacks callbacks) override {
    Script s;
    {
      std::lock_guard lock(mu_);
      ++calls_;
      if (callbacks.on_delta) ++streamed_calls_;
      requests_.push_back(request);
      cancels_.push_back(cancel);
      s = scripts_.size() > 1 ? pop() : (scripts_.empty() ? Script{} : scripts_.front());
    }
    auto done = std::make_shared<GenerateCallbacks>(std::move(callbacks));
    const int32_t n = std::max(1, request.n);
    if (s.stall) {
      poll(cancel, done, n);
      return;
    }
    if (!s.pieces.empty() && s.text.empty()) {
      for (const auto& p : s.pieces) s.text += p;
    }
    if (!s.pieces.empty() && done->on_delta) {
      timer_.schedule_after(s.latency, [this, s, cancel, done, n] { stream(s, cancel, done, n, 0); });
      return;
    }
    if (s.latency.count() == 0) {
      deliver(s, cancel, *done, n);
      return;
    }
    timer_.schedule_after(s.latency, [this, s, cancel, done, n] { deliver(s, cancel, *done, n); });
  }

  int calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }
  // Calls whose caller set on_delta (asked for a stream).
  int streamed_calls() const {
    std::lock_guard lock(mu_);
    return streamed_calls_;
  }
  GenerateRequest request(size_t i) const {
    std::lock_guard lock(mu_);
    return requests_.at(i);
  }
  bool cancelled(size_t i) const {
    std::lock_guard lock(mu_);
    return cancels_.at(i)->cancelled();
  }
  int answered() const {
    std::lock_guard lock(mu_);
    return answered_;
  }

 private:
  Script pop() {
    Script s = scripts_.front();
    scripts_.pop_front();
    return s;
  }

  void poll(CancelTokenPtr cancel, std::shared_ptr<GenerateCallbacks> done, int32_t n) {
    timer_.schedule_after(poll_, [this, cancel, done, n] {
      if (cancel->cancelled()) {
        finish_cancelled(*done, n);
      } else {
        poll(cancel, done, n);
      }
    });
  }

  void stream(const Script& s, const CancelTokenPtr& cancel, const std::shared_ptr<GenerateCallbacks>& done,
              int32_t n, size_t next) {
    if (cancel->cancelled()) {
      finish_cancelled(*done, n);
      return;
    }
    if (next == s.pieces.size()) {
      if (s.error.is_ok()) {
        for (int32_t i = 0; i < n; ++i) {  // like the engine: a last delta with the finish reason
          Delta d;
          d.index = i;
          d.finish_reason = FinishReason::kStop;
          done->on_delta(std::move(d));
        }
      }
      deliver(s, cancel, *done, n);
      return;
    }
    for (int32_t i = 0; i < n; ++i) {
      Delta d;
      d.index = i;
      d.text = s.pieces[next];
      done->on_delta(std::move(d));
    }
    timer_.schedule_after(s.piece_gap, [this, s, cancel, done, n, next] { stream(s, cancel, done, n, next + 1); });
  }

  void finish_cancelled(GenerateCallbacks& cb, int32_t n) {
    Completion c;
    for (int32_t i = 0; i < n; ++i) {
      Choice ch;
      ch.index = i;
      ch.finish_reason = FinishReason::kCancelled;
      c.choices.push_back(ch);
    }
    count_answer();
    cb.on_done(std::move(c));
  }

  void deliver(const Script& s, const CancelTokenPtr& cancel, GenerateCallbacks& cb, int32_t n) {
    if (cancel->cancelled()) {
      finish_cancelled(cb, n);
      return;
    }
    count_answer();
    if (!s.error.is_ok()) {
      cb.on_done(s.error);
      return;
    }
    Completion c;
    for (int32_t i = 0; i < n; ++i) {
      Choice ch;
      ch.index = i;
      ch.text = s.choices.empty() ? s.text : s.choices[static_cast<size_t>(i) % s.choices.size()];
      ch.tool_calls = s.tool_calls;
      if (!s.tool_calls.empty()) ch.finish_reason = FinishReason::kToolCalls;
      c.choices.push_back(std::move(ch));
    }
    c.usage = s.usage;
    cb.on_done(std::move(c));
  }

  void count_answer() {
    std::lock_guard lock(mu_);
    ++answered_;
  }

  providers::ModelInfo info_;
  qos::Timer& timer_;
  mutable std::mutex mu_;
  std::deque<Script> scripts_;
  std::chrono::milliseconds poll_;
  int calls_ = 0;
  int streamed_calls_ = 0;
  int answered_ = 0;
  std::vector<GenerateRequest> requests_;
  std::vector<CancelTokenPtr> cancels_;
};

}  // namespace llmpool::ensemble::testing
