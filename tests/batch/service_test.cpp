// The Batch and Files APIs through their routes: a real BatchStore in a temp
// dir, a real LocalJobRunner dispatching through the same route table, and a
// model endpoint on that table that answers from the request (or holds the
// answer until the test releases it).
#include "batch/service.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "api/batch_routes.h"
#include "api/errors.h"
#include "tenancy/tenancy_test_util.h"

namespace llmpool::batch {
namespace {

using nlohmann::json;
using tenancy::testing::TempDir;

const std::string kBoundary = "xYzBoundary42";

std::string multipart(const std::string& purpose, const std::string& content, const std::string& filename = "in.jsonl") {
  return "--" + kBoundary + "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n" + purpose + "\r\n--" +
         kBoundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"" + filename +
         "\"\r\nContent-Type: application/jsonl\r\n\r\n" + content + "\r\n--" + kBoundary + "--\r\n";
}

std::string line(const std::string& custom_id, const std::string& model, const std::string& text = "hi") {
  json j = {{"custom_id", custom_id},
            {"method", "POST"},
            {"url", "/v1/chat/completions"},
            {"body", {{"model", model}, {"messages", {{{"role", "user"}, {"content", text}}}}}}};
  return j.dump() + "\n";
}

std::vector<json> jsonl(const std::string& text) {
  std::vector<json> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);)
    if (!l.empty()) out.push_back(json::parse(l));
  return out;
}

// The model endpoint: echoes the user's text; model "fail" answers 400;
// while holding, answers wait until release().
class FakeModel {
 public:
  void handle(const api::HttpRequest& req, api::ResponseWriterPtr w) {
    json body = json::parse(req.body);
    std::string model = body.value("model", "");
    ++calls_;
    if (model == "fail") {
      w->respond(api::error_response(Status::invalid_argument("the fake model refuses", "model")));
      return;
    }
    api::HttpResponse r;
    r.body = json({{"object", "chat.completion"},
                   {"model", model},
                   {"request_id", req.header("x-request-id")},
                   {"choices", {{{"index", 0}, {"message", {{"role", "assistant"}, {"content", body["messages"][0]["content"]}}}}}}})
                 .dump();
    std::lock_guard lock(mu_);
    if (holding_ || model == "hold") {
      held_.emplace_back(w, r);
      return;
    }
    w->respond(std::move(r));
  }
  void hold(bool on) {
    std::lock_guard lock(mu_);
    holding_ = on;
  }
  // Answers the first `n` held requests (all when n < 0).
  void release(int n = -1) {
    std::vector<std::pair<api::ResponseWriterPtr, api::HttpResponse>> out;
    {
      std::lock_guard lock(mu_);
      size_t k = n < 0 ? held_.size() : std::min(held_.size(), static_cast<size_t>(n));
      out.assign(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(k));
      held_.erase(held_.begin(), held_.begin() + static_cast<std::ptrdiff_t>(k));
    }
    for (auto& [w, r] : out) w->respond(r);
  }
  size_t held() {
    std::lock_guard lock(mu_);
    return held_.size();
  }
  int calls() const { return calls_; }

 private:
  std::mutex mu_;
  bool holding_ = false;
  std::vector<std::pair<api::ResponseWriterPtr, api::HttpResponse>> held_;
  std::atomic<int> calls_{0};
};

// What the service's runner is, given the node's own (a test may wrap it).
using RunnerWrap = std::function<std::shared_ptr<JobRunner>(std::shared_ptr<JobRunner>)>;

// One API node: route table, runner, service over data_dir.
struct Node {
  api::HttpRouter router;
  std::shared_ptr<LocalJobRunner> runner;
  std::shared_ptr<BatchService> service;

