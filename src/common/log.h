// Logging setup. llmpool logs through spdlog; call init_logging once in main
// before any other thread starts. Thread-safe afterwards.
#pragma once

#include <string_view>

namespace llmpool {

// level: "trace", "debug", "info", "warn", "error". Unknown names mean "info".
void init_logging(std::string_view level);

}  // namespace llmpool
