#include "http_client.h"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstring>

namespace llmpool::bench {
namespace {

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

// Closes the socket on every path out of http_post.
class Socket {
 public:
  explicit Socket(int fd) : fd_(fd) {}
  ~Socket() {
    if (fd_ >= 0) ::close(fd_);
  }
  Socket(const Socket&) = delete;
  Socket& operator=(const Socket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

std::string errno_text(const char* what) { return std::string(what) + ": " + std::strerror(errno); }

// Connects to the first address of url that accepts. Returns -1 and sets *error.
int connect_to(const Url& url, double timeout_s, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(url.host.c_str(), url.port.c_str(), &hints, &found); rc != 0) {
    *error = "resolve " + url.host + ": " + ::gai_strerror(rc);
    return -1;
  }
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout_s);
  tv.tv_usec = static_cast<suseconds_t>((timeout_s - static_cast<double>(tv.tv_sec)) * 1e6);
  int fd = -1;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    fd = ::socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC, a->ai_protocol);
    if (fd < 0) {
      *error = errno_text("socket");
      continue;
    }
    // Timeouts on every read and write, so a stuck server fails a request
    // instead of hanging the run; Nagle off so the small request goes at once.
    ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (::connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    *error = errno_text("connect");
    ::close(fd);
    fd = -1;
  }
  ::freeaddrinfo(found);
  return fd;
}

bool send_all(int fd, std::string_view data, std::string* error) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      *error = errno_text("send");
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

}  // namespace

