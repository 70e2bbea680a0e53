// llmpool-loadgen: drives any OpenAI-compatible server with concurrent
// streaming requests and reports throughput and latency (see bench/README.md).
//
// One thread per concurrent client; each sends its requests one after the
// other on fresh connections and timestamps every content delta as its bytes
// leave the socket. The measured phase's wall time runs from the first
// request sent to the last answer ended.
#include <cctype>
#include <csignal>
#include <optional>
#include <filesystem>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <iostream>
#include <atomic>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "http_client.h"
#include "workload.h"

namespace llmpool::bench {
namespace {

struct Options {
  std::string url = "http://127.0.0.1:8080";
  std::string model = "default";
  std::string endpoint = "chat";
  int concurrency = 1;
  int requests = 16;
  int warmup = 0;
  int prompt_tokens = 128;
  int max_tokens = 64;
  std::string mix;
  std::string system;
  uint64_t seed = 42;
  bool shared_prefix = false;
  bool no_stream = false;
  double words_per_token = 0.9;
  double timeout_s = 600;
  std::string api_key;
  std::string json_path;
  std::string dump_odd;
  bool quiet = false;
  double duration_s = 0;        // > 0: the measured phase ends after this long (requests is the cap)
  std::string record_header;    // count requests per value of this response header
  double window_s = 10;         // ... in windows this long
  double temperature = 0;       // > 0: sampled answers (with top_p)
  double top_p = 1;
  int distinct = 0;             // > 0: prompts cycle over this many (warmup sends the same ones)
  int system_tokens = 0;        // > 0: a shared system message of about this many tokens
  int turns = 1;                // > 1: each request is a chat of this many turns, history resent
  int followup_tokens = 32;     // user message length of turns after the first
};

// Everything a client thread needs to send request i of a phase.
struct Phase {
  const char* tag;                 // "Request" or "Warmup": part of each prompt
  std::vector<int> classes;        // class index per request
};

class LoadGenerator {
 public:
  LoadGenerator(const Options& opts, Url url, std::string path, std::vector<LoadClass> classes)
      : opts_(opts), url_(std::move(url)), path_(std::move(path)), classes_(std::move(classes)),
        endpoint_(opts.endpoint == "completions" ? Endpoint::kCompletions : Endpoint::kChat) {}

  // Runs the requests of `phase` on `concurrency` threads; returns the
  // outcomes in request order and sets *wall_s. With `duration_s` > 0 no
  // request starts after that many seconds: the outcomes are those of the
  // requests that started.
  std::vector<RequestOutcome> run(const Phase& phase, int concurrency, double* wall_s,
                                  double duration_s = 0) const {
    const int n = static_cast<int>(phase.classes.size());
    std::vector<std::vector<RequestOutcome>> outcomes(static_cast<size_t>(n));
    std::atomic<int> next{0};
    const auto t0 = Clock::now();
    const auto end = t0 + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(duration_s));
    std::vector<std::thread> clients;
    for (int c = 0; c < std::min(concurrency, n); ++c) {
      clients.emplace_back([&] {
        while (duration_s <= 0 || Clock::now() < end) {
          const int i = next++;
          if (i >= n) break;
          outcomes[static_cast<size_t>(i)] = conversation(phase, i, t0);
        }
      });
    }
    for (std::thread& t : clients) t.join();
    *wall_s = std::chrono::duration<double>(Clock::now() - t0).count();
    // Every index below min(next, n) was taken, and every one taken was run.
    std::vector<RequestOutcome> flat;
    for (int i = 0; i < std::min(next.load(), n); ++i)
      for (auto& o : outcomes[static_cast<size_t>(i)]) flat.push_back(std::move(o));
    return flat;
  }

  const std::vector<LoadClass>& classes() const { return classes_; }
  int max_tokens(int cls) const {
    int m = classes_[static_cast<size_t>(cls)].max_tokens;
    return m > 0 ? m : opts_.max_tokens;
  }

