#include "obs/metrics.h"

#include <gtest/gtest.h>

#include <thread>

namespace llmpool::obs {
namespace {

TEST(MetricsTest, RendersCountersWithLabelsInPrometheusFormat) {
  MetricsRegistry r;
  r.counter("llmpool_requests_total", "Requests.", {{"model", "tiny"}, {"status", "200"}}).inc();
  r.counter("llmpool_requests_total", "Requests.", {{"model", "tiny"}, {"status", "200"}}).inc(2);
  std::string text = r.render();
  EXPECT_NE(text.find("# HELP llmpool_requests_total Requests.\n# TYPE llmpool_requests_total counter\n"),
            std::string::npos);
  EXPECT_NE(text.find("llmpool_requests_total{model=\"tiny\",status=\"200\"} 3\n"), std::string::npos) << text;
}

TEST(MetricsTest, HistogramBucketsAreCumulativeWithInfSumAndCount) {
  MetricsRegistry r;
  auto& h = r.histogram("ttft_seconds", "TTFT.", {{"model", "m"}}, {0.1, 1.0});
  h.observe(0.05);
  h.observe(0.5);
  h.observe(5.0);
  std::string text = r.render();
  EXPECT_NE(text.find("ttft_seconds_bucket{model=\"m\",le=\"0.10000000000000001\"} 1\n"), std::string::npos) << text;
  EXPECT_NE(text.find("ttft_seconds_bucket{model=\"m\",le=\"1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("ttft_seconds_bucket{model=\"m\",le=\"+Inf\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("ttft_seconds_sum{model=\"m\"} 5.5"), std::string::npos);
  EXPECT_NE(text.find("ttft_seconds_count{model=\"m\"} 3\n"), std::string::npos);
}

TEST(MetricsTest, EscapesLabelValues) {
  EXPECT_EQ(format_labels({{"a", "x\"y\\z\n"}}), "{a=\"x\\\"y\\\\z\\n\"}");
}

TEST(MetricsTest, CollectorsAddScrapeTimeValues) {
  MetricsRegistry r;
  r.add_collector([](std::string& out) {
    append_family(out, "llmpool_queue_depth", "Waiting.", "gauge", {{{{"model", "a"}}, 4.0}});
  });
  EXPECT_NE(r.render().find("llmpool_queue_depth{model=\"a\"} 4\n"), std::string::npos);
}

TEST(MetricsTest, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry r;
  Counter& c = r.counter("c", "C.");
  Histogram& h = r.histogram("h", "H.", {}, {1.0});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.inc();
        h.observe(0.5);
      }
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.value(), 40000.0);
  EXPECT_EQ(h.count(), 40000u);
  EXPECT_DOUBLE_EQ(h.sum(), 20000.0);
}

}  // namespace
}  // namespace llmpool::obs
