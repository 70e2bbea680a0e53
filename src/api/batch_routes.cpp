#include "api/batch_routes.h"

#include <charconv>
#include <optional>
#include <string_view>

#include "api/errors.h"
#include "batch/multipart.h"
#include "common/json.h"

// Like ASSIGN_OR_RETURN, for a handler that returns an HttpResponse: the
// error becomes its OpenAI error response.
#define ASSIGN_OR_RESPOND(lhs, expr) ASSIGN_OR_RESPOND_IMPL_(LLMPOOL_CONCAT_(llmpool_respond_, __LINE__), lhs, expr)
#define ASSIGN_OR_RESPOND_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                             \
  if (!tmp.is_ok()) return error_response(tmp.status()); \
  lhs = std::move(tmp).value()

namespace llmpool::api {
namespace {

using nlohmann::json;

constexpr std::string_view kFilesPrefix = "/v1/files/";
constexpr std::string_view kBatchesPrefix = "/v1/batches/";
constexpr size_t kMaxMetadataPairs = 16;
constexpr size_t kMaxMetadataKey = 64;
constexpr size_t kMaxMetadataValue = 512;

HttpResponse json_response(const json& j) {
  HttpResponse r;
  r.body = dump_json(j);
  return r;
}

json optional_json(const std::optional<int64_t>& v) { return v ? json(*v) : json(); }
json optional_json(const std::optional<std::string>& v) { return v ? json(*v) : json(); }

json file_json(const batch::FileRecord& f) {
  return {{"id", f.id},           {"object", "file"},     {"bytes", f.bytes},  {"created_at", f.created_at},
          {"filename", f.filename}, {"purpose", f.purpose}, {"status", "processed"}, {"expires_at", nullptr},
          {"status_details", nullptr}};
}

// Stored JSON text the service wrote itself; null when it cannot be read.
json stored_json(const std::string& text) {
  Result<json> j = parse_json(text, kDefaultJsonLimits, "a stored value");
  return j ? std::move(*j) : json();
}

json batch_json(const batch::BatchRecord& b) {
  return {{"id", b.id},
          {"object", "batch"},
          {"endpoint", b.endpoint},
          {"errors", stored_json(b.errors)},
          {"input_file_id", b.input_file_id},
          {"completion_window", b.completion_window},
          {"status", b.status},
          {"output_file_id", optional_json(b.output_file_id)},
          {"error_file_id", optional_json(b.error_file_id)},
          {"created_at", b.created_at},
          {"in_progress_at", optional_json(b.in_progress_at)},
          {"expires_at", optional_json(b.expires_at)},
          {"finalizing_at", optional_json(b.finalizing_at)},
          {"completed_at", optional_json(b.completed_at)},
          {"failed_at", optional_json(b.failed_at)},
          {"expired_at", optional_json(b.expired_at)},
          {"cancelling_at", optional_json(b.cancelling_at)},
          {"cancelled_at", optional_json(b.cancelled_at)},
          {"request_counts", {{"total", b.total}, {"completed", b.completed}, {"failed", b.failed}}},
          {"metadata", stored_json(b.metadata)}};
}

// Ids this server makes are "file-"/"batch_" and hex; anything else (or
// longer) cannot exist, and is refused before it reaches a message.
bool is_id(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '-' || c == '_'))
      return false;
  return true;
}

Status no_such(const char* what, const char* param) {
  return Status::not_found(std::string("No such ") + what + " object", param);
}

// The query parameters of `target`, without percent-decoding (every value
// these routes take is an id, a number or a word). InvalidArgument for a
// parameter given twice.
Result<std::map<std::string, std::string>> query_params(const std::string& target) {
  std::map<std::string, std::string> out;
  size_t q = target.find('?');
  if (q == std::string::npos) return out;
  std::string_view rest = std::string_view(target).substr(q + 1);
  while (!rest.empty()) {
    size_t amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    if (pair.empty()) continue;
    size_t eq = pair.find('=');
    std::string key(pair.substr(0, eq));
    std::string value(eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1));
    if (key.size() > 64) return Status::invalid_argument("a query parameter name is longer than 64 bytes");
    if (!out.emplace(key, std::move(value)).second)
      return Status::invalid_argument("the query parameter " + key + " is given twice", key);
  }
  return out;
}

