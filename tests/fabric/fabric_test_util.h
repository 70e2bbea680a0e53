// Test helpers for the fabric: a real nats-server with JetStream on a free
// loopback port (store dir in a temp dir), and child processes
// (`llmpool worker`) that can be SIGKILLed and restarted. Each helper stops
// what it started in its destructor.
#pragma once

#include <gtest/gtest.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <string>
#include <thread>
#include <vector>

namespace llmpool::fabric::testing {

inline int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

inline bool port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  bool ok = connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  close(fd);
  return ok;
}

// Polls `pred` every 20 ms for up to `limit`; true once it holds.
inline bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds limit) {
  auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return pred();
}

inline std::filesystem::path make_temp_dir(const std::string& tag) {
  std::string tmpl = (std::filesystem::temp_directory_path() / ("llmpool-" + tag + "-XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  char* made = mkdtemp(buf.data());
  return made ? std::filesystem::path(made) : std::filesystem::path();
}

// A child process; argv[0] is the program path.
class Child {
 public:
  Child() = default;
  explicit Child(std::vector<std::string> argv, std::string log = "/dev/null") : argv_(std::move(argv)), log_(std::move(log)) {}
  Child(Child&& o) noexcept : argv_(std::move(o.argv_)), log_(std::move(o.log_)), pid_(o.pid_) { o.pid_ = -1; }
  Child& operator=(Child&& o) noexcept {
    if (this != &o) {
      stop(SIGKILL);
      argv_ = std::move(o.argv_);
      log_ = std::move(o.log_);
      pid_ = o.pid_;
      o.pid_ = -1;
    }
    return *this;
  }
  ~Child() { stop(SIGKILL); }

  void start() {
    pid_ = fork();
    if (pid_ == 0) {
      sigset_t all;
      sigemptyset(&all);
      sigprocmask(SIG_SETMASK, &all, nullptr);
      int fd = ::open(log_.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      if (fd >= 0) {
        dup2(fd, 1);
        dup2(fd, 2);
      }
      std::vector<char*> args;
      for (auto& a : argv_) args.push_back(a.data());
      args.push_back(nullptr);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  // Sends `sig` and reaps the process (SIGTERM: waits up to 20 s, then SIGKILL).
  void stop(int sig = SIGTERM) {
    if (pid_ <= 0) return;
    kill(pid_, sig);
    for (int i = 0; i < 2000; ++i) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  // The exit code after a stop, or -1 while running.
  bool running() const { return pid_ > 0; }
  pid_t pid() const { return pid_; }

 private:
  std::vector<std::string> argv_;
  std::string log_;
  pid_t pid_ = -1;
};

// nats-server -js on a free loopback port with its store in `dir`.
class NatsServer {
 public:
  explicit NatsServer(std::filesystem::path dir, std::string config_text = "")
      : dir_(std::move(dir)), port_(free_port()) {
    std::filesystem::create_directories(dir_ / "store");
    std::ofstream(dir_ / "nats.conf") << "listen: 127.0.0.1:" << port_ << "\n"
                                      << "jetstream { store_dir: \"" << (dir_ / "store").string() << "\" }\n"
                                      << config_text;
  }
  ~NatsServer() { stop(); }

  bool start() {
    server_ = Child({"/usr/sbin/nats-server", "-c", (dir_ / "nats.conf").string()}, (dir_ / "nats.log").string());
    server_.start();
    return eventually([&] { return port_open(port_); }, std::chrono::seconds(20));
  }
  void stop() { server_.stop(SIGTERM); }
  int port() const { return port_; }
  std::string url() const { return "nats://127.0.0.1:" + std::to_string(port_); }
  const std::filesystem::path& dir() const { return dir_; }

 private:
  std::filesystem::path dir_;
  int port_;
  Child server_;
};

}  // namespace llmpool::fabric::testing
