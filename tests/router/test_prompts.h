// Prompts shared by the classifier's tests and its micro-benchmark.
#pragma once

#include <string>

#include "common/chat.h"

namespace llmpool::router::testing {

inline ChatMessage message(std::string role, std::string content) {
  ChatMessage m;
  m.role = std::move(role);
  m.content = std::move(content);
  return m;
}

inline GenerateRequest chat(std::string user, std::string system = {}) {
  GenerateRequest r;
  r.model = "auto";
  if (!system.empty()) r.messages.push_back(message("system", std::move(system)));
  r.messages.push_back(message("user", std::move(user)));
  return r;
}

// About 2 KB of mixed prose, code and reasoning: the benchmark's input.
inline std::string prompt_2kb() {
  std::string p =
      "I am building a distributed cache in C++ and I need help. First, explain why my mutex-based design "
      "deadlocks under load, then propose a lock-free alternative and prove that it is linearizable. "
      "Here is the code:\n"
      "```cpp\n"
      "#include <mutex>\n"
      "struct Cache {\n"
      "  std::mutex mu_;\n"
      "  std::unordered_map<std::string, std::string> map_;\n"
      "  std::optional<std::string> get(const std::string& key) {\n"
      "    std::lock_guard lock(mu_);\n"
      "    auto it = map_.find(key);\n"
      "    if (it == map_.end()) return std::nullopt;\n"
      "    return it->second;\n"
      "  }\n"
      "};\n"
      "```\n"
      "Requirements:\n"
      "1. Throughput above 1000000 operations per second on 16 threads.\n"
      "2. p99 latency below 50 microseconds.\n"
      "3. Memory overhead at most 2 * n + 64 bytes per entry.\n"
      "Step by step, compare the tradeoffs of sharding versus a concurrent hash map, analyze the "
      "complexity of each approach, and finally estimate the cache hit rate if keys follow a Zipf "
      "distribution with s = 1.1. ";
  while (p.size() < 2048) {
    p += "Please also consider replication, consistency and the behaviour under network partitions. ";
  }
  p.resize(2048);
  return p;
}

}  // namespace llmpool::router::testing