  Node(const std::string& data_dir, FakeModel& model, const BatchLimits& limits, int max_concurrent,
       std::function<int64_t()> clock, const RunnerWrap& wrap = {}) {
    router.add("POST", "/v1/chat/completions",
               [&model](const api::HttpRequest& r, api::ResponseWriterPtr w) { model.handle(r, std::move(w)); });
    runner = std::make_shared<LocalJobRunner>(
        api::route_dispatch(router),
        LocalJobRunner::Options{.max_concurrent = max_concurrent, .max_attempts = 2,
                                .retry_delay = std::chrono::milliseconds(10)});
    auto store = BatchStore::open(data_dir);
    EXPECT_TRUE(store.is_ok()) << store.status().to_string();
    BatchService::Options options;
    options.limits = limits;
    options.now_unix = std::move(clock);
    options.tick = std::chrono::milliseconds(10);
    options.cancel_grace_seconds = 60;
    service = std::make_shared<BatchService>(std::move(*store), wrap ? wrap(runner) : runner, options);
    api::add_batch_routes(router, service, [](const api::HttpRequest& r) { return r.header("x-test-tenant"); });
    EXPECT_TRUE(service->start().is_ok());
  }
  ~Node() {
    service->stop();
    runner->stop();
  }
};

class BatchServiceTest : public ::testing::Test {
 protected:
  void SetUp() override { node_ = make_node(); }
  void TearDown() override {
    node_.reset();
    model_.release();
  }
  std::unique_ptr<Node> make_node(int max_concurrent = 4, const RunnerWrap& wrap = {}) {
    return std::make_unique<Node>(dir_.path() + "/data", model_, limits_, max_concurrent, [this] { return now_.load(); },
                                  wrap);
  }

  api::HttpResponse call(const std::string& method, const std::string& target, const std::string& body = "",
                         const std::string& tenant = "", const std::string& content_type = "application/json") {
    api::HttpRequest req;
    req.method = method;
    req.target = target;
    req.path = target.substr(0, target.find('?'));
    req.headers["content-type"] = content_type;
    if (!tenant.empty()) req.headers["x-test-tenant"] = tenant;
    req.body = body;
    auto w = std::make_shared<api::BufferedResponseWriter>();
    node_->router.dispatch(req, w);
    EXPECT_TRUE(w->finished());
    return w->response();
  }
  json call_json(const std::string& method, const std::string& target, const std::string& body = "",
                 int expect_status = 200, const std::string& tenant = "") {
    api::HttpResponse r = call(method, target, body, tenant);
    EXPECT_EQ(r.status, expect_status) << method << " " << target << ": " << r.body;
    return json::parse(r.body);
  }