std::optional<Url> parse_url(std::string_view text, std::string* error) {
  constexpr std::string_view kScheme = "http://";
  if (text.substr(0, kScheme.size()) != kScheme) {
    *error = "URL must start with http:// (got '" + std::string(text) + "')";
    return std::nullopt;
  }
  text.remove_prefix(kScheme.size());
  size_t slash = text.find('/');
  std::string_view authority = text.substr(0, slash);
  std::string_view path = slash == std::string_view::npos ? std::string_view{} : text.substr(slash);
  Url url;
  url.port = "80";
  if (!authority.empty() && authority.front() == '[') {
    size_t close = authority.find(']');
    if (close == std::string_view::npos) {
      *error = "unterminated IPv6 address in URL";
      return std::nullopt;
    }
    url.host = std::string(authority.substr(1, close - 1));
    authority.remove_prefix(close + 1);
    if (!authority.empty()) {
      if (authority.front() != ':') {
        *error = "unexpected text after IPv6 address in URL";
        return std::nullopt;
      }
      url.port = std::string(authority.substr(1));
    }
  } else {
    size_t colon = authority.rfind(':');
    url.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) url.port = std::string(authority.substr(colon + 1));
  }
  if (url.host.empty()) {
    *error = "URL has no host";
    return std::nullopt;
  }
  if (url.port.empty() || url.port.size() > 5 ||
      !std::all_of(url.port.begin(), url.port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      std::stoi(url.port) > 65535) {
    *error = "URL port must be 0-65535";
    return std::nullopt;
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  url.path = std::string(path);
  return url;
}

std::string ResponseHead::header(const std::string& name) const {
  auto it = headers.find(name);
  return it == headers.end() ? std::string() : it->second;
}

std::optional<ResponseHead> parse_response_head(std::string_view block) {
  ResponseHead head;
  bool first = true;
  while (!block.empty()) {
    size_t nl = block.find('\n');
    std::string_view line = block.substr(0, nl);
    block = nl == std::string_view::npos ? std::string_view{} : block.substr(nl + 1);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (first) {
      first = false;
      // "HTTP/1.1 200 OK": the version, one space, three digits.
      if (line.substr(0, 5) != "HTTP/") return std::nullopt;
      size_t sp = line.find(' ');
      if (sp == std::string_view::npos || line.size() < sp + 4) return std::nullopt;
      std::string_view code = line.substr(sp + 1, 3);
      if (!std::all_of(code.begin(), code.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return std::nullopt;
      }
      head.status = std::stoi(std::string(code));
      continue;
    }
    if (line.empty()) continue;
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    head.headers[lower(trim(line.substr(0, colon)))] = std::string(trim(line.substr(colon + 1)));
  }
  if (first) return std::nullopt;
  return head;
}

bool ChunkedDecoder::feed(std::string_view in, std::string* out) {
  while (!in.empty()) {
    switch (state_) {
      case State::kDone:
      case State::kError:
        return state_ == State::kDone;
      case State::kSize:
      case State::kTrailer: {
        size_t nl = in.find('\n');
        line_.append(in.substr(0, nl));
        if (nl == std::string_view::npos) {
          if (line_.size() > 4096) {
            error_ = "chunk size line too long";
            state_ = State::kError;
            return false;
          }
          return true;
        }
        in.remove_prefix(nl + 1);
        std::string_view line = line_;
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (state_ == State::kTrailer) {
          // Trailer fields are ignored; the empty line ends the message.
          if (line.empty()) state_ = State::kDone;
          line_.clear();
          break;
        }
        // The size is hex, optionally followed by ";extensions".
        line = line.substr(0, line.find(';'));
        line = trim(line);
        size_t size = 0;
        bool valid = !line.empty() && line.size() <= 15;
        for (char c : line) {
          int digit = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
                      : (c >= 'a' && c <= 'f')                    ? c - 'a' + 10
                      : (c >= 'A' && c <= 'F')                    ? c - 'A' + 10
                                                                  : -1;
          if (digit < 0) valid = false;
          size = size * 16 + static_cast<size_t>(digit < 0 ? 0 : digit);
        }
        if (!valid) {
          error_ = "malformed chunk size line '" + std::string(line.substr(0, 40)) + "'";
          state_ = State::kError;
          return false;
        }
        line_.clear();
        remaining_ = size;
        state_ = size == 0 ? State::kTrailer : State::kData;
        break;
      }
      case State::kData: {
        size_t n = std::min(remaining_, in.size());
        out->append(in.substr(0, n));
        in.remove_prefix(n);
        remaining_ -= n;
        if (remaining_ == 0) state_ = State::kDataEnd;
        break;
      }
      case State::kDataEnd: {
        // The CRLF after a chunk's data; a bare LF is tolerated.
        char c = in.front();
        in.remove_prefix(1);
        if (c == '\n') {
          state_ = State::kSize;
        } else if (c != '\r') {
          error_ = "missing CRLF after chunk data";
          state_ = State::kError;
          return false;
        }
        break;
      }
    }
  }
  return state_ != State::kError;
}

void SseParser::feed(std::string_view in, const OnData& on_data) {
  while (!in.empty()) {
    size_t nl = in.find('\n');
    if (nl == std::string_view::npos) {
      partial_.append(in);
      return;
    }
    if (partial_.empty()) {
      line(in.substr(0, nl), on_data);
    } else {
      partial_.append(in.substr(0, nl));
      std::string whole = std::move(partial_);
      partial_.clear();
      line(whole, on_data);
    }
    in.remove_prefix(nl + 1);
  }
}

void SseParser::line(std::string_view text, const OnData& on_data) {
  if (!text.empty() && text.back() == '\r') text.remove_suffix(1);
  if (text.empty()) {
    // A blank line dispatches the event (WHATWG "server-sent events" 9.2.6).
    if (has_data_) on_data(data_);
    data_.clear();
    has_data_ = false;
    return;
  }
  if (text.front() == ':') return;  // comment
  size_t colon = text.find(':');
  std::string_view field = text.substr(0, colon);
  std::string_view value = colon == std::string_view::npos ? std::string_view{} : text.substr(colon + 1);
  if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
  if (field != "data") return;  // event, id, retry: not needed here
  if (has_data_) data_.push_back('\n');
  data_.append(value);
  has_data_ = true;
}

std::string http_post(const HttpPost& post, const HttpHandlers& handlers) {
  const auto deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(post.timeout_s));
  std::string error;
  Socket sock(connect_to(post.url, post.timeout_s, &error));
  if (sock.fd() < 0) return error;

  std::string host = post.url.host.find(':') != std::string::npos ? "[" + post.url.host + "]" : post.url.host;
  std::string request = "POST " + post.path + " HTTP/1.1\r\nHost: " + host + ":" + post.url.port +
                        "\r\nContent-Type: application/json\r\nAccept: text/event-stream, application/json\r\n"
                        "Connection: close\r\nContent-Length: " +
                        std::to_string(post.body.size()) + "\r\n";
  for (const auto& [name, value] : post.headers) request += name + ": " + value + "\r\n";
  request += "\r\n";
  request += post.body;
  if (!send_all(sock.fd(), request, &error)) return error;

  enum class Framing { kLength, kChunked, kUntilClose };
  bool have_head = false;
  Framing framing = Framing::kUntilClose;
  size_t length_left = 0;
  ChunkedDecoder chunked;
  std::string head_buf;
  std::string decoded;
  char buf[16384];
  while (true) {
    if (Clock::now() > deadline) return "timeout after " + std::to_string(static_cast<int>(post.timeout_s)) + " s";
    ssize_t n = ::recv(sock.fd(), buf, sizeof buf, 0);
    const auto now = Clock::now();
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return "timeout after " + std::to_string(static_cast<int>(post.timeout_s)) + " s";
      }
      return errno_text("recv");
    }
    if (n == 0) {
      if (!have_head) return "connection closed before the response head";
      if (framing == Framing::kUntilClose) return "";
      return framing == Framing::kChunked ? "connection closed inside a chunked body"
                                          : "connection closed with " + std::to_string(length_left) +
                                                " body bytes missing";
    }
    std::string_view in(buf, static_cast<size_t>(n));
    if (!have_head) {
      head_buf.append(in);
      size_t end = head_buf.find("\r\n\r\n");
      size_t sep = 4;
      if (end == std::string::npos) {
        end = head_buf.find("\n\n");
        sep = 2;
      }
      if (end == std::string::npos) {
        if (head_buf.size() > 65536) return "response head larger than 64 KiB";
        continue;
      }
      auto head = parse_response_head(std::string_view(head_buf).substr(0, end));
      if (!head) return "malformed response head";
      have_head = true;
      if (lower(head->header("transfer-encoding")).find("chunked") != std::string::npos) {
        framing = Framing::kChunked;
      } else if (std::string cl = head->header("content-length"); !cl.empty()) {
        framing = Framing::kLength;
        if (cl.size() > 15 || !std::all_of(cl.begin(), cl.end(), [](char c) { return c >= '0' && c <= '9'; })) {
          return "bad Content-Length '" + cl.substr(0, 40) + "'";
        }
        length_left = std::stoull(cl);
      }
      if (handlers.on_head) handlers.on_head(*head);
      // The rest of this read is body; keep it alive in head_buf for the view.
      in = std::string_view(head_buf).substr(end + sep);
      if (framing == Framing::kLength && length_left == 0) return "";
    }
    if (in.empty()) continue;
    std::string_view body;
    switch (framing) {
      case Framing::kChunked:
        decoded.clear();
        if (!chunked.feed(in, &decoded)) return "bad chunked body: " + chunked.error();
        body = decoded;
        break;
      case Framing::kLength:
        body = in.substr(0, std::min(in.size(), length_left));
        length_left -= body.size();
        break;
      case Framing::kUntilClose:
        body = in;
        break;
    }
    if (!body.empty() && handlers.on_body && !handlers.on_body(body, now)) return "";
    if (framing == Framing::kChunked && chunked.done()) return "";
    if (framing == Framing::kLength && length_left == 0) return "";
  }
}

}  // namespace llmpool::bench
