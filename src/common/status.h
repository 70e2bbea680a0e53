// Status and Result<T>: expected failures as values (LevelDB style).
//
// A Status is either ok or carries a Code, a human-readable message and,
// for request errors, the name of the offending field (`param`) and an
// OpenAI error `code` string such as "model_not_found". The mapping from
// Code to HTTP status and OpenAI error type lives in api/errors.cpp only.
//
// Status and Result are plain values: copyable, thread-compatible. Both are
// [[nodiscard]]: a call whose Status is dropped does not compile (-Werror);
// write `(void)call();` with a comment where ignoring it is right.
// RETURN_IF_ERROR and ASSIGN_OR_RETURN (end of this file) replace the
// hand-written `if (!s) return s;` chains.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace llmpool {

enum class StatusCode {
  kOk = 0,
  kInvalidArgument,    // bad request from the client
  kNotFound,           // unknown model, route or file
  kAlreadyExists,      // a second write of what may be written once (HTTP 409)
  kUnauthenticated,
  kPermissionDenied,
  kResourceExhausted,  // queue full, rate limited
  kDeadlineExceeded,
  kUnavailable,        // shutting down, model failed to load
  kUnimplemented,
  kInternal,
};

class [[nodiscard]] Status {
 public:
  Status() = default;

  static Status ok() { return Status(); }
  static Status invalid_argument(std::string msg, std::string param = {},
                                 std::string code = {}) {
    return Status(StatusCode::kInvalidArgument, std::move(msg), std::move(param), std::move(code));
  }
  static Status not_found(std::string msg, std::string param = {}, std::string code = {}) {
    return Status(StatusCode::kNotFound, std::move(msg), std::move(param), std::move(code));
  }
  static Status already_exists(std::string msg, std::string param = {}, std::string code = {}) {
    return Status(StatusCode::kAlreadyExists, std::move(msg), std::move(param), std::move(code));
  }
  static Status unauthenticated(std::string msg, std::string param = {}, std::string code = {}) {
    return Status(StatusCode::kUnauthenticated, std::move(msg), std::move(param), std::move(code));
  }
  static Status permission_denied(std::string msg, std::string param = {}, std::string code = {}) {
    return Status(StatusCode::kPermissionDenied, std::move(msg), std::move(param), std::move(code));
  }
  static Status resource_exhausted(std::string msg, std::string param = {}, std::string code = {}) {
    return Status(StatusCode::kResourceExhausted, std::move(msg), std::move(param), std::move(code));
  }
  static Status deadline_exceeded(std::string msg) {
    return Status(StatusCode::kDeadlineExceeded, std::move(msg));
  }
  static Status unavailable(std::string msg) {
    return Status(StatusCode::kUnavailable, std::move(msg));
  }
  static Status unimplemented(std::string msg, std::string param = {}) {
    return Status(StatusCode::kUnimplemented, std::move(msg), std::move(param));
  }
  static Status internal(std::string msg) { return Status(StatusCode::kInternal, std::move(msg)); }

  bool is_ok() const { return code_ == StatusCode::kOk; }
  explicit operator bool() const { return is_ok(); }
  StatusCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // The request field this error is about, or empty.
  const std::string& param() const { return param_; }
  // A machine-readable OpenAI error code ("model_not_found"), or empty.
  const std::string& error_code() const { return error_code_; }

  // "INVALID_ARGUMENT: message" — for logs.
  std::string to_string() const;

 private:
  Status(StatusCode code, std::string msg, std::string param = {}, std::string error_code = {})
      : code_(code), message_(std::move(msg)), param_(std::move(param)),
        error_code_(std::move(error_code)) {}

  StatusCode code_ = StatusCode::kOk;
  std::string message_;
  std::string param_;
  std::string error_code_;
};

const char* status_code_name(StatusCode code);

// The Status of a Status (itself) or of a Result (its error); for the macros.
inline const Status& status_of(const Status& s) { return s; }

// Result<T> holds either a T or a non-ok Status.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    if (std::get<Status>(v_).is_ok()) v_ = Status::internal("Result built from an ok Status");
  }

  bool is_ok() const { return std::holds_alternative<T>(v_); }
  explicit operator bool() const { return is_ok(); }
  const Status& status() const {
    static const Status kOk;
    return is_ok() ? kOk : std::get<Status>(v_);
  }
  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T* operator->() { return &std::get<T>(v_); }
  const T* operator->() const { return &std::get<T>(v_); }
  T& operator*() & { return std::get<T>(v_); }
  const T& operator*() const& { return std::get<T>(v_); }

 private:
  std::variant<T, Status> v_;
};

template <typename T>
const Status& status_of(const Result<T>& r) {
  return r.status();
}

}  // namespace llmpool

#define LLMPOOL_CONCAT_INNER_(a, b) a##b
#define LLMPOOL_CONCAT_(a, b) LLMPOOL_CONCAT_INNER_(a, b)

// Evaluates `expr` (a Status or a Result) once; returns its Status from the
// enclosing function (which returns Status or Result<U>) when it is not ok.
#define RETURN_IF_ERROR(expr)                                         \
  do {                                                                \
    auto&& llmpool_status_or_ = (expr);                               \
    if (!llmpool_status_or_.is_ok()) return ::llmpool::status_of(llmpool_status_or_); \
  } while (0)

// `ASSIGN_OR_RETURN(auto x, make_x());` or `ASSIGN_OR_RETURN(x_, make_x());`:
// evaluates the Result once; returns its Status when it failed, otherwise
// moves its value into the left-hand side.
#define ASSIGN_OR_RETURN(lhs, expr) ASSIGN_OR_RETURN_IMPL_(LLMPOOL_CONCAT_(llmpool_result_, __LINE__), lhs, expr)
#define ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                            \
  if (!tmp.is_ok()) return tmp.status();        \
  lhs = std::move(tmp).value()
