// RedisServer: a real redis-server for tests, on a free loopback port, in a
// temp dir, with no persistence (--save '', no AOF). Killed (SIGKILL) by
// kill() or the destructor; restart() brings it back on the same port.
// Also a small synchronous client for the tests' own checks. Not thread-safe.
#pragma once

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace llmpool::ratelimit::testing {

inline int free_loopback_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof a;
  int port = -1;
  if (fd >= 0 && ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) == 0) {
    port = ntohs(a.sin_port);
  }
  if (fd >= 0) ::close(fd);
  return port;
}

class RedisServer {
 public:
  RedisServer() {
    char tmpl[] = "/tmp/llmpool-redis-XXXXXX";
    const char* d = ::mkdtemp(tmpl);
    dir_ = d ? d : "";
    port_ = free_loopback_port();
  }
  ~RedisServer() {
    kill();
    std::error_code ec;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ec);
  }
  RedisServer(const RedisServer&) = delete;
  RedisServer& operator=(const RedisServer&) = delete;

  // Starts it and waits (up to 15 s) until it answers PING. "" or the error.
  std::string start(const std::vector<std::string>& extra = {}) {
    if (dir_.empty() || port_ <= 0) return "no temp dir or free port";
    std::vector<std::string> args = {"redis-server", "--port", std::to_string(port_), "--bind", "127.0.0.1",
                                     "--save", "", "--appendonly", "no", "--dir", dir_, "--daemonize", "no",
                                     "--logfile", dir_ + "/redis.log"};
    args.insert(args.end(), extra.begin(), extra.end());
    extra_ = extra;
    for (size_t i = 0; i + 1 < extra.size(); ++i) {
      if (extra[i] == "--requirepass") password_ = extra[i + 1];
    }
    pid_ = ::fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execvp("redis-server", argv.data());
      ::_exit(127);
    }
    if (pid_ < 0) return "fork failed";
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < deadline) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return "redis-server exited at start (is it installed? scripts/setup installs it)";
      }
      if (command({"PING"}) == "PONG") return "";
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return "redis-server did not answer PING within 15 s";
  }
  std::string restart() { return start(extra_); }

  void kill() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::kill(pid_, SIGCONT);
      int status = 0;
      ::waitpid(pid_, &status, 0);
      pid_ = -1;
    }
  }

  // SIGSTOP / SIGCONT: a server that hangs without closing its sockets.
  void pause() {
    if (pid_ > 0) ::kill(pid_, SIGSTOP);
  }
  void resume() {
    if (pid_ > 0) ::kill(pid_, SIGCONT);
  }

  int port() const { return port_; }
  std::string url() const { return "redis://127.0.0.1:" + std::to_string(port_); }

  // One command on a fresh connection: a string, integer (as text) or
  // status reply as text, "(nil)", "(error) ...", or "" when unreachable.
  std::string command(const std::vector<std::string>& argv) const {
    timeval tv{1, 0};
    redisContext* c = redisConnectWithTimeout("127.0.0.1", port_, tv);
    if (c == nullptr || c->err) {
      if (c) redisFree(c);
      return "";
    }
    redisSetTimeout(c, tv);
    if (!password_.empty()) {
      auto* a = static_cast<redisReply*>(redisCommand(c, "AUTH %s", password_.c_str()));
      if (a) freeReplyObject(a);
    }
    std::vector<const char*> p;
    std::vector<size_t> l;
    for (const std::string& a : argv) p.push_back(a.data()), l.push_back(a.size());
    auto* r = static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(p.size()), p.data(), l.data()));
    std::string out;
    if (r) {
      switch (r->type) {
        case REDIS_REPLY_STRING:
        case REDIS_REPLY_STATUS: out.assign(r->str, r->len); break;
        case REDIS_REPLY_ERROR: out = "(error) " + std::string(r->str, r->len); break;
        case REDIS_REPLY_INTEGER: out = std::to_string(r->integer); break;
        case REDIS_REPLY_NIL: out = "(nil)"; break;
        case REDIS_REPLY_ARRAY:
          for (size_t i = 0; i < r->elements; ++i) {
            if (i) out += ' ';
            const redisReply* e = r->element[i];
            if (e->type == REDIS_REPLY_STRING) out.append(e->str, e->len);
            if (e->type == REDIS_REPLY_INTEGER) out += std::to_string(e->integer);
          }
          break;
        default: break;
      }
      freeReplyObject(r);
    }
    redisFree(c);
    return out;
  }

  // Redis's clock, in ms.
  int64_t time_ms() const {
    std::string t = command({"TIME"});
    size_t sp = t.find(' ');
    if (sp == std::string::npos) return -1;
    return std::stoll(t.substr(0, sp)) * 1000 + std::stoll(t.substr(sp + 1)) / 1000;
  }

 private:
  std::string dir_;
  int port_ = -1;
  pid_t pid_ = -1;
  std::vector<std::string> extra_;
  std::string password_;
};

}  // namespace llmpool::ratelimit::testing