  // The prompt of request i of a phase of the run. With --distinct the
  // prompts cycle over that many, the same in the warmup and measured phases.
  std::string prompt(const char* tag, int i, int cls) const {
    if (opts_.distinct > 0) {
      tag = "Request";
      i %= opts_.distinct;
    }
    return make_prompt(classes_[static_cast<size_t>(cls)].prompt_tokens, opts_.words_per_token, opts_.seed,
                       std::string(tag) + " " + std::to_string(i), opts_.shared_prefix);
  }

  // The system message: --system, then --system-tokens of shared text.
  std::string system() const {
    std::string s = opts_.system;
    if (opts_.system_tokens > 0) {
      if (!s.empty()) s += " ";
      s += make_prompt(opts_.system_tokens, opts_.words_per_token, 4242, "", true);
    }
    return s;
  }

 private:
  // Request i: one turn, or --turns turns of one chat whose history
  // (with the answers as streamed) is resent each turn. A failed turn ends it.
  std::vector<RequestOutcome> conversation(const Phase& phase, int i, Clock::time_point phase_start) const {
    const int cls = phase.classes[static_cast<size_t>(i)];
    const Sampling sampling{opts_.temperature, opts_.top_p};
    const uint64_t seed = opts_.temperature > 0 ? opts_.seed + static_cast<uint64_t>(i) : opts_.seed;
    std::vector<RequestOutcome> out;
    if (opts_.turns <= 1 || endpoint_ != Endpoint::kChat) {
      out.push_back(one(make_request_body(endpoint_, opts_.model, prompt(phase.tag, i, cls), max_tokens(cls), seed,
                                          !opts_.no_stream, system(), sampling),
                        cls, phase_start));
      return out;
    }
    nlohmann::json messages = nlohmann::json::array();
    if (const std::string sys = system(); !sys.empty()) messages.push_back({{"role", "system"}, {"content", sys}});
    for (int turn = 0; turn < opts_.turns; ++turn) {
      const std::string user =
          turn == 0 ? prompt(phase.tag, i, cls)
                    : make_prompt(opts_.followup_tokens, opts_.words_per_token, opts_.seed + static_cast<uint64_t>(turn),
                                  "Follow-up " + std::to_string(turn) + " of " + std::to_string(i), false);
      messages.push_back({{"role", "user"}, {"content", user}});
      out.push_back(one(make_chat_body(opts_.model, messages, max_tokens(cls), seed, !opts_.no_stream, sampling), cls,
                        phase_start));
      if (!out.back().ok) break;
      messages.push_back({{"role", "assistant"}, {"content", out.back().text}});
    }
    return out;
  }

  RequestOutcome one(std::string body, int cls, Clock::time_point phase_start) const {
    HttpPost post;
    post.url = url_;
    post.path = path_;
    post.timeout_s = opts_.timeout_s;
    post.body = std::move(body);
    if (!opts_.api_key.empty()) post.headers.emplace_back("Authorization", "Bearer " + opts_.api_key);

    const auto start = Clock::now();
    const double start_s = std::chrono::duration<double>(start - phase_start).count();
    ResponseReader reader(endpoint_, start, cls, max_tokens(cls), !opts_.dump_odd.empty());
    std::string header;
    HttpHandlers handlers;
    handlers.on_head = [&](const ResponseHead& head) {
      reader.on_head(head);
      if (!opts_.record_header.empty()) header = head.header(opts_.record_header);
    };
    handlers.on_body = [&](std::string_view bytes, Clock::time_point at) { return reader.on_body(bytes, at); };
    try {
      std::string error = http_post(post, handlers);
      RequestOutcome out = reader.finish(error, Clock::now());
      out.start_s = start_s;
      out.header = std::move(header);
      return out;
    } catch (const std::exception& e) {
      // Whatever a strange answer makes the parsers throw fails one request,
      // not the run.
      RequestOutcome failed;
      failed.cls = cls;
      failed.max_tokens = max_tokens(cls);
      failed.error = std::string("exception: ") + e.what();
      failed.start_s = start_s;
      return failed;
    }
  }

