// Fuzz target: the config loader (config::parse_config on YAML text, without
// checking that model files exist). Any text must give a Config or issues,
// each with a message; nothing may crash, hang or throw. A valid config must
// load again, to the same result, from the same text (the loader is a pure
// function of its input). The duration parser is fed the text as well.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "config/config.h"

using namespace llmpool;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::string text(reinterpret_cast<const char*>(data), size);
  auto loaded = config::parse_config(text, "/fuzz/llmpool.yaml", /*check_files=*/false);
  for (const auto& issue : loaded.issues) {
    if (issue.message.empty()) std::abort();
    (void)issue.to_string();
  }
  if (loaded.ok()) {
    auto again = config::parse_config(text, "/fuzz/llmpool.yaml", false);
    const auto& a = loaded.config;
    const auto& b = again.config;
    // Config itself has no operator==; its parts do. NaN never compares
    // equal, so this also catches a NaN let through into a setting.
    if (!again.ok() || a.log_level != b.log_level || !(a.server == b.server) || !(a.pool == b.pool) ||
        a.models != b.models || !(a.routing == b.routing))
      std::abort();
  }
  if (size <= 64) {
    auto ms = config::parse_duration_ms(text);
    if (ms) (void)config::format_duration_ms(*ms);
  }
  return 0;
}