  std::string upload(const std::string& content, const std::string& tenant = "") {
    api::HttpResponse r = call("POST", "/v1/files", multipart("batch", content), tenant,
                               "multipart/form-data; boundary=" + kBoundary);
    EXPECT_EQ(r.status, 200) << r.body;
    return json::parse(r.body).value("id", "");
  }
  json create(const std::string& file_id, const std::string& tenant = "") {
    return call_json("POST", "/v1/batches",
                     json({{"input_file_id", file_id}, {"endpoint", "/v1/chat/completions"},
                           {"completion_window", "24h"}, {"metadata", {{"run", "t1"}}}})
                         .dump(),
                     200, tenant);
  }
  // Polls the batch until `status` (10 s: generous on a loaded machine).
  json wait_for(const std::string& id, const std::string& status, const std::string& tenant = "") {
    json b;
    for (int i = 0; i < 1000; ++i) {
      b = call_json("GET", "/v1/batches/" + id, "", 200, tenant);
      if (b["status"] == status) return b;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    ADD_FAILURE() << "batch " << id << " never reached " << status << ": " << b.dump();
    return b;
  }
  std::string content(const json& file_id, const std::string& tenant = "") {
    if (!file_id.is_string()) return "";
    api::HttpResponse r = call("GET", "/v1/files/" + file_id.get<std::string>() + "/content", "", tenant);
    EXPECT_EQ(r.status, 200);
    return r.body;
  }
  void wait_until(const std::function<bool()>& cond) {
    for (int i = 0; i < 1000 && !cond(); ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_TRUE(cond());
  }

  TempDir dir_;
  FakeModel model_;
  BatchLimits limits_;
  std::atomic<int64_t> now_{1700000000};
  std::unique_ptr<Node> node_;
};

TEST_F(BatchServiceTest, RunsABatchToCompletedWithOutputAndErrorFiles) {
  std::string file = upload(line("a", "tiny", "one") + line("b", "fail") + line("c", "tiny", "three"));
  json created = create(file);
  EXPECT_EQ(created["object"], "batch");
  EXPECT_EQ(created["status"], "validating");
  EXPECT_EQ(created["input_file_id"], file);
  EXPECT_EQ(created["completion_window"], "24h");
  EXPECT_EQ(created["expires_at"], now_.load() + 86400);
  EXPECT_EQ(created["metadata"], json({{"run", "t1"}}));
  EXPECT_TRUE(created["output_file_id"].is_null());
  json done = wait_for(created["id"], "completed");
  EXPECT_EQ(done["request_counts"], json({{"total", 3}, {"completed", 2}, {"failed", 1}}));
  for (const char* t : {"in_progress_at", "finalizing_at", "completed_at"}) EXPECT_TRUE(done[t].is_number()) << t;
  EXPECT_TRUE(done["failed_at"].is_null());
  auto out = jsonl(content(done["output_file_id"]));
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0]["custom_id"], "a");
  EXPECT_EQ(out[1]["custom_id"], "c");
  EXPECT_EQ(out[0]["response"]["status_code"], 200);
  EXPECT_EQ(out[0]["response"]["body"]["choices"][0]["message"]["content"], "one");
  EXPECT_TRUE(out[0]["error"].is_null());
  EXPECT_TRUE(out[0]["id"].get<std::string>().starts_with("batch_req_"));
  auto err = jsonl(content(done["error_file_id"]));
  ASSERT_EQ(err.size(), 1u);
  EXPECT_EQ(err[0]["custom_id"], "b");
  EXPECT_EQ(err[0]["response"]["status_code"], 400);
  EXPECT_EQ(err[0]["response"]["body"]["error"]["param"], "model");
  json output_file = call_json("GET", "/v1/files/" + done["output_file_id"].get<std::string>());
  EXPECT_EQ(output_file["purpose"], "batch_output");
}

TEST_F(BatchServiceTest, FailsValidationWithTheCodeAndLineOfEachBadLine) {
  std::string bad = line("ok", "tiny") +                                                   // 1
                    "not json\n" +                                                         // 2
                    line("ok", "tiny") +                                                   // 3: duplicate
                    R"({"custom_id":"u","method":"POST","url":"/v1/embeddings","body":{"model":"m"}})" "\n" +  // 4
                    "\n" +                                                                 // 5: blank, skipped
                    R"({"custom_id":"m","method":"GET","url":"/v1/chat/completions","body":{"model":"m"}})" "\n" +  // 6
                    R"({"custom_id":"b","method":"POST","url":"/v1/chat/completions","body":[1]})" "\n" +  // 7
                    R"({"method":"POST","url":"/v1/chat/completions","body":{"model":"m"}})" "\n" +  // 8
                    R"({"custom_id":"s","method":"POST","url":"/v1/chat/completions","body":{"model":"m","stream":true}})" "\n" +  // 9
                    R"({"custom_id":"n","method":"POST","url":"/v1/chat/completions","body":{}})" "\n" +  // 10
                    "[1,2]\r\n" +                                                          // 11
                    std::string(100, '[') + "\n";                                          // 12: too deep
  json b = wait_for(create(upload(bad))["id"], "failed");
  EXPECT_TRUE(b["failed_at"].is_number());
  EXPECT_TRUE(b["in_progress_at"].is_null());
  ASSERT_TRUE(b["errors"].is_object());
  std::vector<std::pair<std::string, int>> got;
  for (const auto& e : b["errors"]["data"]) got.emplace_back(e["code"], e["line"]);
  std::vector<std::pair<std::string, int>> want = {
      {"invalid_json_line", 2}, {"duplicate_custom_id", 3}, {"invalid_url", 4},   {"invalid_method", 6},
      {"invalid_body", 7},      {"missing_custom_id", 8},   {"invalid_body", 9},  {"missing_model", 10},
      {"invalid_json_line", 11}, {"invalid_json_line", 12}};
  EXPECT_EQ(got, want);
  EXPECT_EQ(model_.calls(), 0);
}