  const Options& opts_;
  Url url_;
  std::string path_;
  std::vector<LoadClass> classes_;
  Endpoint endpoint_;
};

std::string fmt(double v, int decimals = 1) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

void print_row(const char* name, const Summary& s, int decimals = 1) {
  std::printf("  %-22s %10s %10s %10s %10s %8zu\n", name, fmt(s.p50, decimals).c_str(), fmt(s.p99, decimals).c_str(),
              fmt(s.mean, decimals).c_str(), fmt(s.max, decimals).c_str(), s.n);
}

void print_report(const Options& o, const std::string& target, const LoadGenerator& gen, const PhaseStats& s,
                  const std::vector<PhaseStats>& per_class) {
  std::printf("llmpool-loadgen  %s  model %s\n", target.c_str(), o.model.c_str());
  std::printf("  concurrency %d, %d requests (+%d warmup), max_tokens %d, %s, seed %llu%s\n", o.concurrency,
              o.requests, o.warmup, o.max_tokens,
              o.mix.empty() ? ("prompt ~" + std::to_string(o.prompt_tokens) + " tokens").c_str()
                            : ("mix " + o.mix).c_str(),
              static_cast<unsigned long long>(o.seed), o.shared_prefix ? ", shared prefix" : "");
  std::printf("  %-22s %d ok, %d failed   wall %s s   %s req/s\n", "requests", s.ok, s.failed,
              fmt(s.wall_s, 2).c_str(), fmt(s.requests_per_s, 2).c_str());
  std::printf("  %-22s %ld tokens   %s tok/s aggregate   (usage in %d/%d answers, streamed %d/%d, short %d)\n",
              "output", s.output_tokens, fmt(s.output_tok_s).c_str(), s.usage_seen, s.ok, s.streamed, s.ok,
              s.short_outputs);
  std::printf("  %-22s %s tokens mean (usage.prompt_tokens)", "prompt", fmt(s.prompt_tokens_mean).c_str());
  if (s.cached_tokens_mean >= 0) std::printf(", %s of them cached", fmt(s.cached_tokens_mean).c_str());
  std::printf("\n");
  std::printf("  %-22s %10s %10s %10s %10s %8s\n", "", "p50", "p99", "mean", "max", "n");
  print_row("TTFT ms", s.ttft_ms);
  print_row("ITL ms", s.itl_ms, 2);
  print_row("E2E ms", s.e2e_ms);
  print_row("decode tok/s/stream", s.decode_tok_s);
  if (per_class.size() > 1) {
    std::printf("  %-10s %6s %6s %8s %10s %10s %9s %9s %10s %10s %8s\n", "class", "ok", "fail", "prompt",
                "TTFT p50", "TTFT p99", "ITL p50", "ITL p99", "E2E p50", "E2E p99", "tok/s");
    for (size_t c = 0; c < per_class.size(); ++c) {
      const PhaseStats& k = per_class[c];
      std::printf("  %-10s %6d %6d %8s %10s %10s %9s %9s %10s %10s %8s\n", gen.classes()[c].name.c_str(), k.ok,
                  k.failed, fmt(k.prompt_tokens_mean).c_str(), fmt(k.ttft_ms.p50).c_str(),
                  fmt(k.ttft_ms.p99).c_str(), fmt(k.itl_ms.p50, 2).c_str(), fmt(k.itl_ms.p99, 2).c_str(),
                  fmt(k.e2e_ms.p50).c_str(), fmt(k.e2e_ms.p99).c_str(), fmt(k.output_tok_s).c_str());
    }
  }
  for (const auto& [msg, count] : s.errors) std::printf("  error x%d: %s\n", count, msg.c_str());
  for (const auto& [msg, count] : s.notes) std::printf("  note x%d: %s\n", count, msg.c_str());
}

// Requests per header value and window, a row per window.
void print_header_counts(const HeaderCounts& c) {
  std::printf("  %s per %s s window (by request start):\n", c.header.c_str(), fmt(c.window_s, 1).c_str());
  std::printf("  %-14s", "window s");
  for (const auto& [value, n] : c.total) std::printf(" %14s", value.c_str());
  std::printf("\n");
  for (const HeaderWindow& w : c.windows) {
    std::printf("  %-14s", (fmt(w.start_s, 1) + "-" + fmt(w.end_s, 1)).c_str());
    for (const auto& [value, n] : c.total) {
      auto it = w.counts.find(value);
      std::printf(" %14d", it == w.counts.end() ? 0 : it->second);
    }
    std::printf("\n");
  }
  std::printf("  %-14s", "total");
  for (const auto& [value, n] : c.total) std::printf(" %14d", n);
  std::printf("\n");
}

// Linux's CPU pressure (PSI): microseconds in which some runnable task
// waited for a CPU. Over a phase it tells whether the machine was contended
// (by the server's own threads, or by anything else). -1 where unavailable.
long long cpu_pressure_us() {
  std::ifstream in("/proc/pressure/cpu");
  std::string word;
  while (in >> word) {
    if (word.rfind("total=", 0) == 0) return std::stoll(word.substr(6));
  }
  return -1;
}

double loadavg_1min() {
  std::ifstream in("/proc/loadavg");
  double v = -1;
  in >> v;
  return in ? v : -1;
}

std::string utc_now() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// For looking into what looked wrong: one file per failed or noted request,
// with what was sent and the bytes that came back.
void dump_odd(const Options& o, const LoadGenerator& gen, const std::vector<RequestOutcome>& outcomes) {
  std::error_code ec;
  std::filesystem::create_directories(o.dump_odd, ec);
  int written = 0;
  for (size_t i = 0; i < outcomes.size(); ++i) {
    const RequestOutcome& r = outcomes[i];
    if (r.ok && r.notes.empty()) continue;
    std::ofstream out(std::filesystem::path(o.dump_odd) / ("request-" + std::to_string(i) + ".txt"));
    out << "# request " << i << ", class " << gen.classes()[static_cast<size_t>(r.cls)].name << "\n";
    out << "# " << (r.ok ? "ok" : "failed: " + r.error) << "\n";
    for (const std::string& n : r.notes) out << "# note: " << n << "\n";
    out << "# usage: prompt_tokens " << r.prompt_tokens << ", completion_tokens " << r.completion_tokens
        << "; content deltas " << r.delta_times.size() << "\n";
    out << "# prompt: " << gen.prompt("Request", static_cast<int>(i), r.cls) << "\n\n" << r.raw;
    ++written;
  }
  if (!o.quiet) std::cerr << "llmpool-loadgen: " << written << " odd answers written to " << o.dump_odd << "\n";
}

int run_main(int argc, char** argv) {
  Options o;
  CLI::App app{"llmpool-loadgen: drives an OpenAI-compatible server with concurrent streaming requests"};
  app.option_defaults()->always_capture_default();
  app.add_option("--url", o.url, "server base URL; /v1 is added unless the path ends with it");
  app.add_option("--model", o.model, "the request's \"model\"");
  app.add_option("--endpoint", o.endpoint, "chat (/v1/chat/completions) or completions (/v1/completions)")
      ->check(CLI::IsMember({"chat", "completions"}));
  app.add_option("-c,--concurrency", o.concurrency, "concurrent clients")->check(CLI::Range(1, 4096));
  app.add_option("-n,--requests", o.requests, "measured requests in all")->check(CLI::Range(0, 10000000));
  app.add_option("--warmup", o.warmup, "requests sent first, at the same concurrency, not counted")
      ->check(CLI::Range(0, 1000000));
  app.add_option("-p,--prompt-tokens", o.prompt_tokens, "prompt length in tokens (approximate)")
      ->check(CLI::Range(1, 1000000));
  app.add_option("-t,--max-tokens", o.max_tokens, "tokens generated per request")->check(CLI::Range(1, 1000000));
  app.add_option("--mix", o.mix, "mixed load: name:prompt_tokens:share[:max_tokens],... (replaces --prompt-tokens)");
  app.add_option("--system", o.system, "a system message sent before each prompt (chat only)");
  app.add_option("--seed", o.seed, "seed of the prompts (and the request's \"seed\")");
  app.add_flag("--shared-prefix", o.shared_prefix, "all prompts share their text; the request number goes last");
  app.add_flag("--no-stream", o.no_stream, "send \"stream\": false (TTFT is then the whole latency)");
  app.add_option("--words-per-token", o.words_per_token, "prompt words per token (0.9: about the asked length with the Qwen2 vocabulary)")->check(CLI::Range(0.05, 10.0));
  app.add_option("--timeout", o.timeout_s, "seconds a request may take")->check(CLI::Range(0.1, 86400.0));
  app.add_option("--api-key", o.api_key, "sent as Authorization: Bearer KEY");
  app.add_option("--json", o.json_path, "write the results as JSON to this file");
  app.add_option("--dump-odd", o.dump_odd,
                 "write the request and raw answer of every failed or noted measured request into this folder");
  app.add_flag("-q,--quiet", o.quiet, "no progress lines on stderr");
  app.add_option("--duration", o.duration_s,
                 "measure for this many seconds (no request starts later); --requests is then a cap, "
                 "1000000 unless given")
      ->check(CLI::Range(0.0, 86400.0));
  app.add_option("--record-header", o.record_header,
                 "count measured requests per value of this response header (e.g. x-llmpool-model), per window");
  app.add_option("--window", o.window_s, "seconds per window of --record-header")->check(CLI::Range(0.1, 86400.0));
  app.add_option("--temperature", o.temperature, "sampling temperature; 0: greedy")->check(CLI::Range(0.0, 2.0));
  app.add_option("--top-p", o.top_p, "nucleus sampling, with --temperature > 0")->check(CLI::Range(0.01, 1.0));
  app.add_option("--distinct", o.distinct,
                 "prompts cycle over this many (repeated prompts); the warmup sends the same ones")
      ->check(CLI::Range(0, 1000000));
  app.add_option("--system-tokens", o.system_tokens, "add a shared system message of about this many tokens")
      ->check(CLI::Range(0, 1000000));
  app.add_option("--turns", o.turns, "chat turns per request, the whole history resent each turn (chat only)")
      ->check(CLI::Range(1, 1000));
  app.add_option("--followup-tokens", o.followup_tokens, "user message length of the turns after the first")
      ->check(CLI::Range(1, 1000000));
  CLI11_PARSE(app, argc, argv);
  for (char& ch : o.record_header) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (o.duration_s > 0 && app.count("--requests") == 0) o.requests = 1000000;

  std::string error;
  auto url = parse_url(o.url, &error);
  if (!url) {
    std::cerr << "llmpool-loadgen: --url: " << error << "\n";
    return 2;
  }
  std::vector<LoadClass> classes;
  if (o.mix.empty()) {
    classes.push_back({"all", o.prompt_tokens, 1.0, 0});
  } else {
    auto parsed = parse_mix(o.mix, &error);
    if (!parsed) {
      std::cerr << "llmpool-loadgen: --mix: " << error << "\n";
      return 2;
    }
    classes = std::move(*parsed);
  }
  std::string path = url->path;
  if (path.size() < 3 || path.compare(path.size() - 3, 3, "/v1") != 0) path += "/v1";
  path += o.endpoint == "chat" ? "/chat/completions" : "/completions";
  const std::string target = "http://" + o.url.substr(7, o.url.find('/', 7) - 7) + path;

  LoadGenerator gen(o, *url, path, classes);
  int warmup_failed = 0;
  if (o.warmup > 0) {
    if (!o.quiet) std::cerr << "llmpool-loadgen: warmup, " << o.warmup << " requests\n";
    double wall = 0;
    Phase warm{"Warmup", assign_classes(classes, o.warmup, o.seed + 1)};
    PhaseStats w = aggregate(gen.run(warm, o.concurrency, &wall), wall);
    warmup_failed = w.failed;
    if (w.failed > 0) {
      std::cerr << "llmpool-loadgen: " << w.failed << " warmup requests failed: " << w.errors.begin()->first << "\n";
    }
  }
  if (o.requests == 0) {
    std::printf("llmpool-loadgen  %s  model %s: warmup only, %d requests, %d failed\n", target.c_str(),
                o.model.c_str(), o.warmup, warmup_failed);
    return warmup_failed > 0 ? 3 : 0;
  }
  if (!o.quiet) {
    std::cerr << "llmpool-loadgen: measuring, " << o.requests << " requests at concurrency " << o.concurrency
              << "\n";
  }
  const std::string started_at = utc_now();
  const double load_before = loadavg_1min();
  const long long pressure_before = cpu_pressure_us();
  double wall = 0;
  Phase measured{"Request", assign_classes(classes, o.requests, o.seed)};
  std::vector<RequestOutcome> outcomes = gen.run(measured, o.concurrency, &wall, o.duration_s);
  if (o.duration_s > 0) o.requests = static_cast<int>(outcomes.size());
  const long long pressure_after = cpu_pressure_us();
  nlohmann::json machine = {{"loadavg_1min_before", load_before}, {"loadavg_1min_after", loadavg_1min()}};
  if (pressure_before >= 0 && pressure_after >= 0 && wall > 0) {
    machine["cpu_pressure_some_pct"] = static_cast<double>(pressure_after - pressure_before) / (wall * 1e4);
  }
  PhaseStats stats = aggregate(outcomes, wall);
  std::vector<PhaseStats> per_class;
  for (size_t c = 0; c < classes.size(); ++c) per_class.push_back(aggregate(outcomes, wall, static_cast<int>(c)));

  print_report(o, target, gen, stats, per_class);
  std::optional<HeaderCounts> header_counts;
  if (!o.record_header.empty()) {
    header_counts = count_header(outcomes, o.record_header, o.window_s);
    print_header_counts(*header_counts);
  }
  if (machine.contains("cpu_pressure_some_pct")) {
    std::printf("  %-22s load average %s -> %s, CPU pressure %s%% of the time\n", "machine",
                fmt(load_before, 2).c_str(), fmt(machine["loadavg_1min_after"].get<double>(), 2).c_str(),
                fmt(machine["cpu_pressure_some_pct"].get<double>()).c_str());
  }

  if (!o.json_path.empty()) {
    nlohmann::json mix = nlohmann::json::array();
    nlohmann::json by_class = nlohmann::json::object();
    for (size_t c = 0; c < classes.size(); ++c) {
      mix.push_back({{"name", classes[c].name},
                     {"prompt_tokens", classes[c].prompt_tokens},
                     {"share", classes[c].share},
                     {"max_tokens", gen.max_tokens(static_cast<int>(c))}});
      by_class[classes[c].name] = to_json(per_class[c]);
    }
    nlohmann::json doc = {
        {"tool", "llmpool-loadgen"},
        {"started_at", started_at},
        {"config",
         {{"url", o.url},
          {"target", target},
          {"model", o.model},
          {"endpoint", o.endpoint},
          {"concurrency", o.concurrency},
          {"requests", o.requests},
          {"warmup", o.warmup},
          {"prompt_tokens", o.prompt_tokens},
          {"max_tokens", o.max_tokens},
          {"mix", mix},
          {"seed", o.seed},
          {"shared_prefix", o.shared_prefix},
          {"system", o.system},
          {"stream", !o.no_stream},
          {"words_per_token", o.words_per_token},
          {"duration_s", o.duration_s},
          {"temperature", o.temperature},
          {"top_p", o.top_p},
          {"distinct", o.distinct},
          {"system_tokens", o.system_tokens},
          {"turns", o.turns}}},
        {"machine", machine},
        {"results", to_json(stats)},
        {"classes", by_class},
    };
    if (header_counts) doc["header_counts"] = to_json(*header_counts);
    std::ofstream out(o.json_path);
    // Error messages quote the server's bytes, cut anywhere: replace invalid UTF-8.
    out << doc.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    if (!out) {
      std::cerr << "llmpool-loadgen: cannot write " << o.json_path << "\n";
      return 2;
    }
  }
  if (!o.dump_odd.empty()) dump_odd(o, gen, outcomes);
  return stats.failed > 0 ? 3 : 0;
}

}  // namespace
}  // namespace llmpool::bench

int main(int argc, char** argv) {
  // A server that closes mid-request must fail that request, not kill us.
  std::signal(SIGPIPE, SIG_IGN);
  return llmpool::bench::run_main(argc, argv);
}
