// llmpool-bench-report: turns the JSON files of llmpool-loadgen runs (and
// llama-bench's JSON) into the Markdown tables of bench/RESULTS.md. It is the
// arithmetic half of bench/compare.sh, in C++ so that the harness needs no
// Python or jq.
//
// The manifest has one line per loadgen run: "server<TAB>load<TAB>repeat<TAB>file".
// The first server named is the baseline: ratios are other ÷ baseline.
// Every figure is the median over the repeats of that server and load.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

namespace llmpool::bench {
namespace {

using nlohmann::json;

struct Run {
  std::string server;
  std::string load;
  json doc;
};

double median(std::vector<double> v) {
  if (v.empty()) return NAN;
  std::sort(v.begin(), v.end());
  size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

std::string num(double v) {
  if (std::isnan(v)) return "–";
  char buf[32];
  double a = std::fabs(v);
  std::snprintf(buf, sizeof buf, a >= 100 ? "%.0f" : a >= 10 ? "%.1f" : "%.2f", v);
  return buf;
}

std::string ratio(double a, double b) {
  if (std::isnan(a) || std::isnan(b) || b == 0) return "–";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", a / b);
  return buf;
}

// A JSON value at a path of keys, as a double; NaN when any step is missing.
double at(const json& j, std::initializer_list<const char*> path) {
  const json* cur = &j;
  for (const char* key : path) {
    if (!cur->is_object() || !cur->contains(key)) return NAN;
    cur = &(*cur)[key];
  }
  return cur->is_number() ? cur->get<double>() : NAN;
}

// A figure of one table row: how to read it from a run's document.
struct Figure {
  std::string label;
  std::vector<std::string> path;   // under "results" or under "classes.<class>"
  std::string cls;                 // "" for the whole load
  bool needs_stream = false;       // meaningless when the answers were not streamed
  bool is_rate = false;            // higher is better
};

double read_figure(const json& doc, const Figure& f) {
  const json* base = nullptr;
  if (f.cls.empty()) {
    base = doc.contains("results") ? &doc["results"] : nullptr;
  } else if (doc.contains("classes") && doc["classes"].contains(f.cls)) {
    base = &doc["classes"][f.cls];
  }
  if (base == nullptr) return NAN;
  const json* cur = base;
  for (const std::string& key : f.path) {
    if (!cur->is_object() || !cur->contains(key)) return NAN;
    cur = &(*cur)[key];
  }
  if (!cur->is_number()) return NAN;
  // A latency measured on no ok request is absent, not zero.
  if (base->value("requests_ok", 0) == 0) return NAN;
  return cur->get<double>();
}

bool streamed(const json& doc) {
  const json& r = doc.at("results");
  return r.value("requests_ok", 0) > 0 && r.value("streamed", 0) == r.value("requests_ok", 0);
}

std::string describe_load(const json& config) {
  std::ostringstream out;
  out << config.value("concurrency", 0) << " client" << (config.value("concurrency", 0) == 1 ? "" : "s") << ", "
      << config.value("requests", 0) << " requests, ";
  const json mix = config.value("mix", json::array());
  if (mix.size() > 1) {
    out << "mix";
    for (const json& c : mix) {
      out << " " << c.value("name", "?") << " ~" << c.value("prompt_tokens", 0) << "×"
          << std::lround(100 * c.value("share", 0.0) /
                         [&] {
                           double t = 0;
                           for (const json& k : mix) t += k.value("share", 0.0);
                           return t;
                         }())
          << "%";
    }
  } else {
    out << "prompt ~" << config.value("prompt_tokens", 0);
  }
  out << ", " << config.value("max_tokens", 0) << " out";
  return out.str();
}

class Report {
 public:
  void add(Run run) {
    if (std::find(servers_.begin(), servers_.end(), run.server) == servers_.end()) servers_.push_back(run.server);
    if (std::find(loads_.begin(), loads_.end(), run.load) == loads_.end()) loads_.push_back(run.load);
    runs_.push_back(std::move(run));
  }

  void set_llama_bench(json doc) { llama_bench_ = std::move(doc); }
  void set_max_pressure(double pct) { max_pressure_ = pct; }

  void write(std::ostream& out) const {
    side_by_side(out);
    single_stream(out);
    protocol(out);
  }

 private:
  std::vector<const Run*> runs_of(const std::string& server, const std::string& load) const {
    std::vector<const Run*> out;
    for (const Run& r : runs_) {
      if (r.server == server && r.load == load) out.push_back(&r);
    }
    return out;
  }

  static double pressure(const Run& r) { return at(r.doc, {"machine", "cpu_pressure_some_pct"}); }

  // The rounds a server's figures for a load come from: those in which the
  // machine was quiet (CPU pressure at most max_pressure_, or unknown), or
  // all of them, with *busy set, when none was.
  std::vector<const Run*> used_runs(const std::string& server, const std::string& load, bool* busy) const {
    std::vector<const Run*> all = runs_of(server, load), quiet;
    for (const Run* r : all) {
      double p = pressure(*r);
      if (std::isnan(p) || p <= max_pressure_) quiet.push_back(r);
    }
    *busy = quiet.empty() && !all.empty();
    return quiet.empty() ? all : quiet;
  }

  // The median of a figure over a server's used rounds of a load, and
  // whether those answers were streamed.
  std::pair<double, bool> figure(const std::string& server, const std::string& load, const Figure& f) const {
    std::vector<double> v;
    bool all_streamed = true;
    bool busy = false;
    for (const Run* r : used_runs(server, load, &busy)) {
      double x = read_figure(r->doc, f);
      if (!std::isnan(x)) v.push_back(x);
      all_streamed = all_streamed && streamed(r->doc);
    }
    return {median(v), all_streamed};
  }

  std::string range(const std::string& server, const std::string& load, const Figure& f) const {
    std::vector<double> v;
    bool busy = false;
    for (const Run* r : used_runs(server, load, &busy)) {
      double x = read_figure(r->doc, f);
      if (!std::isnan(x)) v.push_back(x);
    }
    if (v.size() < 2) return "";
    auto [lo, hi] = std::minmax_element(v.begin(), v.end());
    return " (" + num(*lo) + "–" + num(*hi) + ")";
  }

  std::vector<Figure> figures(const json& config) const {
    std::vector<Figure> f = {
        {"output tok/s", {"output_tok_s"}, "", false, true},
        {"TTFT p50 ms", {"ttft_ms", "p50"}, "", false, false},
        {"TTFT p99 ms", {"ttft_ms", "p99"}, "", false, false},
        {"ITL p50 ms", {"itl_ms", "p50"}, "", true, false},
        {"ITL p99 ms", {"itl_ms", "p99"}, "", true, false},
        {"E2E p50 ms", {"e2e_ms", "p50"}, "", false, false},
        {"cached prompt tokens (mean)", {"cached_tokens_mean"}, "", false, true},
    };
    const json mix = config.value("mix", json::array());
    if (mix.size() > 1) {
      for (const json& c : mix) {
        std::string name = c.value("name", "");
        f.push_back({"TTFT p50 ms, " + name, {"ttft_ms", "p50"}, name, false, false});
        f.push_back({"ITL p99 ms, " + name, {"itl_ms", "p99"}, name, true, false});
      }
    }
    return f;
  }

  void side_by_side(std::ostream& out) const {
    out << "## Side by side\n\n";
    out << "Each figure is the median over the rounds (tok/s also shows the range). Rounds in which the "
           "machine was busy with other work (CPU pressure above "
        << num(max_pressure_)
        << " %: the share of the load's time in which some task waited for a CPU, Linux PSI) are left out "
           "whenever a quieter round of the same server and load exists; \"rounds used\" says how many were "
           "kept and their median CPU pressure, and † marks figures that come from busy rounds only. ";
    if (servers_.size() > 1) {
      out << "ratio = " << servers_[1] << " ÷ " << servers_[0]
          << ": above 1 is better for tok/s, below 1 is better for latencies. ";
    }
    out << "‡ = the answers were not streamed, so TTFT is the whole answer's latency and there is no ITL.\n\n";
    out << "| load | figure |";
    for (const std::string& s : servers_) out << " " << s << " |";
    if (servers_.size() > 1) out << " ratio |";
    out << "\n| --- | --- |";
    for (size_t i = 0; i < servers_.size(); ++i) out << " ---: |";
    if (servers_.size() > 1) out << " ---: |";
    out << "\n";
    for (const std::string& load : loads_) {
      const json* config = nullptr;
      for (const Run& r : runs_) {
        if (r.load == load) {
          config = &r.doc["config"];
          break;
        }
      }
      bool first = true;
      for (const Figure& f : figures(*config)) {
        out << "| " << (first ? "**" + load + "**: " + describe_load(*config) : "") << " | " << f.label << " |";
        first = false;
        std::vector<double> values;
        for (const std::string& s : servers_) {
          auto [v, all_streamed] = figure(s, load, f);
          if (f.needs_stream && !all_streamed) v = NAN;
          values.push_back(v);
          bool busy = false;
          used_runs(s, load, &busy);
          out << " " << num(v) << (f.is_rate ? range(s, load, f) : "")
              << (!all_streamed && !f.needs_stream && !f.is_rate ? " ‡" : "") << (busy ? " †" : "") << " |";
        }
        if (servers_.size() > 1) out << " " << ratio(values[1], values[0]) << " |";
        out << "\n";
      }
      out << "|  | rounds used (CPU pressure %) |";
      for (const std::string& s : servers_) {
        bool busy = false;
        std::vector<const Run*> used = used_runs(s, load, &busy);
        std::vector<double> p;
        for (const Run* r : used) {
          if (!std::isnan(pressure(*r))) p.push_back(pressure(*r));
        }
        out << " " << (busy ? 0 : used.size()) << "/" << runs_of(s, load).size() << " (" << num(median(p)) << ")"
            << (busy ? " †" : "") << " |";
      }
      if (servers_.size() > 1) out << "  |";
      out << "\n";
    }
    out << "\n";
  }

  void single_stream(std::ostream& out) const {
    // The load with one client, if there is one.
    std::string load;
    for (const Run& r : runs_) {
      const json& config = r.doc["config"];
      if (config.value("concurrency", 0) == 1 && config.value("mix", json::array()).size() <= 1) {
        load = r.load;
        break;
      }
    }
    double tg = NAN, pp = NAN;
    int tg_n = 0, pp_n = 0;
    if (llama_bench_.is_array()) {
      for (const json& t : llama_bench_) {
        if (t.value("n_prompt", 0) == 0 && t.value("n_gen", 0) > 0) {
          tg = t.value("avg_ts", NAN);
          tg_n = t.value("n_gen", 0);
        } else if (t.value("n_gen", 0) == 0 && t.value("n_prompt", 0) > 0) {
          pp = t.value("avg_ts", NAN);
          pp_n = t.value("n_prompt", 0);
        }
      }
    }
    out << "## Single stream\n\n";
    if (!std::isnan(tg)) {
      out << "llama-bench on the same model and threads: pp" << pp_n << " " << num(pp) << " tok/s, tg" << tg_n
          << " " << num(tg) << " tok/s (no HTTP, no sampling, no chat template).\n\n";
    }
    if (load.empty()) {
      out << "No load with one client was run.\n\n";
      return;
    }
    out << "From load **" << load << "**, the same rounds as above. Decode tok/s is each answer's (deltas − 1) ÷ (last − first delta), "
        << "the median over answers then over rounds; output tok/s also counts prefill and HTTP.\n\n";
    out << "| figure |";
    for (const std::string& s : servers_) out << " " << s << " |";
    out << "\n| --- |";
    for (size_t i = 0; i < servers_.size(); ++i) out << " ---: |";
    out << "\n";
    Figure decode{"decode tok/s", {"decode_tok_s_per_stream", "p50"}, "", true, true};
    Figure output{"output tok/s", {"output_tok_s"}, "", false, true};
    auto row = [&](const std::string& label, const Figure& f, bool vs_tg) {
      out << "| " << label << " |";
      for (const std::string& s : servers_) {
        auto [v, all_streamed] = figure(s, load, f);
        if (f.needs_stream && !all_streamed) v = NAN;
        bool busy = false;
        used_runs(s, load, &busy);
        out << " " << (vs_tg ? ratio(v, tg) : num(v)) << (busy ? " †" : "") << " |";
      }
      out << "\n";
    };
    row("decode tok/s per stream", decode, false);
    row("output tok/s", output, false);
    if (!std::isnan(tg)) {
      row("decode ÷ llama-bench tg" + std::to_string(tg_n), decode, true);
      row("output ÷ llama-bench tg" + std::to_string(tg_n), output, true);
    }
    out << "\n";
  }

  void protocol(std::ostream& out) const {
    out << "## What the servers answered\n\n";
    out << "Totals over every measured request of every load and round, busy rounds included. Prompt tokens are the servers' own "
           "usage.prompt_tokens (means per load); CPU pressure is the median share of time some task waited "
           "for a CPU during a load (Linux PSI; anything above a few % means the machine was busy).\n\n";
    std::vector<std::string> problems;
    out << "| server | ok | failed | streamed | usage | short | prompt tokens | CPU pressure % |\n";
    out << "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |\n";
    for (const std::string& s : servers_) {
      int ok = 0, failed = 0, stream = 0, usage = 0, short_out = 0;
      std::vector<double> pressure;
      std::map<std::string, int> errors, notes;
      std::string prompts;
      for (const std::string& load : loads_) {
        std::vector<double> p;
        for (const Run* r : runs_of(s, load)) {
          const json& res = r->doc["results"];
          ok += res.value("requests_ok", 0);
          failed += res.value("requests_failed", 0);
          stream += res.value("streamed", 0);
          usage += res.value("usage_seen", 0);
          short_out += res.value("short_outputs", 0);
          double pt = res.value("prompt_tokens_mean", 0.0);
          if (pt > 0) p.push_back(pt);
          double pr = at(r->doc, {"machine", "cpu_pressure_some_pct"});
          if (!std::isnan(pr)) pressure.push_back(pr);
          // value() returns a copy: keep it alive for the loops.
          const json errs = res.value("errors", json::object());
          const json odd = res.value("notes", json::object());
          for (const auto& [msg, n] : errs.items()) errors[msg] += n.get<int>();
          for (const auto& [msg, n] : odd.items()) notes[msg] += n.get<int>();
        }
        if (!p.empty()) prompts += (prompts.empty() ? "" : ", ") + load + " " + num(median(p));
      }
      out << "| " << s << " | " << ok << " | " << failed << " | " << stream << " | " << usage << " | " << short_out
          << " | " << (prompts.empty() ? "–" : prompts) << " | " << num(median(pressure)) << " |\n";
      for (const auto& [msg, n] : errors) problems.push_back(s + ": " + std::to_string(n) + " failed: " + msg);
      for (const auto& [msg, n] : notes) {
        problems.push_back(s + ": " + std::to_string(n) + (n == 1 ? " answer: " : " answers: ") + msg);
      }
    }
    out << "\n";
    if (!problems.empty()) {
      out << "Failures and protocol notes:\n\n";
      for (const std::string& p : problems) out << "- " << p << "\n";
      out << "\n";
    }
  }

  std::vector<std::string> servers_;
  std::vector<std::string> loads_;
  std::vector<Run> runs_;
  json llama_bench_;
  double max_pressure_ = 10;
};

int run_main(int argc, char** argv) {
  std::string manifest_path, llama_bench_path;
  CLI::App app{"llmpool-bench-report: Markdown tables from llmpool-loadgen JSON files"};
  app.add_option("--manifest", manifest_path, "lines of server<TAB>load<TAB>repeat<TAB>json file")->required();
  app.add_option("--llama-bench", llama_bench_path, "llama-bench -o json output");
  double max_pressure = 10;
  app.add_option("--max-pressure", max_pressure,
                 "leave out rounds with more CPU pressure (%) when a quieter round exists (default 10)")
      ->check(CLI::Range(0.0, 100.0));
  CLI11_PARSE(app, argc, argv);

  std::ifstream manifest(manifest_path);
  if (!manifest) {
    std::cerr << "llmpool-bench-report: cannot read " << manifest_path << "\n";
    return 2;
  }
  Report report;
  report.set_max_pressure(max_pressure);
  std::string line;
  int runs = 0;
  while (std::getline(manifest, line)) {
    if (line.empty()) continue;
    std::vector<std::string> f;
    std::istringstream fields(line);
    for (std::string x; std::getline(fields, x, '\t');) f.push_back(x);
    if (f.size() != 4) {
      std::cerr << "llmpool-bench-report: bad manifest line: " << line << "\n";
      return 2;
    }
    // Relative file names are relative to the manifest's folder.
    std::string file = f[3];
    if (!file.empty() && file[0] != '/') {
      size_t slash = manifest_path.rfind('/');
      if (slash != std::string::npos) file = manifest_path.substr(0, slash + 1) + file;
    }
    std::ifstream in(file);
    json doc = json::parse(in, nullptr, false);
    if (doc.is_discarded() || !doc.is_object() || !doc.contains("results") || !doc.contains("config")) {
      // A run that wrote nothing (the server died, say) is left out, loudly.
      std::cerr << "llmpool-bench-report: skipping " << file << ": not a loadgen result\n";
      continue;
    }
    report.add({f[0], f[1], std::move(doc)});
    ++runs;
  }
  if (!llama_bench_path.empty()) {
    std::ifstream in(llama_bench_path);
    json doc = json::parse(in, nullptr, false);
    if (!doc.is_discarded()) report.set_llama_bench(std::move(doc));
  }
  if (runs == 0) {
    std::cerr << "llmpool-bench-report: no results\n";
    return 1;
  }
  report.write(std::cout);
  return 0;
}

}  // namespace
}  // namespace llmpool::bench

int main(int argc, char** argv) { return llmpool::bench::run_main(argc, argv); }
