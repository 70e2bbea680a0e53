#include "obs/metrics.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace llmpool::obs {
namespace {

void atomic_add(std::atomic<double>& a, double v) {
  double cur = a.load(std::memory_order_relaxed);
  while (!a.compare_exchange_weak(cur, cur + v, std::memory_order_relaxed)) {
  }
}

std::string number(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.17g", v);
  return buf;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

// Label text with an extra label appended (for histogram `le`).
std::string with_label(const std::string& labels, const std::string& extra) {
  if (labels.empty()) return "{" + extra + "}";
  return labels.substr(0, labels.size() - 1) + "," + extra + "}";
}

}  // namespace

void Counter::inc(double v) {
  if (v > 0) atomic_add(value_, v);
}
double Counter::value() const { return value_.load(std::memory_order_relaxed); }

void Gauge::add(double v) { atomic_add(value_, v); }

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(new std::atomic<uint64_t>[bounds_.size() + 1]) {
  std::sort(bounds_.begin(), bounds_.end());
  for (size_t i = 0; i <= bounds_.size(); ++i) counts_[i].store(0);
}

void Histogram::observe(double v) {
  size_t i = static_cast<size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  atomic_add(sum_, v);
}

std::vector<uint64_t> Histogram::cumulative_counts() const {
  std::vector<uint64_t> out(bounds_.size() + 1);
  uint64_t acc = 0;
  for (size_t i = 0; i <= bounds_.size(); ++i) out[i] = (acc += counts_[i].load(std::memory_order_relaxed));
  return out;
}

uint64_t Histogram::count() const { return cumulative_counts().back(); }

void MetricsRegistry::set_label_names(std::map<std::string, std::string, std::less<>> names) {
  auto next = std::make_shared<const std::map<std::string, std::string, std::less<>>>(std::move(names));
  std::lock_guard lock(names_mu_);
  names_ = std::move(next);
}

std::string MetricsRegistry::label(std::string_view name) const {
  std::shared_ptr<const std::map<std::string, std::string, std::less<>>> names;
  {
    std::lock_guard lock(names_mu_);
    names = names_;
  }
  if (names) {
    auto it = names->find(name);
    if (it != names->end()) return it->second;
  }
  return kUnknownLabel;
}

std::vector<double> latency_buckets() {
  return {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5,
          0.75,  1.0,    1.5,   2.0,  3.0,   5.0,  7.5,   10.0, 15.0, 30.0, 60.0};
}

std::string format_labels(const Labels& labels) {
  if (labels.empty()) return "";
  std::string out = "{";
  for (size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ",";
    out += labels[i].first + "=\"" + escape(labels[i].second) + "\"";
  }
  return out + "}";
}

void append_family(std::string& out, const std::string& name, const std::string& help, const char* type,
                   const std::vector<std::pair<Labels, double>>& samples) {
  out += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
  for (const auto& [labels, v] : samples) out += name + format_labels(labels) + " " + number(v) + "\n";
}

MetricsRegistry::Family& MetricsRegistry::family(const std::string& name, const std::string& help,
                                                 const char* type) {
  Family& f = families_[name];
  if (f.type.empty()) {
    f.help = help;
    f.type = type;
  }
  return f;
}

Counter& MetricsRegistry::counter(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = family(name, help, "counter").counters[format_labels(labels)];
  if (!slot) slot = std::make_unique<Counter>();
  return *slot;
}

Gauge& MetricsRegistry::gauge(const std::string& name, const std::string& help, const Labels& labels) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = family(name, help, "gauge").gauges[format_labels(labels)];
  if (!slot) slot = std::make_unique<Gauge>();
  return *slot;
}

Histogram& MetricsRegistry::histogram(const std::string& name, const std::string& help, const Labels& labels,
                                      const std::vector<double>& bounds) {
  std::lock_guard<std::mutex> lock(mu_);
  auto& slot = family(name, help, "histogram").histograms[format_labels(labels)];
  if (!slot) slot = std::make_unique<Histogram>(bounds);
  return *slot;
}

void MetricsRegistry::add_collector(std::function<void(std::string&)> collector) {
  std::lock_guard<std::mutex> lock(mu_);
  collectors_.push_back(std::move(collector));
}

std::string MetricsRegistry::render() const {
  std::string out;
  std::vector<std::function<void(std::string&)>> collectors;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [name, f] : families_) {
      out += "# HELP " + name + " " + f.help + "\n# TYPE " + name + " " + f.type + "\n";
      for (const auto& [labels, c] : f.counters) out += name + labels + " " + number(c->value()) + "\n";
      for (const auto& [labels, g] : f.gauges) out += name + labels + " " + number(g->value()) + "\n";
      for (const auto& [labels, h] : f.histograms) {
        auto counts = h->cumulative_counts();
        for (size_t i = 0; i < h->bounds().size(); ++i)
          out += name + "_bucket" + with_label(labels, "le=\"" + number(h->bounds()[i]) + "\"") + " " +
                 std::to_string(counts[i]) + "\n";
        out += name + "_bucket" + with_label(labels, "le=\"+Inf\"") + " " + std::to_string(counts.back()) + "\n";
        out += name + "_sum" + labels + " " + number(h->sum()) + "\n";
        out += name + "_count" + labels + " " + std::to_string(counts.back()) + "\n";
      }
    }
    collectors = collectors_;
  }
  for (const auto& c : collectors) c(out);
  return out;
}

}  // namespace llmpool::obs
