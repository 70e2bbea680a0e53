// llmpool-rate-load: an open-loop load at a fixed rate over keep-alive
// connections (wrk2 is not in Debian), for bench/gateway.sh.
//
//   llmpool-rate-load --url http://127.0.0.1:8080/v1/chat/completions
//     --rate 2000 --duration 10 --connections 32 --body BODY
//     --header 'Authorization: Bearer KEY'
//
// Request i is due at start + i / rate. Latency is measured from when it was
// due, not from when a connection was free to send it, so a server that
// falls behind shows its queueing (no coordinated omission). Prints one JSON
// object: rate asked and achieved, status counts, latency percentiles (ms).
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

namespace {

using SteadyClock = std::chrono::steady_clock;

struct Target {
  std::string host, port, path;
};

bool parse(const std::string& url, Target& t) {
  const std::string scheme = "http://";
  if (url.rfind(scheme, 0) != 0) return false;
  std::string rest = url.substr(scheme.size());
  size_t slash = rest.find('/');
  std::string hostport = slash == std::string::npos ? rest : rest.substr(0, slash);
  t.path = slash == std::string::npos ? "/" : rest.substr(slash);
  size_t colon = hostport.rfind(':');
  t.host = colon == std::string::npos ? hostport : hostport.substr(0, colon);
  t.port = colon == std::string::npos ? "80" : hostport.substr(colon + 1);
  return !t.host.empty();
}

int dial(const Target& t) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  if (getaddrinfo(t.host.c_str(), t.port.c_str(), &hints, &res) != 0) return -1;
  int fd = -1;
  for (addrinfo* a = res; a; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd < 0) continue;
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    ::close(fd);
    fd = -1;
  }
  freeaddrinfo(res);
  if (fd >= 0) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    timeval tv{10, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  return fd;
}

// Reads one response on fd (Content-Length or chunked); its status, or -1.
int read_response(int fd, std::string& buf) {
  auto fill = [&]() {
    char tmp[16384];
    ssize_t n = ::recv(fd, tmp, sizeof tmp, 0);
    if (n <= 0) return false;
    buf.append(tmp, static_cast<size_t>(n));
    return true;
  };
  size_t head_end;
  while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return -1;
  }
  std::string head = buf.substr(0, head_end);
  int status = -1;
  if (head.size() > 12) status = std::atoi(head.c_str() + 9);
  std::string lower = head;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  size_t body = head_end + 4;
  if (size_t cl = lower.find("\r\ncontent-length:"); cl != std::string::npos) {
    size_t len = std::strtoull(lower.c_str() + cl + 17, nullptr, 10);
    while (buf.size() < body + len) {
      if (!fill()) return -1;
    }
    buf.erase(0, body + len);
    return status;
  }
  if (lower.find("transfer-encoding: chunked") != std::string::npos) {
    size_t pos = body;
    for (;;) {
      size_t eol;
      while ((eol = buf.find("\r\n", pos)) == std::string::npos) {
        if (!fill()) return -1;
      }
      size_t size = std::strtoull(buf.c_str() + pos, nullptr, 16);
      while (buf.size() < eol + 2 + size + 2) {
        if (!fill()) return -1;
      }
      pos = eol + 2 + size + 2;
      if (size == 0) break;
    }
    buf.erase(0, pos);
    return status;
  }
  buf.erase(0, body);  // no body
  return status;
}

double pct(std::vector<double>& v, double p) {
  if (v.empty()) return 0;
  size_t i = static_cast<size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

}  // namespace

int main(int argc, char** argv) {
  std::string url, body = "{}";
  std::vector<std::string> headers;
  double rate = 1000, duration = 10;
  int connections = 32;
  CLI::App app{"llmpool-rate-load: open-loop fixed-rate HTTP load over keep-alive connections"};
  app.add_option("--url", url, "http://host:port/path")->required();
  app.add_option("--rate", rate, "requests per second")->check(CLI::Range(1.0, 1e6));
  app.add_option("--duration", duration, "seconds")->check(CLI::Range(0.1, 86400.0));
  app.add_option("--connections", connections, "keep-alive connections (threads)")->check(CLI::Range(1, 1024));
  app.add_option("--body", body, "the POST body");
  app.add_option("--header", headers, "an extra header line, 'Name: value' (repeatable)");
  CLI11_PARSE(app, argc, argv);
  Target t;
  if (!parse(url, t)) {
    std::fprintf(stderr, "llmpool-rate-load: --url must be http://host[:port]/path\n");
    return 2;
  }
  std::string request = "POST " + t.path + " HTTP/1.1\r\nHost: " + t.host + ":" + t.port +
                        "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
                        "\r\n";
  for (const std::string& h : headers) request += h + "\r\n";
  request += "\r\n" + body;

  const int64_t total = static_cast<int64_t>(rate * duration);
  const auto interval = std::chrono::nanoseconds(static_cast<int64_t>(1e9 / rate));
  std::atomic<int64_t> next{0};
  std::mutex mu;
  std::vector<double> latencies;
  std::map<int, int64_t> statuses;
  const auto start = SteadyClock::now() + std::chrono::milliseconds(100);
  std::vector<std::thread> threads;
  for (int c = 0; c < connections; ++c) {
    threads.emplace_back([&] {
      std::vector<double> mine;
      std::map<int, int64_t> my_status;
      int fd = -1;
      std::string buf;
      for (;;) {
        const int64_t i = next.fetch_add(1);
        if (i >= total) break;
        const auto due = start + interval * i;
        std::this_thread::sleep_until(due);
        int status = -1;
        for (int attempt = 0; attempt < 2 && status < 0; ++attempt) {
          if (fd < 0) {
            fd = dial(t);
            buf.clear();
          }
          if (fd < 0) break;
          if (::send(fd, request.data(), request.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(request.size())) {
            status = read_response(fd, buf);
          }
          if (status < 0) {
            ::close(fd);
            fd = -1;
          }
        }
        const auto done = SteadyClock::now();
        ++my_status[status];
        if (status >= 0) mine.push_back(std::chrono::duration<double, std::milli>(done - due).count());
      }
      if (fd >= 0) ::close(fd);
      std::lock_guard lock(mu);
      latencies.insert(latencies.end(), mine.begin(), mine.end());
      for (auto [s, n] : my_status) statuses[s] += n;
    });
  }
  for (auto& th : threads) th.join();
  const double wall = std::chrono::duration<double>(SteadyClock::now() - start).count();
  std::sort(latencies.begin(), latencies.end());
  std::printf("{\"rate\": %.0f, \"requests\": %lld, \"achieved_rps\": %.1f, \"p50_ms\": %.3f, \"p90_ms\": %.3f, "
              "\"p99_ms\": %.3f, \"max_ms\": %.3f, \"status\": {",
              rate, static_cast<long long>(total), static_cast<double>(latencies.size()) / wall,
              pct(latencies, 50), pct(latencies, 90), pct(latencies, 99), latencies.empty() ? 0 : latencies.back());
  bool first = true;
  for (auto [s, n] : statuses) {
    std::printf("%s\"%d\": %lld", first ? "" : ", ", s, static_cast<long long>(n));
    first = false;
  }
  std::printf("}}\n");
  return 0;
}
