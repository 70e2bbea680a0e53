#include "batch/service.h"

#include <spdlog/spdlog.h>

#include <optional>
#include <random>
#include <unordered_set>

#include <nlohmann/json.hpp>

#include "common/json.h"
#include "common/text.h"

namespace llmpool::batch {
namespace {

using nlohmann::json;

constexpr int64_t kCompletionWindowSeconds = 24 * 3600;
constexpr size_t kMaxRecordedErrors = 100;  // errors.data[] holds at most this many
constexpr size_t kMaxCustomIdBytes = 512;
constexpr size_t kMaxFilenameBytes = 255;

std::string random_hex(size_t n) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  while (out.size() < n) {
    uint64_t v = rng();
    for (int i = 0; i < 16 && out.size() < n; ++i, v >>= 4) out += kHex[v & 15];
  }
  return out;
}

std::string new_file_id() { return "file-" + random_hex(24); }
std::string new_batch_id() { return "batch_" + random_hex(24); }

struct LineError {
  std::string code;
  std::string message;
  std::optional<int64_t> line;
};

json errors_json(const std::vector<LineError>& errors, size_t total_errors) {
  json data = json::array();
  for (const auto& e : errors) {
    json item = {{"code", e.code}, {"message", e.message}, {"param", nullptr}, {"line", nullptr}};
    if (e.line) item["line"] = *e.line;
    data.push_back(std::move(item));
  }
  if (total_errors > errors.size()) {
    data.push_back({{"code", "too_many_errors"},
                    {"message", std::to_string(total_errors - errors.size()) + " more errors were not listed"},
                    {"param", nullptr},
                    {"line", nullptr}});
  }
  return {{"object", "list"}, {"data", data}};
}

// Checks every line of `content` for `endpoint`; fills `jobs` or `errors`.
void check_lines(const BatchRecord& batch, std::string_view content, const BatchLimits& limits,
                 std::vector<JobRecord>* jobs, std::vector<LineError>* errors, size_t* total_errors) {
  auto add_error = [&](std::string code, std::string message, std::optional<int64_t> line) {
    ++*total_errors;
    if (errors->size() < kMaxRecordedErrors) errors->push_back({std::move(code), std::move(message), line});
  };
  std::unordered_set<std::string> custom_ids;
  int64_t line_no = 0;
  int64_t requests = 0;
  size_t pos = 0;
  while (pos < content.size()) {
    size_t eol = content.find('\n', pos);
    std::string_view line = content.substr(pos, eol == std::string_view::npos ? std::string_view::npos : eol - pos);
    pos = eol == std::string_view::npos ? content.size() : eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find_first_not_of(" \t") == std::string_view::npos) continue;  // blank lines carry no request
    if (++requests > limits.max_lines) {
      add_error("too_many_requests",
                "the file has more than " + std::to_string(limits.max_lines) + " requests (batch.max_lines)",
                line_no);
      return;
    }
    if (static_cast<int64_t>(line.size()) > limits.max_line_bytes) {
      add_error("line_too_long",
                "the line is longer than " + std::to_string(limits.max_line_bytes) + " bytes (batch.max_line_bytes)",
                line_no);
      continue;
    }
    Result<json> parsed = parse_json(line, kDefaultJsonLimits, "the line");
    if (!parsed) {
      add_error("invalid_json_line", parsed.status().message(), line_no);
      continue;
    }
    const json& j = *parsed;
    if (!j.is_object()) {
      add_error("invalid_json_line", std::string("the line must be a JSON object, not ") + json_type_name(j),
                line_no);
      continue;
    }
    auto custom_id = j.find("custom_id");
    if (custom_id == j.end() || !custom_id->is_string() || custom_id->get_ref<const std::string&>().empty()) {
      add_error("missing_custom_id", "custom_id must be a non-empty string", line_no);
      continue;
    }
    const std::string& cid = custom_id->get_ref<const std::string&>();
    if (cid.size() > kMaxCustomIdBytes) {
      add_error("invalid_custom_id", "custom_id is longer than 512 bytes", line_no);
      continue;
    }
    if (!custom_ids.insert(cid).second) {
      add_error("duplicate_custom_id", "custom_id '" + cut_utf8(cid, 64) + "' is used by an earlier line", line_no);
      continue;
    }
    auto method = j.find("method");
    if (method == j.end() || !method->is_string() || method->get_ref<const std::string&>() != "POST") {
      add_error("invalid_method", "method must be \"POST\"", line_no);
      continue;
    }
    auto url = j.find("url");
    if (url == j.end() || !url->is_string() || url->get_ref<const std::string&>() != batch.endpoint) {
      add_error("invalid_url", "url must be the batch's endpoint " + batch.endpoint, line_no);
      continue;
    }
    auto body = j.find("body");
    if (body == j.end() || !body->is_object()) {
      add_error("invalid_body", "body must be a JSON object", line_no);
      continue;
    }
    auto model = body->find("model");
    if (model == body->end() || !model->is_string() || model->get_ref<const std::string&>().empty()) {
      add_error("missing_model", "body.model must be a non-empty string", line_no);
      continue;
    }
    auto stream = body->find("stream");
    if (stream != body->end() && stream->is_boolean() && stream->get<bool>()) {
      add_error("invalid_body", "body.stream must not be true in a batch", line_no);
      continue;
    }
    jobs->push_back(JobRecord{batch.id + ":" + std::to_string(jobs->size()), line_no, cid,
                              model->get<std::string>(),
                              body->dump(-1, ' ', false, json::error_handler_t::replace)});
  }
  if (requests == 0) add_error("empty_file", "the input file holds no requests", std::nullopt);
}

