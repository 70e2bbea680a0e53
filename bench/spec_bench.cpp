// llmpool-spec-bench: speculative decoding in the engine itself (no HTTP),
// side by side in one run: no speculation, a draft model, prompt lookup, on
// the same target, loads and threads. Rounds alternate the configurations;
// figures are medians of aggregate tok/s (completion tokens / wall time).
// bench/speculative.sh runs it beside llama-server with and without -md.
//
//   llmpool-spec-bench --target T.gguf --draft D.gguf [--clients C --requests N --max-tokens T --repeats R]
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <future>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <filesystem>

#include "engine/local_model.h"
#include "engine/model_writer.h"

using namespace llmpool;
using namespace llmpool::engine;

namespace {

std::string words(uint64_t seed, int n) {
  static const char* kWords[] = {"river", "stone", "light", "market", "window", "garden", "silver", "engine",
                                 "paper",  "cloud", "north", "little", "yellow", "summer", "letter", "bridge"};
  std::mt19937_64 rng(seed);
  std::string s;
  for (int i = 0; i < n; ++i) s += std::string(i ? " " : "") + kWords[rng() % 16];
  return s;
}

struct Load {
  std::string name;
  float temperature;
  float top_p;
  bool echo;
};

double run_load(LocalModel& m, const Load& load, int clients, int requests, int max_tokens, uint64_t seed) {
  std::vector<GenerateRequest> reqs;
  for (int i = 0; i < requests; ++i) {
    GenerateRequest r;
    std::string text = words(seed * 7919 + static_cast<uint64_t>(i), load.echo ? 120 : 40);
    if (load.echo)
      text = "Here is a passage:\n\n" + text + "\n\nRepeat the passage above word for word:\n\n" + text.substr(0, 200);
    r.messages = {{"user", text}};
    r.sampling.temperature = load.temperature;
    r.sampling.top_p = load.top_p;
    r.sampling.max_tokens = max_tokens;
    r.sampling.ignore_eos = true;
    r.sampling.seed = static_cast<uint32_t>(seed * 1000 + static_cast<uint64_t>(i));
    reqs.push_back(std::move(r));
  }
  const auto start = std::chrono::steady_clock::now();
  int64_t tokens = 0;
  // `clients` requests in flight at a time, each sent when one ends.
  size_t next = 0;
  std::vector<std::future<Result<Completion>>> running;
  std::vector<std::shared_ptr<std::promise<Result<Completion>>>> promises;
  auto submit = [&] {
    auto p = std::make_shared<std::promise<Result<Completion>>>();
    running.push_back(p->get_future());
    GenerateCallbacks cb;
    cb.on_done = [p](Result<Completion> r) { p->set_value(std::move(r)); };
    m.submit(reqs[next++], nullptr, std::move(cb));
  };
  while (next < reqs.size() && static_cast<int>(running.size()) < clients) submit();
  while (!running.empty()) {
    for (size_t i = 0; i < running.size(); ++i) {
      if (running[i].wait_for(std::chrono::milliseconds(1)) != std::future_status::ready) continue;
      auto r = running[i].get();
      if (r) tokens += r->usage.completion_tokens;
      else std::fprintf(stderr, "request failed: %s\n", r.status().to_string().c_str());
      running.erase(running.begin() + static_cast<std::ptrdiff_t>(i));
      if (next < reqs.size()) submit();
      break;
    }
  }
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return wall > 0 ? static_cast<double>(tokens) / wall : 0.0;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string target, draft;
  int threads = 2, parallel = 4, context = 1024, clients = 4, requests = 8, max_tokens = 64, repeats = 3,
      draft_max = 16;
  float p_min = 0.75f;
  CLI::App app{"llmpool-spec-bench: speculative decoding in the engine, side by side"};
  app.add_option("--target", target, "target GGUF")->required();
  app.add_option("--draft", draft, "draft GGUF (same vocabulary)")->required();
  app.add_option("--threads", threads)->check(CLI::Range(1, 256));
  app.add_option("--parallel", parallel)->check(CLI::Range(1, 256));
  app.add_option("--context", context)->check(CLI::Range(64, 1 << 20));
  app.add_option("--clients", clients)->check(CLI::Range(1, 4096));
  app.add_option("--requests", requests)->check(CLI::Range(1, 1000000));
  app.add_option("--max-tokens", max_tokens)->check(CLI::Range(1, 1 << 20));
  app.add_option("--repeats", repeats)->check(CLI::Range(1, 100));
  app.add_option("--draft-max", draft_max)->check(CLI::Range(1, 256));
  app.add_option("--p-min", p_min)->check(CLI::Range(0.0, 1.0));
  int target_layers = 0, draft_layers = 0;
  app.add_option("--make-target-layers", target_layers,
                 "write a missing --target: bench-0.5b shape (qwen2 vocab, random weights) with this many layers");
  app.add_option("--make-draft-layers", draft_layers, "write a missing --draft the same way");
  bool make_only = false;
  app.add_flag("--make-only", make_only, "write the missing models, measure nothing");
  CLI11_PARSE(app, argc, argv);
  for (auto [path, layers, seed] : {std::tuple{target, target_layers, 1}, std::tuple{draft, draft_layers, 2}}) {
    if (layers <= 0 || std::filesystem::exists(path)) continue;
    auto preset = find_model_preset("bench-0.5b");
    ModelWriterOptions o;
    o.shape = preset->shape;
    o.shape.n_layer = static_cast<uint32_t>(layers);
    o.seed = static_cast<uint64_t>(seed);
    o.vocab_path = vocab_file_path(LLMPOOL_VOCAB_DIR, preset->vocab_name);
    o.output_path = path;
    std::fprintf(stderr, "writing %s (%d layers)\n", path.c_str(), layers);
    if (Status st = write_model(o); !st) {
      std::fprintf(stderr, "%s\n", st.to_string().c_str());
      return 1;
    }
  }
  if (make_only) return 0;

  const std::vector<std::string> configs = {"none", "draft", "ngram"};
  const std::vector<Load> loads = {{"greedy", 0.0f, 1.0f, false}, {"sampled", 0.8f, 0.95f, false},
                                   {"echo", 0.0f, 1.0f, true}};
  std::map<std::string, std::vector<double>> tok_s;
  std::map<std::string, std::string> acceptance;
  for (int r = 1; r <= repeats; ++r) {
    for (const auto& c : configs) {
      LocalModelSpec spec;
      spec.name = "bench";
      spec.path = target;
      spec.context = context;
      spec.parallel = parallel;
      spec.threads = threads;
      spec.max_queue = 1 << 20;
      if (c == "draft") spec.speculative.draft_path = draft;
      if (c == "ngram") spec.speculative.ngram = 3;
      spec.speculative.max_tokens = draft_max;
      spec.speculative.p_min = p_min;
      auto m = LocalModel::load(spec);
      if (!m) {
        std::fprintf(stderr, "%s: %s\n", c.c_str(), m.status().to_string().c_str());
        return 1;
      }
      run_load(**m, {"warmup", 0.0f, 1.0f, false}, parallel, parallel, 8, 999);
      for (const auto& l : loads) {
        const double v = run_load(**m, l, clients, requests, max_tokens, static_cast<uint64_t>(100 * r));
        tok_s[c + "|" + l.name].push_back(v);
        std::fprintf(stderr, "round %d/%d %s %s: %.2f tok/s\n", r, repeats, c.c_str(), l.name.c_str(), v);
      }
      const EngineStats s = (*m)->stats();
      char buf[160];
      std::snprintf(buf, sizeof buf, "%lld drafted, %lld accepted (%.0f %%), %.2f tokens per round",
                    static_cast<long long>(s.speculative_drafted), static_cast<long long>(s.speculative_accepted),
                    s.speculative_drafted ? 100.0 * s.speculative_accepted / s.speculative_drafted : 0.0,
                    s.speculative_rounds ? 1.0 + double(s.speculative_accepted) / s.speculative_rounds : 1.0);
      acceptance[c] = buf;
    }
  }
  std::printf("| load | llmpool | llmpool draft | ratio | llmpool n-gram | ratio |\n| --- | ---: | ---: | ---: | ---: | ---: |\n");
  for (const auto& l : loads) {
    const double none = median(tok_s["none|" + l.name]), d = median(tok_s["draft|" + l.name]),
                 n = median(tok_s["ngram|" + l.name]);
    std::printf("| %s | %.2f | %.2f | %.2f× | %.2f | %.2f× |\n", l.name.c_str(), none, d, none > 0 ? d / none : 0, n,
                none > 0 ? n / none : 0);
  }
  std::printf("\nlast round: draft %s; n-gram %s\n", acceptance["draft"].c_str(), acceptance["ngram"].c_str());
  return 0;
}
