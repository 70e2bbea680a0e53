// llmpool-json-bench: parse_json (llmpool's own parser) against nlohmann's
// strict parser (json_internal::parse_json_reference, parse_json before it)
// on the two texts every proxied request parses: the fake upstream's
// 291-byte answer and a 1 KB chat request body. Each round times both
// parsers on each text, alternating, and prints medians over the rounds.
//
//   llmpool-json-bench [--rounds 15] [--iterations 20000]
//   llmpool-json-bench --only new|old --text answer|request --iterations N
//       one parser on one text N times and nothing else: for counting
//       instructions (valgrind --tool=callgrind at two N, the difference
//       divided by the difference of N is one parse; see bench/RESULTS.md).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "common/json.h"
#include "common/json_parser.h"

using namespace llmpool;

namespace {

constexpr std::string_view kAnswer =
    R"({"choices":[{"finish_reason":"stop","index":0,"message":{"content":"The quick brown fox jumps over the lazy",)"
    R"("role":"assistant"}}],"created":1796315637,"id":"chatcmpl-fake-18499-1","model":"fake",)"
    R"("object":"chat.completion","usage":{"completion_tokens":8,"prompt_tokens":7,"total_tokens":15}})";

// A chat request as clients send them: a system prompt, a short exchange,
// sampling settings; one escaped quote and newline, one non-ASCII character.
constexpr std::string_view kRequest = R"({"model":"fake","messages":[)"
    R"({"role":"system","content":"You are a helpful assistant. Answer briefly and precisely; say so when you do not know."},)"
    R"({"role":"user","content":"What is the difference between a process and a thread on Linux?"},)"
    R"({"role":"assistant","content":"A process has its own address space; threads of one process share it. )"
    R"(Both are tasks to the scheduler, created by clone() with different flags."},)"
    R"({"role":"user","content":"And which one does \"fork\" create? Give an example in C.\nKeep it under ten lines."},)"
    R"({"role":"assistant","content":"fork() creates a process: a copy of the caller, which continues in both. )"
    R"(For example: pid_t p = fork(); if (p == 0) { /* child */ } else { /* parent */ }"},)"
    R"({"role":"user","content":"Thanks \u2014 and how do I wait for the child?"}],)"
    R"("temperature":0.7,"top_p":0.95,"max_tokens":256,"stream":false,"n":1,"presence_penalty":0,)"
    R"("frequency_penalty":0,"user":"user-1234","stop":["\n\n\n"]})";

using Clock = std::chrono::steady_clock;

// Nanoseconds per parse over `iterations` parses.
template <typename Parse>
double time_parses(Parse parse, std::string_view text, int iterations) {
  const auto start = Clock::now();
  for (int i = 0; i < iterations; ++i) {
    Result<nlohmann::json> r = parse(text);
    if (!r.is_ok()) {
      std::fprintf(stderr, "json-bench: %s\n", r.status().message().c_str());
      std::exit(1);
    }
  }
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count() / iterations;
}

Result<nlohmann::json> parse_new(std::string_view text) { return parse_json(text, kDefaultJsonLimits, "the text"); }
Result<nlohmann::json> parse_old(std::string_view text) {
  return json_internal::parse_json_reference(text, kDefaultJsonLimits, "the text");
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  int rounds = 15, iterations = 20000;
  std::string only, text_name = "answer";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string_view flag = argv[i];
    if (flag == "--rounds") {
      rounds = std::atoi(argv[i + 1]);
    } else if (flag == "--iterations") {
      iterations = std::atoi(argv[i + 1]);
    } else if (flag == "--only") {
      only = argv[i + 1];
    } else if (flag == "--text") {
      text_name = argv[i + 1];
    } else {
      std::fprintf(stderr, "usage: %s [--rounds R] [--iterations N] [--only new|old --text answer|request]\n", argv[0]);
      return 2;
    }
  }
  if (!only.empty()) {
    const std::string_view text = text_name == "request" ? kRequest : kAnswer;
    time_parses(only == "old" ? parse_old : parse_new, text, iterations);
    return 0;
  }
  if (!json_internal::same_json(*parse_new(kAnswer), *parse_old(kAnswer)) ||
      !json_internal::same_json(*parse_new(kRequest), *parse_old(kRequest))) {
    std::fprintf(stderr, "json-bench: the parsers disagree\n");
    return 1;
  }
  std::printf("text      bytes  nlohmann ns  llmpool ns  ratio   (medians of %d rounds of %d parses)\n", rounds,
              iterations);
  for (const auto& [name, text] : {std::pair{"answer", kAnswer}, std::pair{"request", kRequest}}) {
    std::vector<double> old_ns, new_ns;
    for (int r = 0; r < rounds; ++r) {
      // Alternate which goes first, so neither always runs on a warmer cache.
      if (r % 2) new_ns.push_back(time_parses(parse_new, text, iterations));
      old_ns.push_back(time_parses(parse_old, text, iterations));
      if (!(r % 2)) new_ns.push_back(time_parses(parse_new, text, iterations));
    }
    const double o = median(old_ns), n = median(new_ns);
    std::printf("%-8s %6zu  %11.0f  %10.0f  %5.2fx\n", name, text.size(), o, n, o / n);
  }
  return 0;
}
