#include "providers/io_loop.h"

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>

namespace llmpool {

namespace {
thread_local std::shared_ptr<IoLoop> t_loop;

// io_context with execution_context::shutdown() in reach. The default
// concurrency hint, not 1: with 1 (Asio's one-thread queueing) a server's
// first request was sometimes never read under load (HttpServerTest under
// four parallel runs).
struct Context : boost::asio::io_context {
  Context() = default;
  using boost::asio::execution_context::shutdown;
};
}  // namespace

IoLoop::IoLoop() : ioc_(std::make_unique<Context>()) {}
IoLoop::~IoLoop() = default;

void IoLoop::shutdown() { static_cast<Context&>(*ioc_).shutdown(); }

const std::shared_ptr<IoLoop>& current_io_loop() { return t_loop; }

void run_on(const std::shared_ptr<IoLoop>& loop, std::function<void()> fn) {
  if (loop && loop->open()) {
    boost::asio::post(loop->context(), std::move(fn));
    return;
  }
  ScopedIoLoop mark(loop);
  fn();
}

ScopedIoLoop::ScopedIoLoop(std::shared_ptr<IoLoop> loop) : previous_(std::move(t_loop)) { t_loop = std::move(loop); }
ScopedIoLoop::~ScopedIoLoop() { t_loop = std::move(previous_); }

}  // namespace llmpool