TEST_F(BatchServiceTest, FailsAnEmptyFileAndFilesOverTheLineLimits) {
  json empty = wait_for(create(upload("\n\n"))["id"], "failed");
  EXPECT_EQ(empty["errors"]["data"][0]["code"], "empty_file");
  node_.reset();
  limits_.max_lines = 2;
  limits_.max_line_bytes = 200;
  node_ = make_node();
  json many = wait_for(create(upload(line("1", "t") + line("2", "t") + line("3", "t")))["id"], "failed");
  EXPECT_EQ(many["errors"]["data"][0]["code"], "too_many_requests");
  EXPECT_EQ(many["errors"]["data"][0]["line"], 3);
  json long_line = wait_for(create(upload(line("1", "t", std::string(300, 'x'))))["id"], "failed");
  EXPECT_EQ(long_line["errors"]["data"][0]["code"], "line_too_long");
  EXPECT_EQ(long_line["errors"]["data"][0]["line"], 1);
}

// Hands jobs to another runner and calls a hook after the first submit.
class HookedRunner : public JobRunner {
 public:
  HookedRunner(std::shared_ptr<JobRunner> inner, std::function<void()> after_first_submit)
      : inner_(std::move(inner)), hook_(std::move(after_first_submit)) {}
  void set_result_sink(ResultSink sink) override { inner_->set_result_sink(std::move(sink)); }
  Status submit(const Job& job) override {
    Status s = inner_->submit(job);
    if (submits_++ == 0) hook_();
    return s;
  }
  void cancel(const std::vector<std::string>& ids) override {
    inner_->cancel(ids);
    ++cancels;
  }
  std::atomic<int> cancels{0};

 private:
  std::shared_ptr<JobRunner> inner_;
  std::function<void()> hook_;
  int submits_ = 0;
};

// A cancel that lands while the service is still handing a batch's lines to
// the runner (seen once under load): the lines handed over after it are
// cancelled too, not run.
TEST_F(BatchServiceTest, ACancelWhileLinesAreBeingSubmittedCancelsTheRest) {
  std::promise<std::string> batch_id;
  std::shared_future<std::string> id = batch_id.get_future().share();
  std::shared_ptr<BatchService> service;  // the hook runs on the service's thread, after creation
  std::shared_ptr<HookedRunner> hooked;
  node_.reset();
  node_ = make_node(1, [&](std::shared_ptr<JobRunner> inner) {
    return hooked = std::make_shared<HookedRunner>(inner, [&, id] {
      wait_until([&] { return model_.held() == 1; });  // "a" runs; "b" and "c" are not handed over yet
      auto r = service->cancel("", id.get());
      EXPECT_TRUE(r.is_ok()) << r.status().to_string();
    });
  });
  service = node_->service;
  model_.hold(true);
  json b = create(upload(line("a", "tiny") + line("b", "tiny") + line("c", "tiny")));
  batch_id.set_value(b["id"].get<std::string>());
  // The hook saw "a" running and cancelled; then the service cancels "b"
  // and "c", which it handed over after that (a second cancel).
  wait_until([&] { return hooked->cancels.load() >= 2; });
  ASSERT_EQ(model_.held(), 1u);
  model_.release();  // "a" finishes
  json done = wait_for(b["id"], "cancelled");
  EXPECT_EQ(done["request_counts"], json({{"total", 3}, {"completed", 1}, {"failed", 0}}));
  EXPECT_EQ(model_.calls(), 1);
  EXPECT_EQ(jsonl(content(done["error_file_id"])).size(), 2u);
}