// Reads `limit`, `after` (and, for files, `order`) into a Page.
Result<batch::Page> read_page(const std::map<std::string, std::string>& q, int64_t max_limit, int64_t default_limit) {
  batch::Page page;
  page.limit = default_limit;
  if (auto it = q.find("limit"); it != q.end()) {
    int64_t v = 0;
    const std::string& s = it->second;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size() || v < 1 || v > max_limit)
      return Status::invalid_argument("limit must be an integer from 1 to " + std::to_string(max_limit), "limit");
    page.limit = v;
  }
  if (auto it = q.find("after"); it != q.end() && !it->second.empty()) {
    if (!is_id(it->second)) return Status::invalid_argument("after must be an id from an earlier page", "after");
    page.after = it->second;
  }
  return page;
}

template <typename Record, typename ToJson>
json list_json(const std::vector<Record>& rows, int64_t limit, ToJson to_json) {
  json data = json::array();
  const size_t n = std::min(rows.size(), static_cast<size_t>(limit));
  for (size_t i = 0; i < n; ++i) data.push_back(to_json(rows[i]));
  return {{"object", "list"},
          {"data", data},
          {"first_id", n ? json(rows.front().id) : json()},
          {"last_id", n ? json(rows[n - 1].id) : json()},
          {"has_more", rows.size() > n}};
}

// CreateBatch from a POST /v1/batches body.
Result<batch::CreateBatch> read_create(const std::string& text) {
  ASSIGN_OR_RETURN(json body, parse_json(text));
  if (!body.is_object()) return Status::invalid_argument("the request body must be a JSON object");
  batch::CreateBatch req;
  for (const auto& [key, value] : body.items()) {
    if (key == "input_file_id" || key == "endpoint" || key == "completion_window") {
      if (!value.is_string())
        return Status::invalid_argument(key + " must be a string, not " + json_type_name(value), key);
      const std::string& s = value.get_ref<const std::string&>();
      if (key == "input_file_id") {
        if (!is_id(s)) return no_such("File", "input_file_id");
        req.input_file_id = s;
      } else if (key == "endpoint") {
        if (s.size() > 64) return Status::invalid_argument("endpoint is not a batch endpoint", "endpoint");
        req.endpoint = s;
      } else {
        if (s.size() > 16) return Status::invalid_argument("completion_window must be \"24h\"", key);
        req.completion_window = s;
      }
    } else if (key == "metadata") {
      if (value.is_null()) continue;
      if (!value.is_object())
        return Status::invalid_argument("metadata must be an object of strings, not " + std::string(json_type_name(value)),
                                        "metadata");
      if (value.size() > kMaxMetadataPairs)
        return Status::invalid_argument("metadata holds at most 16 pairs", "metadata");
      for (const auto& [k, v] : value.items()) {
        if (k.size() > kMaxMetadataKey)
          return Status::invalid_argument("metadata keys are at most 64 characters", "metadata");
        if (!v.is_string() || v.get_ref<const std::string&>().size() > kMaxMetadataValue)
          return Status::invalid_argument("metadata values are strings of at most 512 characters", "metadata." + k.substr(0, 64));
      }
      req.metadata = dump_json(value);
    } else if (key == "output_expires_after") {
      continue;  // accepted; output files do not expire here
    } else {
      return Status::invalid_argument("unknown field " + (key.size() > 64 ? key.substr(0, 64) + "..." : key),
                                      key.substr(0, 64));
    }
  }
  if (req.input_file_id.empty()) return Status::invalid_argument("input_file_id is required", "input_file_id");
  if (req.endpoint.empty()) return Status::invalid_argument("endpoint is required", "endpoint");
  return req;
}

class BatchRoutes {
 public:
  BatchRoutes(std::shared_ptr<batch::BatchService> service, TenantOf tenant_of)
      : service_(std::move(service)), tenant_of_(std::move(tenant_of)) {}

