// The arithmetic of bench/routing.sh.
#include <gtest/gtest.h>

#include <sstream>

#include "routing_stats.h"

namespace llmpool::bench {
namespace {

using nlohmann::json;

json windows() {
  return {{"header", "x-llmpool-model"},
          {"window_s", 5.0},
          {"windows",
           {{{"start_s", 0.0}, {"end_s", 5.0}, {"counts", {{"a", 10}, {"b", 10}}}},
            {{"start_s", 5.0}, {"end_s", 10.0}, {"counts", {{"a", 9}, {"b", 11}}}},
            {{"start_s", 10.0}, {"end_s", 15.0}, {"counts", {{"a", 2}, {"b", 16}, {"(failed)", 2}}}},
            {{"start_s", 15.0}, {"end_s", 20.0}, {"counts", {{"b", 20}}}}}}};
}

TEST(TrafficShareTest, SumsTheWindowsInsideTheSpan) {
  TrafficShare before = traffic_share(windows(), 0, 10);
  EXPECT_EQ(before.windows, 2);
  EXPECT_EQ(before.answered, 40);
  EXPECT_DOUBLE_EQ(before.share("a"), 19.0 / 40);
  TrafficShare after = traffic_share(windows(), 10, 1e9);
  EXPECT_EQ(after.windows, 2);
  EXPECT_EQ(after.answered, 38);  // failures are not answers
  EXPECT_EQ(after.counts["(failed)"], 2);
  EXPECT_DOUBLE_EQ(after.share("a"), 2.0 / 38);
  EXPECT_DOUBLE_EQ(after.share("nobody"), 0.0);
}

TEST(TrafficShareTest, LeavesOutAWindowThatStraddlesAnEdge) {
  TrafficShare t = traffic_share(windows(), 7, 20);
  EXPECT_EQ(t.windows, 2);
  EXPECT_EQ(t.answered, 38);
  EXPECT_EQ(traffic_share(json::object(), 0, 10).answered, 0);
}

TEST(RouterOverheadTest, SummarisesRouterMicrosecondsOfJsonLines) {
  std::stringstream log;
  for (int i = 1; i <= 100; ++i)
    log << json{{"route", "auto"}, {"chosen", i % 4 ? "a" : "b"}, {"router_us", i}}.dump() << "\n";
  log << "not json\n" << json{{"route", "auto"}}.dump() << "\n\n";
  RouterOverhead o = router_overhead(log);
  EXPECT_EQ(o.lines, 102);
  EXPECT_EQ(o.without_router_us, 2);
  EXPECT_EQ(o.us.n, 100u);
  EXPECT_DOUBLE_EQ(o.us.p50, 50.5);
  EXPECT_NEAR(o.us.p99, 99.01, 1e-9);
  EXPECT_DOUBLE_EQ(o.us.max, 100);
  EXPECT_EQ(o.chosen["a"], 75);
  EXPECT_EQ(o.chosen["b"], 25);
}

}  // namespace
}  // namespace llmpool::bench