TEST_F(BatchServiceTest, CancelStopsPendingLinesAndEndsWithPartialOutput) {
  node_ = make_node(/*max_concurrent=*/1);
  model_.hold(true);
  json b = create(upload(line("a", "tiny") + line("b", "tiny") + line("c", "tiny")));
  wait_for(b["id"], "in_progress");
  wait_until([&] { return model_.held() == 1; });
  json cancelling = call_json("POST", "/v1/batches/" + b["id"].get<std::string>() + "/cancel");
  EXPECT_EQ(cancelling["status"], "cancelling");
  EXPECT_TRUE(cancelling["cancelling_at"].is_number());
  // A second cancel is harmless.
  EXPECT_EQ(call_json("POST", "/v1/batches/" + b["id"].get<std::string>() + "/cancel")["status"], "cancelling");
  model_.release();  // the running line finishes
  json done = wait_for(b["id"], "cancelled");
  EXPECT_TRUE(done["cancelled_at"].is_number());
  EXPECT_EQ(done["request_counts"], json({{"total", 3}, {"completed", 1}, {"failed", 0}}));
  auto out = jsonl(content(done["output_file_id"]));
  ASSERT_EQ(out.size(), 1u);
  EXPECT_EQ(out[0]["custom_id"], "a");
  auto err = jsonl(content(done["error_file_id"]));
  ASSERT_EQ(err.size(), 2u);
  EXPECT_EQ(err[0]["custom_id"], "b");
  EXPECT_TRUE(err[0]["response"].is_null());
  EXPECT_EQ(err[0]["error"]["code"], "batch_cancelled");
  EXPECT_EQ(model_.calls(), 1);
}

TEST_F(BatchServiceTest, RefusesToCancelABatchThatHasEnded) {
  json b = wait_for(create(upload(line("a", "tiny")))["id"], "completed");
  json e = call_json("POST", "/v1/batches/" + b["id"].get<std::string>() + "/cancel", "", 400);
  EXPECT_NE(e["error"]["message"].get<std::string>().find("completed"), std::string::npos);
}

TEST_F(BatchServiceTest, ExpiresAfterTheCompletionWindowWithWhatItHas) {
  node_ = make_node(1);
  model_.hold(true);
  json b = create(upload(line("a", "tiny") + line("b", "tiny")));
  wait_for(b["id"], "in_progress");
  wait_until([&] { return model_.held() == 1; });
  now_ += 86400;
  json done = wait_for(b["id"], "expired");
  EXPECT_TRUE(done["expired_at"].is_number());
  auto err = jsonl(content(done["error_file_id"]));
  ASSERT_EQ(err.size(), 2u);
  EXPECT_EQ(err[0]["error"]["code"], "batch_expired");
  EXPECT_TRUE(done["output_file_id"].is_null());
  model_.release();  // a late answer changes nothing
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  json after = call_json("GET", "/v1/batches/" + b["id"].get<std::string>());
  EXPECT_EQ(after["status"], "expired");
  EXPECT_EQ(after["request_counts"]["completed"], 0);
}

TEST_F(BatchServiceTest, ASecondNodeOnTheSameDataDirFinishesABatch) {
  node_ = make_node(1);
  model_.hold(true);
  json b = create(upload(line("a", "tiny", "1") + line("b", "tiny", "2") + line("c", "tiny", "3")));
  const std::string id = b["id"];
  wait_for(id, "in_progress");
  wait_until([&] { return model_.held() == 1; });
  model_.release(1);  // line a is answered and stored
  wait_until([&] { return call_json("GET", "/v1/batches/" + id)["request_counts"]["completed"] == 1; });
  wait_until([&] { return model_.held() == 1; });  // line b is running when the node goes
  node_.reset();
  model_.hold(false);
  node_ = make_node();
  json done = wait_for(id, "completed");
  EXPECT_EQ(done["request_counts"], json({{"total", 3}, {"completed", 3}, {"failed", 0}}));
  model_.release();  // the first node's answer for b arrives late: dropped
  auto out = jsonl(content(done["output_file_id"]));
  ASSERT_EQ(out.size(), 3u);
  for (size_t i = 0; i < 3; ++i) {
    EXPECT_EQ(out[i]["custom_id"], std::string(1, static_cast<char>('a' + i)));
    EXPECT_EQ(out[i]["response"]["body"]["choices"][0]["message"]["content"], std::to_string(i + 1));
  }
  EXPECT_EQ(model_.calls(), 4);  // a once, b twice (before and after the restart), c once
}