// One line of an output or error file.
std::string output_line(const LineOutcome& o, const char* missing_code, const char* missing_message) {
  json line = {{"id", "batch_req_" + random_hex(24)}, {"custom_id", o.job.custom_id}};
  if (o.result && o.result->status_code != 499) {
    Result<json> body = parse_json(o.result->body, kDefaultJsonLimits, "the answer");
    line["response"] = {{"status_code", o.result->status_code},
                        {"request_id", "req_" + random_hex(24)},
                        {"body", body ? std::move(*body) : json(o.result->body)}};
    line["error"] = nullptr;
  } else {
    line["response"] = nullptr;
    line["error"] = {{"code", missing_code}, {"message", missing_message}};
  }
  return line.dump(-1, ' ', false, json::error_handler_t::replace) + "\n";
}

}  // namespace

bool is_batch_endpoint(const std::string& endpoint) {
  return endpoint == "/v1/chat/completions" || endpoint == "/v1/completions" || endpoint == "/v1/embeddings";
}

BatchService::BatchService(std::unique_ptr<BatchStore> store, std::shared_ptr<JobRunner> runner, Options options)
    : store_(std::move(store)), runner_(std::move(runner)), options_(std::move(options)) {}

BatchService::~BatchService() { stop(); }

int64_t BatchService::now() const {
  if (options_.now_unix) return options_.now_unix();
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

Status BatchService::start() {
  runner_->set_result_sink([this](const JobResult& r) { return on_result(r); });
  ASSIGN_OR_RETURN(std::vector<std::string> running, store_->batches_with_status(kInProgress));
  for (const auto& id : running) submit_pending(id);
  ASSIGN_OR_RETURN(std::vector<std::string> cancelling, store_->batches_with_status(kCancelling));
  {
    std::lock_guard lock(mu_);
    recovered_cancels_.insert(cancelling.begin(), cancelling.end());
  }
  if (!running.empty() || !cancelling.empty())
    spdlog::info("batch: resumed {} batch(es) in progress and {} being cancelled", running.size(), cancelling.size());
  thread_ = std::thread([this] { run(); });
  return Status::ok();
}

void BatchService::stop() {
  {
    std::lock_guard lock(mu_);
    stopping_ = true;
    cv_.notify_all();
  }
  if (thread_.joinable()) thread_.join();
}

void BatchService::wake() {
  std::lock_guard lock(mu_);
  woken_ = true;
  cv_.notify_all();
}

void BatchService::run() {
  std::unique_lock lock(mu_);
  while (!stopping_) {
    lock.unlock();
    pass();
    lock.lock();
    cv_.wait_for(lock, options_.tick, [&] { return stopping_ || woken_; });
    woken_ = false;
  }
}

void BatchService::pass() {
  const int64_t t = now();
  for (const char* status : {kValidating, kInProgress, kFinalizing, kCancelling}) {
    Result<std::vector<std::string>> ids = store_->batches_with_status(status);
    if (!ids) {
      spdlog::error("batch: {}", ids.status().message());
      return;
    }
    for (const auto& id : *ids) {
      {
        std::lock_guard lock(mu_);
        if (stopping_) return;
      }
      Result<BatchRecord> b = store_->get_batch(id);
      if (!b) continue;
      if (b->status == kValidating) {
        validate(std::move(*b));
      } else if (b->status == kInProgress) {
        if (b->expires_at && t >= *b->expires_at)
          expire(std::move(*b));
        else if (b->done() >= b->total)
          finish(id, false);
      } else if (b->status == kFinalizing) {
        finish(id, false);
      } else {
        bool recovered;
        {
          std::lock_guard lock(mu_);
          recovered = recovered_cancels_.erase(id) > 0;
        }
        bool grace_over = b->cancelling_at && t >= *b->cancelling_at + options_.cancel_grace_seconds;
        if (recovered || grace_over || b->done() >= b->total) finish(id, true);
      }
    }
  }
}

Result<FileRecord> BatchService::upload(const std::string& tenant, const std::string& purpose,
                                        const std::string& filename, std::string_view content) {
  if (purpose != "batch")
    return Status::invalid_argument("purpose must be \"batch\" (the only purpose this server stores)", "purpose");
  if (static_cast<int64_t>(content.size()) > options_.limits.max_file_bytes)
    return Status::invalid_argument("the file is larger than " + std::to_string(options_.limits.max_file_bytes) +
                                        " bytes (batch.max_file_bytes)",
                                    "file");
  if (filename.size() > kMaxFilenameBytes)
    return Status::invalid_argument("the filename is longer than 255 bytes", "file");
  FileRecord f{new_file_id(), tenant, purpose, filename, static_cast<int64_t>(content.size()), now()};
  RETURN_IF_ERROR(store_->add_file(f, content));
  return f;
}

Result<BatchRecord> BatchService::create(const std::string& tenant, const CreateBatch& request) {
  if (!is_batch_endpoint(request.endpoint))
    return Status::invalid_argument(
        "endpoint must be one of /v1/chat/completions, /v1/completions, /v1/embeddings", "endpoint");
  if (request.completion_window != "24h")
    return Status::invalid_argument("completion_window must be \"24h\"", "completion_window");
  Result<FileRecord> found = store_->get_file(tenant, request.input_file_id);
  if (!found) {
    if (found.status().code() != StatusCode::kNotFound) return found.status();
    return Status::not_found("No such File object: " + request.input_file_id, "input_file_id");
  }
  const FileRecord& input = *found;
  if (input.purpose != "batch")
    return Status::invalid_argument("the input file's purpose must be \"batch\"", "input_file_id");
  BatchRecord b;
  b.id = new_batch_id();
  b.tenant = tenant;
  b.endpoint = request.endpoint;
  b.input_file_id = request.input_file_id;
  b.completion_window = request.completion_window;
  b.status = kValidating;
  b.created_at = now();
  b.expires_at = b.created_at + kCompletionWindowSeconds;
  b.metadata = request.metadata;
  RETURN_IF_ERROR(store_->add_batch(b));
  wake();
  return b;
}

Result<BatchRecord> BatchService::cancel(const std::string& tenant, const std::string& id) {
  for (int attempt = 0; attempt < 8; ++attempt) {
    ASSIGN_OR_RETURN(BatchRecord b, store_->get_batch(tenant, id));
    if (b.status == kCancelling || b.status == kCancelled) return b;
    if (b.status != kValidating && b.status != kInProgress)
      return Status::invalid_argument("a batch that is " + b.status + " cannot be cancelled", "batch_id");
    const std::string was = b.status;
    b.status = kCancelling;
    b.cancelling_at = now();
    ASSIGN_OR_RETURN(bool moved, store_->update_batch(b, was));
    if (!moved) continue;  // the service's thread moved it meanwhile: look again
    if (was == kInProgress) {
      ASSIGN_OR_RETURN(std::vector<JobRecord> pending, store_->pending_jobs(b.id));
      std::vector<std::string> ids;
      for (const auto& j : pending) ids.push_back(j.id);
      runner_->cancel(ids);
    }
    wake();
    return b;
  }
  return Status::unavailable("the batch is changing state; try again");
}

void BatchService::validate(BatchRecord batch) {
  std::vector<JobRecord> jobs;
  std::vector<LineError> errors;
  size_t total_errors = 0;
  Result<std::string> content = store_->file_content(batch.tenant, batch.input_file_id);
  if (!content) {
    ++total_errors;
    errors.push_back({"invalid_file", "the input file " + batch.input_file_id + " is gone", std::nullopt});
  } else {
    check_lines(batch, *content, options_.limits, &jobs, &errors, &total_errors);
  }
  if (total_errors > 0) {
    batch.status = kFailed;
    batch.failed_at = now();
    batch.errors = errors_json(errors, total_errors).dump(-1, ' ', false, json::error_handler_t::replace);
    Result<bool> moved = store_->update_batch(batch, kValidating);
    if (!moved) spdlog::error("batch {}: {}", batch.id, moved.status().message());
    return;
  }
  batch.status = kInProgress;
  batch.in_progress_at = now();
  batch.total = static_cast<int64_t>(jobs.size());
  Result<bool> started = store_->start_batch(batch, jobs);
  if (!started) {
    spdlog::error("batch {}: cannot start: {}", batch.id, started.status().message());
    return;
  }
  if (*started) submit_pending(batch.id);  // false: cancelled while validating
}

void BatchService::submit_pending(const std::string& batch_id) {
  Result<BatchRecord> b = store_->get_batch(batch_id);
  Result<std::vector<JobRecord>> pending = store_->pending_jobs(batch_id);
  if (!b || !pending) {
    spdlog::error("batch {}: cannot read its jobs", batch_id);
    return;
  }
  std::vector<std::string> submitted;
  for (const JobRecord& j : *pending) {
    Status s = runner_->submit(Job{j.id, b->tenant, j.model, b->endpoint, j.body});
    if (s) {
      submitted.push_back(j.id);
      continue;
    }
    // The line fails with the runner's reason rather than waiting forever.
    json body = {{"error", {{"message", s.message()}, {"type", "server_error"}, {"param", nullptr},
                            {"code", "batch_submit_failed"}}}};
    Status stored = on_result(JobResult{j.id, 503, body.dump()});
    if (!stored) spdlog::error("batch {}: {}", batch_id, stored.message());
  }
  // A cancel that came while these were being submitted dropped only what
  // the runner had by then (cancel() marks the batch first, then cancels):
  // what was submitted after it is cancelled here.
  Result<BatchRecord> after = store_->get_batch(batch_id);
  if (after && after->status == kCancelling && !submitted.empty()) runner_->cancel(submitted);
}

Status BatchService::on_result(const JobResult& result) {
  ASSIGN_OR_RETURN(ResultStored r, store_->put_result(result));
  if (r.batch_done) wake();
  return Status::ok();
}

void BatchService::expire(BatchRecord batch) {
  Result<std::vector<JobRecord>> pending = store_->pending_jobs(batch.id);
  if (pending) {
    std::vector<std::string> ids;
    for (const auto& j : *pending) ids.push_back(j.id);
    runner_->cancel(ids);
  }
  finish(batch.id, true);
}

// Ends the batch: completed when every line has a result, cancelled when it
// was being cancelled, expired otherwise (the window has passed).
void BatchService::finish(const std::string& batch_id, bool force) {
  Result<BatchRecord> current = store_->get_batch(batch_id);
  if (!current) return;
  std::string expected = current->status;
  if (expected == kInProgress && current->done() >= current->total) {
    // Visible for as long as the files take to write; a restart resumes here.
    BatchRecord b = *current;
    b.status = kFinalizing;
    b.finalizing_at = now();
    Result<bool> moved = store_->update_batch(b, kInProgress);
    if (!moved || !*moved) return;
    expected = kFinalizing;
  } else if (expected == kInProgress && !force) {
    return;
  }
  const int64_t t = now();
  auto build = [&](BatchRecord& b, const std::vector<LineOutcome>& lines) -> Result<Finalized> {
    const bool cancelled = b.status == kCancelling;
    const bool expired = !cancelled && b.status == kInProgress;
    const char* code = cancelled ? "batch_cancelled" : "batch_expired";
    const char* message = cancelled ? "This request was not run: the batch was cancelled."
                                    : "This request could not be executed before the completion window expired.";
    std::string out, err;
    for (const LineOutcome& o : lines) {
      bool ok = o.result && o.result->status_code >= 200 && o.result->status_code < 300;
      (ok ? out : err) += output_line(o, code, message);
    }
    Finalized f;
    auto file = [&](const char* suffix, std::string content) {
      FileRecord r{new_file_id(), b.tenant, "batch_output", b.id + suffix, static_cast<int64_t>(content.size()), t};
      return NewFile{std::move(r), std::move(content)};
    };
    if (!out.empty()) {
      f.output = file("_output.jsonl", std::move(out));
      b.output_file_id = f.output->record.id;
    }
    if (!err.empty()) {
      f.errors = file("_error.jsonl", std::move(err));
      b.error_file_id = f.errors->record.id;
    }
    if (cancelled) {
      b.status = kCancelled;
      b.cancelled_at = t;
    } else if (expired) {
      b.status = kExpired;
      b.expired_at = t;
    } else {
      b.status = kCompleted;
      b.completed_at = t;
    }
    return f;
  };
  Result<bool> done = store_->finalize(batch_id, expected, build);
  if (!done) spdlog::error("batch {}: cannot finalize: {}", batch_id, done.status().message());
}

}  // namespace llmpool::batch
