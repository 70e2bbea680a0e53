// IoLoop: an Asio event loop (one io_context) run by one thread, which other
// components may borrow for their own asynchronous work, so that one
// request's network I/O stays on one thread (nginx's worker model). It sits
// beside the HTTP client, its borrower; the HTTP server (api) owns them.
//
// The HTTP server runs one IoLoop per I/O thread and marks each of its
// threads with it (ScopedIoLoop); a handler that calls out (the upstream
// HTTP client) finds the loop with current_io_loop() and runs the upstream
// exchange there instead of handing it to a thread of its own and back.
// Work handed to another thread on a request's behalf (the router's offload
// threads) carries the loop along: the thread marks itself with the loop of
// the request for as long as it works on it.
//
// Lifetime: an IoLoop is shared. Whoever keeps sockets or timers bound to
// its io_context holds a shared_ptr, so the context outlives them. The
// owner (the server) closes the loop before it stops running it; borrowers
// must check open() before they start anything new on it, and what they
// started before the close is destroyed (not run) when the last holder lets
// go, so it must report its end from its destructor.
//
// Thread-safety: open() and close() from any thread; context() is Asio's
// (thread-safe for posting, the rest on the loop).
#pragma once

#include <atomic>
#include <functional>
#include <memory>

namespace boost::asio {
class io_context;
}

namespace llmpool {

class IoLoop {
 public:
  IoLoop();
  ~IoLoop();
  IoLoop(const IoLoop&) = delete;
  IoLoop& operator=(const IoLoop&) = delete;

  boost::asio::io_context& context() { return *ioc_; }
  // True until close(): new work may be started on the loop.
  bool open() const { return open_.load(std::memory_order_acquire); }
  void close() { open_.store(false, std::memory_order_release); }
  // After its thread stopped running it: destroys every handler still
  // pending on the context (Asio's execution_context::shutdown). The context
  // then takes no more work; sockets bound to it may still be closed.
  void shutdown();

 private:
  std::unique_ptr<boost::asio::io_context> ioc_;
  std::atomic<bool> open_{true};
};

// The loop the calling thread works for (its own, or the loop of the
// request it works on), or null.
const std::shared_ptr<IoLoop>& current_io_loop();

// Runs `fn` on `loop` when it is open (posted: the caller goes on at once),
// else here, marked with the loop (ScopedIoLoop), as for a null loop. Work
// coming back to a request's loop from another thread (a rate limiter's
// answer) takes this way. A posted fn whose loop closes before it runs is
// destroyed unrun, like the loop's other pending work.
void run_on(const std::shared_ptr<IoLoop>& loop, std::function<void()> fn);

// Marks the calling thread with `loop` until destroyed (then restores the
// previous mark). Nestable.
class ScopedIoLoop {
 public:
  explicit ScopedIoLoop(std::shared_ptr<IoLoop> loop);
  ~ScopedIoLoop();
  ScopedIoLoop(const ScopedIoLoop&) = delete;
  ScopedIoLoop& operator=(const ScopedIoLoop&) = delete;

 private:
  std::shared_ptr<IoLoop> previous_;
};

}  // namespace llmpool