TEST_F(BatchServiceTest, ListsBatchesNewestFirstByPage) {
  std::string file = upload(line("a", "tiny"));
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) ids.push_back(create(file)["id"]);
  json page = call_json("GET", "/v1/batches?limit=2");
  EXPECT_EQ(page["object"], "list");
  ASSERT_EQ(page["data"].size(), 2u);
  EXPECT_EQ(page["data"][0]["id"], ids[2]);
  EXPECT_EQ(page["data"][1]["id"], ids[1]);
  EXPECT_EQ(page["has_more"], true);
  EXPECT_EQ(page["last_id"], ids[1]);
  json next = call_json("GET", "/v1/batches?limit=2&after=" + ids[1]);
  ASSERT_EQ(next["data"].size(), 1u);
  EXPECT_EQ(next["data"][0]["id"], ids[0]);
  EXPECT_EQ(next["has_more"], false);
  for (const char* q : {"limit=0", "limit=101", "limit=x", "limit=1&limit=2", "after=%00"})
    EXPECT_EQ(call("GET", std::string("/v1/batches?") + q).status, 400) << q;
}

TEST_F(BatchServiceTest, ATenantSeesOnlyItsOwnFilesAndBatches) {
  std::string file = upload(line("a", "tiny"), "acme");
  json b = create(file, "acme");
  const std::string id = b["id"];
  EXPECT_EQ(call("GET", "/v1/files/" + file, "", "other").status, 404);
  EXPECT_EQ(call("GET", "/v1/files/" + file + "/content", "", "other").status, 404);
  EXPECT_EQ(call("DELETE", "/v1/files/" + file, "", "other").status, 404);
  EXPECT_EQ(call("GET", "/v1/batches/" + id, "", "other").status, 404);
  EXPECT_EQ(call("POST", "/v1/batches/" + id + "/cancel", "", "other").status, 404);
  EXPECT_EQ(call_json("GET", "/v1/files", "", 200, "other")["data"].size(), 0u);
  EXPECT_EQ(call_json("GET", "/v1/batches", "", 200, "other")["data"].size(), 0u);
  EXPECT_EQ(call("POST", "/v1/batches",
                 json({{"input_file_id", file}, {"endpoint", "/v1/chat/completions"}, {"completion_window", "24h"}}).dump(),
                 "other")
                .status,
            404);
  json done = wait_for(id, "completed", "acme");
  EXPECT_EQ(call("GET", "/v1/files/" + done["output_file_id"].get<std::string>(), "", "other").status, 404);
  EXPECT_EQ(call_json("GET", "/v1/batches", "", 200, "acme")["data"].size(), 1u);
}

TEST_F(BatchServiceTest, ServesTheFilesApi) {
  std::string text = line("a", "tiny");
  api::HttpResponse up = call("POST", "/v1/files", multipart("batch", text, "my input.jsonl"), "",
                              "multipart/form-data; boundary=\"" + kBoundary + "\"");
  ASSERT_EQ(up.status, 200) << up.body;
  json f = json::parse(up.body);
  EXPECT_EQ(f["object"], "file");
  EXPECT_EQ(f["purpose"], "batch");
  EXPECT_EQ(f["filename"], "my input.jsonl");
  EXPECT_EQ(f["bytes"], text.size());
  EXPECT_TRUE(f["id"].get<std::string>().starts_with("file-"));
  const std::string id = f["id"];
  EXPECT_EQ(call_json("GET", "/v1/files/" + id), f);
  EXPECT_EQ(content(id), text);
  json list = call_json("GET", "/v1/files?purpose=batch&order=asc&limit=5");
  ASSERT_EQ(list["data"].size(), 1u);
  EXPECT_EQ(list["data"][0]["id"], id);
  EXPECT_EQ(call("GET", "/v1/files?order=sideways").status, 400);
  json del = call_json("DELETE", "/v1/files/" + id);
  EXPECT_EQ(del, json({{"id", id}, {"object", "file"}, {"deleted", true}}));
  EXPECT_EQ(call("GET", "/v1/files/" + id).status, 404);
  EXPECT_EQ(call("DELETE", "/v1/files/" + id).status, 404);
  EXPECT_EQ(call("GET", "/v1/files/" + std::string(5000, 'x')).status, 404);
  EXPECT_EQ(call("GET", "/v1/files/" + id + "/other").status, 404);
  EXPECT_EQ(call("GET", "/v1/files/../../etc/passwd").status, 404);
}

