// Prometheus metrics: counters, gauges and histograms with labels, and
// the text exposition format (version 0.0.4) for GET /metrics.
//
// Metric objects are created once (under a lock) and then updated
// lock-free from any thread; references stay valid for the registry's
// lifetime, and nothing is ever removed. Collectors add values computed at
// scrape time (queue depth, KV use). MetricsRegistry is thread-safe.
//
// So that the set of series stays bounded, label values come from the
// configuration only, never from what a client sent: every name that may
// have come from a request (a model, route or arm name) goes through
// MetricsRegistry::label(), which answers the configured label for it, or
// kUnknownLabel for any other name. The router service keeps the names
// equal to the configuration (set_label_names, at start and on reload).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace llmpool::obs {

using Labels = std::vector<std::pair<std::string, std::string>>;

class Counter {
 public:
  void inc(double v = 1.0);
  double value() const;

 private:
  std::atomic<double> value_{0.0};
};

class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void add(double v);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);  // upper bounds, ascending
  void observe(double v);
  const std::vector<double>& bounds() const { return bounds_; }
  // Cumulative counts per bound, then +Inf; and the sum.
  std::vector<uint64_t> cumulative_counts() const;
  double sum() const { return sum_.load(std::memory_order_relaxed); }
  uint64_t count() const;

 private:
  std::vector<double> bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // bounds_.size() + 1 (the +Inf bucket)
  std::atomic<double> sum_{0.0};
};

// The label value of every name that is not configured.
inline constexpr const char* kUnknownLabel = "_unknown";

// Latency buckets in seconds, 1 ms to 60 s.
std::vector<double> latency_buckets();

class MetricsRegistry {
 public:
  Counter& counter(const std::string& name, const std::string& help, const Labels& labels = {});
  Gauge& gauge(const std::string& name, const std::string& help, const Labels& labels = {});
  Histogram& histogram(const std::string& name, const std::string& help, const Labels& labels = {},
                       const std::vector<double>& bounds = latency_buckets());

  // A collector appends complete exposition lines (with # HELP / # TYPE)
  // at scrape time. It must be thread-safe.
  void add_collector(std::function<void(std::string& out)> collector);

  // The whole registry in Prometheus text format.
  std::string render() const;

  // Replaces the configured names: name (or alias) -> its label value
  // (a model's name for its aliases, else the name itself).
  void set_label_names(std::map<std::string, std::string, std::less<>> names);
  // The label value for `name`: configured, else kUnknownLabel.
  std::string label(std::string_view name) const;

 private:
  struct Family {
    std::string help;
    std::string type;
    std::map<std::string, std::unique_ptr<Counter>> counters;  // label text -> metric
    std::map<std::string, std::unique_ptr<Gauge>> gauges;
    std::map<std::string, std::unique_ptr<Histogram>> histograms;
  };
  Family& family(const std::string& name, const std::string& help, const char* type);

  mutable std::mutex mu_;
  std::map<std::string, Family> families_;
  mutable std::mutex names_mu_;
  std::shared_ptr<const std::map<std::string, std::string, std::less<>>> names_;  // guarded by names_mu_
  std::vector<std::function<void(std::string&)>> collectors_;
};

// `{a="x",b="y"}` with Prometheus escaping; "" for no labels.
std::string format_labels(const Labels& labels);
// Appends "# HELP", "# TYPE" and one sample line per (labels, value).
void append_family(std::string& out, const std::string& name, const std::string& help, const char* type,
                   const std::vector<std::pair<Labels, double>>& samples);

}  // namespace llmpool::obs