  HttpResponse upload(const HttpRequest& req) {
    Result<std::string> boundary = batch::multipart_boundary(req.header("content-type"));
    if (!boundary) return error_response(boundary.status());
    batch::MultipartLimits limits;
    limits.max_part_bytes = static_cast<size_t>(service_->limits().max_file_bytes);
    auto parts = batch::parse_multipart(req.body, *boundary, limits);
    if (!parts) return error_response(parts.status());
    const batch::MultipartPart* purpose = nullptr;
    const batch::MultipartPart* file = nullptr;
    for (const auto& p : *parts) {
      const batch::MultipartPart** slot = p.name == "purpose" ? &purpose : p.name == "file" ? &file : nullptr;
      if (!slot) continue;  // other fields (expires_after[...]) are accepted and ignored
      if (*slot) return error_response(Status::invalid_argument("the field " + p.name + " is given twice", p.name));
      *slot = &p;
    }
    if (!purpose) return error_response(Status::invalid_argument("purpose is required", "purpose"));
    if (!file || !file->filename)
      return error_response(Status::invalid_argument("file is required (a part with a filename)", "file"));
    Result<batch::FileRecord> f =
        service_->upload(tenant_of_(req), std::string(purpose->data), *file->filename, file->data);
    if (!f) return error_response(f.status());
    return json_response(file_json(*f));
  }

  HttpResponse list_files(const HttpRequest& req) {
    ASSIGN_OR_RESPOND(auto q, query_params(req.target));
    ASSIGN_OR_RESPOND(batch::Page page, read_page(q, 10000, 10000));
    std::string purpose;
    if (auto it = q.find("purpose"); it != q.end()) purpose = it->second.substr(0, 64);
    if (auto it = q.find("order"); it != q.end()) {
      if (it->second != "asc" && it->second != "desc")
        return error_response(Status::invalid_argument("order must be asc or desc", "order"));
      page.ascending = it->second == "asc";
    }
    ASSIGN_OR_RESPOND(auto rows, service_->store().list_files(tenant_of_(req), purpose, page));
    return json_response(list_json(rows, page.limit, file_json));
  }

  HttpResponse file_item(const HttpRequest& req) {
    std::string_view rest = std::string_view(req.path).substr(kFilesPrefix.size());
    bool content = false;
    if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
      if (rest.substr(slash) != "/content" || req.method != "GET") return error_response(no_such("File", "file_id"));
      content = true;
      rest = rest.substr(0, slash);
    }
    if (!is_id(rest)) return error_response(no_such("File", "file_id"));
    const std::string id(rest);
    const std::string tenant = tenant_of_(req);
    if (req.method == "DELETE") {
      if (Status s = service_->store().delete_file(tenant, id); !s) return error_response(s);
      return json_response({{"id", id}, {"object", "file"}, {"deleted", true}});
    }
    if (content) {
      ASSIGN_OR_RESPOND(std::string bytes, service_->store().file_content(tenant, id));
      HttpResponse r;
      r.content_type = "application/octet-stream";
      r.body = std::move(bytes);
      return r;
    }
    ASSIGN_OR_RESPOND(batch::FileRecord f, service_->store().get_file(tenant, id));
    return json_response(file_json(f));
  }

  HttpResponse create(const HttpRequest& req) {
    ASSIGN_OR_RESPOND(batch::CreateBatch request, read_create(req.body));
    ASSIGN_OR_RESPOND(batch::BatchRecord b, service_->create(tenant_of_(req), request));
    return json_response(batch_json(b));
  }

  HttpResponse list_batches(const HttpRequest& req) {
    ASSIGN_OR_RESPOND(auto q, query_params(req.target));
    ASSIGN_OR_RESPOND(batch::Page page, read_page(q, 100, 20));
    ASSIGN_OR_RESPOND(auto rows, service_->store().list_batches(tenant_of_(req), page));
    return json_response(list_json(rows, page.limit, batch_json));
  }

  HttpResponse batch_item(const HttpRequest& req) {
    std::string_view rest = std::string_view(req.path).substr(kBatchesPrefix.size());
    bool cancel = false;
    if (size_t slash = rest.find('/'); slash != std::string_view::npos) {
      if (rest.substr(slash) != "/cancel" || req.method != "POST") return error_response(no_such("Batch", "batch_id"));
      cancel = true;
      rest = rest.substr(0, slash);
    } else if (req.method != "GET") {
      return error_response(no_such("Batch", "batch_id"));
    }
    if (!is_id(rest)) return error_response(no_such("Batch", "batch_id"));
    const std::string id(rest);
    if (cancel) {
      ASSIGN_OR_RESPOND(batch::BatchRecord b, service_->cancel(tenant_of_(req), id));
      return json_response(batch_json(b));
    }
    ASSIGN_OR_RESPOND(batch::BatchRecord b, service_->store().get_batch(tenant_of_(req), id));
    return json_response(batch_json(b));
  }

 private:
  std::shared_ptr<batch::BatchService> service_;
  TenantOf tenant_of_;
};

