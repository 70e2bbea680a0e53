// ratelimit_bench: what one admission costs (admit + finish), LocalLimiter
// and RedisLimiter against a real redis-server on loopback (checked per
// request, and with allotments of 250 ms: "allot"), from T threads at once. Prints ops/s and latency percentiles; not a test, not run by
// ctest. The Gateway section of bench/RESULTS.md quotes it.
//
//   build/tests/ratelimit_bench [threads=16] [seconds=5] [pool=4]
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <string_view>
#include <thread>
#include <vector>

#include "ratelimit/local_limiter.h"
#include "ratelimit/redis_limiter.h"
#include "ratelimit/redis_server.h"

namespace rl = llmpool::ratelimit;
using Steady = std::chrono::steady_clock;

namespace {

void run(const char* name, rl::Limiter& limiter, int threads, double seconds) {
  rl::Subject s;
  s.tenant = "acme";
  s.key = "bench-key";
  // Limits high enough never to refuse: the cost of checking and charging all five.
  s.tenant_limits = {1'000'000'000, 1'000'000'000'000, 1'000'000, 1'000'000'000'000, 1'000'000'000'000};
  s.key_limits = s.tenant_limits;
  std::vector<double> admit_us, finish_us;
  std::mutex mu;
  std::atomic<int64_t> refused{0}, failed{0};
  const auto end = Steady::now() + std::chrono::duration<double>(seconds);
  std::vector<std::thread> ts;
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&] {
      std::vector<double> a, f;
      while (Steady::now() < end) {
        const auto t0 = Steady::now();
        auto d = limiter.admit(s, 300);
        const auto t1 = Steady::now();
        if (!d.is_ok()) {
          ++failed;
          continue;
        }
        if (!d->admitted) ++refused;
        limiter.finish(d->ticket, 120);
        const auto t2 = Steady::now();
        a.push_back(std::chrono::duration<double, std::micro>(t1 - t0).count());
        f.push_back(std::chrono::duration<double, std::micro>(t2 - t1).count());
      }
      std::lock_guard lock(mu);
      admit_us.insert(admit_us.end(), a.begin(), a.end());
      finish_us.insert(finish_us.end(), f.begin(), f.end());
    });
  }
  for (auto& t : ts) t.join();
  auto pct = [](std::vector<double>& v, double p) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[std::min(v.size() - 1, static_cast<size_t>(p / 100 * static_cast<double>(v.size() - 1) + 0.5))];
  };
  std::printf("%-6s threads=%d admit+finish/s=%.0f admit_us p50=%.1f p99=%.1f finish_us p50=%.1f p99=%.1f refused=%lld failed=%lld\n",
              name, threads, static_cast<double>(admit_us.size()) / seconds, pct(admit_us, 50), pct(admit_us, 99),
              pct(finish_us, 50), pct(finish_us, 99), static_cast<long long>(refused.load()),
              static_cast<long long>(failed.load()));
}

}  // namespace

int main(int argc, char** argv) {
  const int threads = argc > 1 ? std::max(1, std::atoi(argv[1])) : 16;
  const double seconds = argc > 2 ? std::max(0.5, std::atof(argv[2])) : 5;
  const int pool = argc > 3 ? std::clamp(std::atoi(argv[3]), 1, 64) : 4;
  rl::LocalLimiter local;
  run("local", local, threads, seconds);
  rl::testing::RedisServer redis;
  if (std::string err = redis.start(); !err.empty()) {
    std::fprintf(stderr, "ratelimit_bench: %s\n", err.c_str());
    return 1;
  }
  for (const char* name : {"redis", "allot"}) {
    rl::Options o;
    o.url = redis.url();
    o.pool_size = pool;
    if (std::string_view(name) == "allot") o.allotment = std::chrono::milliseconds(250);
    auto limiter = rl::RedisLimiter::create(o);
    if (!limiter.is_ok()) return 1;
    redis.command({"CONFIG", "RESETSTAT"});
    run(name, **limiter, threads, seconds);
    limiter->reset();  // gives back what its allotments hold
    // Redis's own time per script call (CPU inside Redis, whatever the load).
    std::string stats = redis.command({"INFO", "commandstats"});
    for (size_t pos = stats.find("cmdstat_evalsha:"); pos != std::string::npos; pos = std::string::npos) {
      std::printf("%s: redis server side: %s\n", name, stats.substr(pos, stats.find('\r', pos) - pos).c_str());
    }
  }
  return 0;
}
