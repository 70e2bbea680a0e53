#include "engine/llama_status.h"

#include <llama.h>
#include <spdlog/spdlog.h>

#include <mutex>
#include <string>

namespace llmpool::engine {

Status decode_status(int32_t rc, std::string_view what) {
  std::string w(what);
  switch (rc) {
    case 0: return Status::ok();
    case 1: return Status::resource_exhausted(w + ": no free KV cache slot (context full)");
    case 2: return Status::unavailable(w + ": aborted");
    case -1: return Status::invalid_argument(w + ": invalid batch");
    default: return Status::internal(w + ": llama_decode failed with code " + std::to_string(rc));
  }
}

namespace {
void forward_log(ggml_log_level level, const char* text, void* /*user*/) {
  std::string_view s(text);
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.remove_suffix(1);
  if (s.empty()) return;
  // The engine aborts a decode on purpose when a request is cancelled
  // mid-step (and undoes it); llama.cpp reports that as failures.
  for (std::string_view aborted : {"compute_async failed with error 1", "failed to decode, ret = 2", "removing memory module entries"})
    if (s.find(aborted) != std::string_view::npos) return spdlog::debug("llama.cpp: {}", s);
  switch (level) {
    case GGML_LOG_LEVEL_ERROR: spdlog::error("llama.cpp: {}", s); break;
    case GGML_LOG_LEVEL_WARN: spdlog::warn("llama.cpp: {}", s); break;
    default: spdlog::trace("llama.cpp: {}", s); break;
  }
}
}  // namespace

void init_llama_backend() {
  static std::once_flag once;
  std::call_once(once, [] {
    llama_log_set(forward_log, nullptr);
    llama_backend_init();
  });
}

}  // namespace llmpool::engine