// A ResponseWriter that hands the whole answer to `done` once: at respond(),
// or at end() of a stream (whose chunks it collects).
class JobWriter : public ResponseWriter {
 public:
  explicit JobWriter(batch::LocalJobRunner::Done done) : done_(std::move(done)) {}
  void respond(HttpResponse response) override { finish(response.status, std::move(response.body)); }
  void start_stream(int status, std::string, std::map<std::string, std::string>) override {
    std::lock_guard lock(mu_);
    if (status_ == 0) status_ = status;
  }
  void write(std::string data) override {
    std::lock_guard lock(mu_);
    if (!finished_) body_ += data;
  }
  void end() override {
    int status;
    std::string body;
    {
      std::lock_guard lock(mu_);
      status = status_ ? status_ : 200;
      body = std::move(body_);
    }
    finish(status, std::move(body));
  }
  const CancelTokenPtr& cancel_token() const override { return cancel_; }

 private:
  void finish(int status, std::string body) {
    {
      std::lock_guard lock(mu_);
      if (finished_) return;
      finished_ = true;
    }
    done_(status, std::move(body));
  }
  std::mutex mu_;
  int status_ = 0;
  bool finished_ = false;
  std::string body_;
  batch::LocalJobRunner::Done done_;
  CancelTokenPtr cancel_ = std::make_shared<CancelToken>();
};

}  // namespace

std::string no_tenant(const HttpRequest&) { return std::string(); }

void add_batch_routes(HttpRouter& router, std::shared_ptr<batch::BatchService> service, TenantOf tenant_of) {
  auto routes = std::make_shared<BatchRoutes>(std::move(service), std::move(tenant_of));
  auto bind = [routes](HttpResponse (BatchRoutes::*fn)(const HttpRequest&)) {
    return [routes, fn](const HttpRequest& r, ResponseWriterPtr w) { w->respond(((*routes).*fn)(r)); };
  };
  router.add("POST", "/v1/files", bind(&BatchRoutes::upload));
  router.add("GET", "/v1/files", bind(&BatchRoutes::list_files));
  router.add_prefix("GET", std::string(kFilesPrefix), bind(&BatchRoutes::file_item));
  router.add_prefix("DELETE", std::string(kFilesPrefix), bind(&BatchRoutes::file_item));
  router.add("POST", "/v1/batches", bind(&BatchRoutes::create));
  router.add("GET", "/v1/batches", bind(&BatchRoutes::list_batches));
  router.add_prefix("GET", std::string(kBatchesPrefix), bind(&BatchRoutes::batch_item));
  router.add_prefix("POST", std::string(kBatchesPrefix), bind(&BatchRoutes::batch_item));
}

batch::LocalJobRunner::Dispatch route_dispatch(const HttpRouter& router, PrincipalFor principal_for) {
  return [&router, principal_for = std::move(principal_for)](const batch::Job& job, batch::LocalJobRunner::Done done) {
    HttpRequest req;
    req.method = "POST";
    req.target = job.endpoint;
    req.path = job.endpoint;
    req.headers["content-type"] = "application/json";
    req.headers["x-request-id"] = job.id;
    req.body = job.body;
    if (principal_for) req.principal = principal_for(job.tenant);
    router.dispatch(req, std::make_shared<JobWriter>(std::move(done)));
  };
}

}  // namespace llmpool::api