TEST_F(BatchServiceTest, RefusesBadUploadsWithTheField) {
  const std::string type = "multipart/form-data; boundary=" + kBoundary;
  auto refuse = [&](const std::string& body, const std::string& content_type, const std::string& param) {
    api::HttpResponse r = call("POST", "/v1/files", body, "", content_type);
    EXPECT_EQ(r.status, 400) << r.body;
    json e = json::parse(r.body);
    EXPECT_EQ(e["error"]["type"], "invalid_request_error");
    EXPECT_EQ(e["error"]["param"], param) << r.body;
  };
  refuse(multipart("fine-tune", "x"), type, "purpose");
  refuse(multipart("batch", "x"), "application/json", "file");
  refuse(multipart("batch", "x"), "multipart/form-data", "file");
  refuse("--" + kBoundary + "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--" + kBoundary + "--",
         type, "file");
  refuse(multipart("batch", "x").substr(0, 60), type, "file");
  std::string twice = "--" + kBoundary + "\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n" +
                      multipart("batch", "x");
  refuse(twice, type, "purpose");
  node_.reset();
  limits_.max_file_bytes = 16;
  node_ = make_node();
  refuse(multipart("batch", std::string(17, 'x')), type, "file");
}

TEST_F(BatchServiceTest, RefusesBadBatchRequestsWithTheField) {
  std::string file = upload(line("a", "tiny"));
  auto refuse = [&](const json& body, int status, const std::string& param) {
    api::HttpResponse r = call("POST", "/v1/batches", body.is_string() ? body.get<std::string>() : body.dump());
    EXPECT_EQ(r.status, status) << body.dump() << " -> " << r.body;
    json e = json::parse(r.body);
    if (!param.empty()) {
      EXPECT_EQ(e["error"]["param"], param) << r.body;
    }
  };
  json ok = {{"input_file_id", file}, {"endpoint", "/v1/chat/completions"}, {"completion_window", "24h"}};
  auto with = [&](const std::string& k, const json& v) {
    json j = ok;
    j[k] = v;
    return j;
  };
  refuse(with("endpoint", "/v1/images"), 400, "endpoint");
  refuse(with("endpoint", 7), 400, "endpoint");
  refuse(with("completion_window", "1h"), 400, "completion_window");
  refuse(with("input_file_id", "file-missing"), 404, "input_file_id");
  refuse(with("input_file_id", "../x"), 404, "input_file_id");
  refuse(with("metadata", {{"k", 1}}), 400, "metadata.k");
  refuse(with("metadata", "text"), 400, "metadata");
  json many;
  for (int i = 0; i < 17; ++i) many["k" + std::to_string(i)] = "v";
  refuse(with("metadata", many), 400, "metadata");
  refuse(with("surprise", 1), 400, "surprise");
  refuse(json({{"endpoint", "/v1/chat/completions"}}), 400, "input_file_id");
  refuse(json("not json"), 400, "");
  refuse(json(std::string(200, '[')), 400, "");
  refuse(json("[]"), 400, "");
  // An output file cannot be the input of a batch.
  json done = wait_for(create(file)["id"], "completed");
  refuse(with("input_file_id", done["output_file_id"]), 400, "input_file_id");
  EXPECT_EQ(call("GET", "/v1/batches/batch_missing").status, 404);
  EXPECT_EQ(call("POST", "/v1/batches/batch_missing/cancel").status, 404);
  EXPECT_EQ(call("POST", "/v1/batches/x/other").status, 404);
}

}  // namespace
}  // namespace llmpool::batch
