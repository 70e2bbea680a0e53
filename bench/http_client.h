// A small HTTP/1.1 client for the load generator: plain POSIX sockets, one
// connection per request, the response body handed over as it arrives so
// that every streamed token can be timestamped when it reaches the client.
//
// Nothing here is shared between threads: each client thread makes its own
// calls. The parsers are incremental and hold no global state.
#pragma once

#include <chrono>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace llmpool::bench {

using Clock = std::chrono::steady_clock;

// An http:// URL split into the parts a request needs. `path` never ends
// with '/' ("" for "http://h:p" and "http://h:p/").
struct Url {
  std::string host;   // without IPv6 brackets
  std::string port;   // "80" when the URL names none
  std::string path;
};

// Parses "http://host[:port][/path]". Returns nullopt and sets *error for
// anything else (https is not supported: the servers measured are local).
std::optional<Url> parse_url(std::string_view text, std::string* error);

// The status line and headers of a response. Header names are lower-cased;
// a repeated header keeps its last value.
struct ResponseHead {
  int status = 0;
  std::map<std::string, std::string> headers;

  // The value of header `name` (lower-case), or "" when absent.
  std::string header(const std::string& name) const;
};

// Parses the status line and header lines of `block` (the bytes before the
// blank line, CRLF or LF line ends). Returns nullopt on a malformed head.
std::optional<ResponseHead> parse_response_head(std::string_view block);

// Decodes the chunked transfer coding (RFC 9112 section 7.1) incrementally:
// bytes may arrive split at any point, including inside a size line or CRLF.
class ChunkedDecoder {
 public:
  // Appends the body bytes decoded from `in` to *out. Returns false once the
  // stream is malformed; error() then says why and later calls do nothing.
  bool feed(std::string_view in, std::string* out);
  // True after the last (zero-size) chunk and its trailer section.
  bool done() const { return state_ == State::kDone; }
  const std::string& error() const { return error_; }

 private:
  enum class State { kSize, kData, kDataEnd, kTrailer, kDone, kError };
  State state_ = State::kSize;
  std::string line_;        // the size or trailer line read so far
  size_t remaining_ = 0;    // data bytes left in the current chunk
  std::string error_;
};

// Splits a text/event-stream body into events and hands each event's data
// (its "data:" lines joined by '\n') to the callback. Events without data
// lines (comments, keep-alives) are skipped. Incremental like ChunkedDecoder.
class SseParser {
 public:
  using OnData = std::function<void(const std::string& data)>;
  void feed(std::string_view in, const OnData& on_data);

 private:
  void line(std::string_view text, const OnData& on_data);

  std::string partial_;     // an incomplete line
  std::string data_;        // the current event's data so far
  bool has_data_ = false;
};

// One POST with a JSON body on a fresh connection (Connection: close).
struct HttpPost {
  Url url;
  std::string path;                                  // request target, e.g. "/v1/chat/completions"
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers
  double timeout_s = 600;                            // for the whole exchange
};

// Called once with the response head, then with each piece of decoded body
// (chunked coding removed) and the time its bytes were read from the socket.
// on_body returns false to stop reading early (e.g. after "data: [DONE]").
struct HttpHandlers {
  std::function<void(const ResponseHead&)> on_head;
  std::function<bool(std::string_view, Clock::time_point)> on_body;
};

// Sends `post` and reads the answer, calling `handlers` as bytes arrive.
// Returns "" when the response was read to its end (or to an early stop),
// otherwise a one-line description of what failed (connect, timeout, a
// malformed response, the connection closed mid-body).
std::string http_post(const HttpPost& post, const HttpHandlers& handlers);

}  // namespace llmpool::bench
