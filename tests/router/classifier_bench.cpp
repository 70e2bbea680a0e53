// Micro-benchmark of Classifier::classify on a 2 KB prompt. Not a test:
// built as router_classifier_bench, never registered with ctest. Prints
// ns/op (median of several rounds) so the "< 100 µs per request" target
// can be checked on the machine at hand.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "router/classifier.h"
#include "test_prompts.h"

int main(int argc, char** argv) {
  using namespace llmpool;
  const int iters = argc > 1 ? std::atoi(argv[1]) : 20000;
  router::Classifier classifier;
  GenerateRequest req = router::testing::chat(router::testing::prompt_2kb(), "You are a helpful assistant.");

  volatile double sink = 0;
  for (int i = 0; i < 1000; ++i) sink = sink + classifier.classify(req).complexity;  // warm up

  std::vector<double> rounds;
  for (int r = 0; r < 7; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < iters; ++i) sink = sink + classifier.classify(req).complexity;
    auto t1 = std::chrono::steady_clock::now();
    rounds.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / iters);
  }
  std::sort(rounds.begin(), rounds.end());
  auto c = classifier.classify(req);
  std::printf("router_classifier_bench: prompt %zu bytes, %d iterations x 7 rounds\n",
              req.messages.back().content.size(), iters);
  std::printf("classify: median %.0f ns/op (min %.0f, max %.0f)\n", rounds[3], rounds[0], rounds[6]);
  std::printf("complexity %.3f, required %zu tags, preferred %zu tags\n", c.complexity, c.required.size(),
              c.preferred.size());
  return sink < 0 ? 1 : 0;
}
