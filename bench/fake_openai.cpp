#include "fake_openai.h"

#include <algorithm>
#include <chrono>
#include <ctime>

namespace llmpool::fake {

using nlohmann::json;

namespace {

Status bad_field(const std::string& field, const std::string& what) {
  return Status::invalid_argument("control field '" + field + "' " + what, field);
}

// Reads an integer field into *out when it is one and lies in [lo, hi].
Status read_int(const json& v, const std::string& field, int64_t lo, int64_t hi, int64_t* out) {
  if (!v.is_number_integer()) return bad_field(field, "must be an integer");
  int64_t x = v.get<int64_t>();
  if (x < lo || x > hi) {
    return bad_field(field, "must be between " + std::to_string(lo) + " and " + std::to_string(hi));
  }
  *out = x;
  return Status::ok();
}

api::HttpResponse error_response(int status, const std::string& message, const std::string& type,
                                 const std::string& param = {}) {
  api::HttpResponse r;
  r.status = status;
  r.body = json{{"error",
                 {{"message", message},
                  {"type", type},
                  {"param", param.empty() ? json() : json(param)},
                  {"code", json()}}}}
               .dump();
  return r;
}

// Roughly what a tokenizer would count: a token per 4 characters of the
// messages' text, 4 per message for the template.
int64_t estimate_prompt_tokens(const json& body) {
  int64_t chars = 0, messages = 0;
  auto it = body.find("messages");
  if (it == body.end() || !it->is_array()) return 1;
  for (const json& m : *it) {
    ++messages;
    if (!m.is_object()) continue;
    auto c = m.find("content");
    if (c == m.end()) continue;
    if (c->is_string()) {
      chars += static_cast<int64_t>(c->get_ref<const std::string&>().size());
    } else if (c->is_array()) {
      for (const json& part : *c) {
        if (part.is_object() && part.contains("text") && part["text"].is_string())
          chars += static_cast<int64_t>(part["text"].get_ref<const std::string&>().size());
      }
    }
  }
  return std::max<int64_t>(1, (chars + 3) / 4 + 4 * messages);
}

// A positive integer field of the request, or 0.
int64_t positive_int(const json& body, const char* field) {
  auto it = body.find(field);
  if (it == body.end() || !it->is_number_integer()) return 0;
  return std::max<int64_t>(0, it->get<int64_t>());
}

}  // namespace

Result<Behaviour> apply_behaviour(const Behaviour& base, const json& update) {
  if (!update.is_object()) return Status::invalid_argument("control body must be a JSON object");
  Behaviour b = base;
  for (const auto& [key, v] : update.items()) {
    Status st;
    int64_t x = 0;
    if (key == "ttft_ms") {
      if ((st = read_int(v, key, 0, 600000, &x)).is_ok()) b.ttft_ms = x;
    } else if (key == "token_ms") {
      if ((st = read_int(v, key, 0, 60000, &x)).is_ok()) b.token_ms = x;
    } else if (key == "tokens") {
      if ((st = read_int(v, key, 1, 100000, &x)).is_ok()) b.tokens = static_cast<int32_t>(x);
    } else if (key == "error_status") {
      if ((st = read_int(v, key, 400, 599, &x)).is_ok()) b.error_status = static_cast<int32_t>(x);
    } else if (key == "error_rate") {
      if (!v.is_number() || v.get<double>() < 0 || v.get<double>() > 1) {
        st = bad_field(key, "must be a number between 0 and 1");
      } else {
        b.error_rate = v.get<double>();
      }
    } else if (key == "stall") {
      if (!v.is_boolean()) {
        st = bad_field(key, "must be true or false");
      } else {
        b.stall = v.get<bool>();
      }
    } else if (key == "text") {
      if (!v.is_string() || v.get_ref<const std::string&>().empty() || v.get_ref<const std::string&>().size() > 65536) {
        st = bad_field(key, "must be a string of 1 to 65536 bytes");
      } else {
        b.text = v.get<std::string>();
      }
    } else {
      st = bad_field(key, "is unknown (known: ttft_ms, token_ms, tokens, error_rate, error_status, stall, text, "
                          "reset_counts)");
    }
    if (!st.is_ok()) return st;
  }
  return b;
}

json to_json(const Behaviour& b) {
  return {{"ttft_ms", b.ttft_ms},       {"token_ms", b.token_ms},         {"tokens", b.tokens},
          {"error_rate", b.error_rate}, {"error_status", b.error_status}, {"stall", b.stall},
          {"text", b.text}};
}

json to_json(const Counts& c) {
  return {{"requests", c.requests}, {"ok", c.ok},           {"errors", c.errors},
          {"stalled", c.stalled},   {"cancelled", c.cancelled}, {"bad_requests", c.bad_requests},
          {"active", c.active}};
}

std::vector<std::string> answer_tokens(const std::string& text, int32_t n) {
  std::vector<std::string> words;
  size_t i = 0;
  while (i < text.size()) {
    size_t start = i;
    while (i < text.size() && text[i] == ' ') ++i;   // the spaces before a word go with it
    while (i < text.size() && text[i] != ' ') ++i;
    words.push_back(text.substr(start, i - start));
  }
  if (words.empty()) words.push_back(text);
  std::vector<std::string> out;
  out.reserve(static_cast<size_t>(std::max(n, 0)));
  for (int32_t k = 0; k < n; ++k) {
    const std::string& w = words[static_cast<size_t>(k) % words.size()];
    bool wraps = k >= static_cast<int32_t>(words.size()) && static_cast<size_t>(k) % words.size() == 0;
    out.push_back(wraps && !w.empty() && w[0] != ' ' ? " " + w : w);
  }
  return out;
}

// One chat request in flight.
struct OpenAiFake::Exchange {
  api::ResponseWriterPtr w;
  Behaviour b;                  // as it was when the request arrived (or its stall ended)
  bool stream = false;
  bool include_usage = false;
  int n = 1;                    // choices
  std::string id;
  std::string model;
  int64_t created = 0;
  int64_t prompt_tokens = 0;
  int64_t max_tokens = 0;       // the request's cap; 0: none
  std::vector<std::string> tokens;
  const char* finish_reason = "stop";
  size_t next = 0;              // the next token to send

  json chunk(json choices) const {
    return {{"id", id}, {"object", "chat.completion.chunk"}, {"created", created}, {"model", model},
            {"choices", std::move(choices)}};
  }
  json usage() const {
    int64_t completion = static_cast<int64_t>(tokens.size()) * n;
    return {{"prompt_tokens", prompt_tokens}, {"completion_tokens", completion},
            {"total_tokens", prompt_tokens + completion}};
  }
};

OpenAiFake::OpenAiFake(Options options)
    : options_(std::move(options)), behaviour_(options_.behaviour), rng_(options_.seed) {
  if (options_.name.empty()) options_.name = options_.model;
  server_.post("/v1/chat/completions", [this](const api::HttpRequest& req, api::ResponseWriterPtr w) {
    chat(req, std::move(w));
  });
  server_.get("/v1/models", [this](const api::HttpRequest&, api::ResponseWriterPtr w) {
    api::HttpResponse r;
    r.body = json{{"object", "list"},
                  {"data", json::array({{{"id", options_.model},
                                         {"object", "model"},
                                         {"created", 0},
                                         {"owned_by", "llmpool-fake-upstream"}}})}}
                 .dump();
    w->respond(std::move(r));
  });
  auto control = [this](const api::HttpRequest& req, api::ResponseWriterPtr w) { this->control(req, std::move(w)); };
  server_.get("/control", control);
  server_.post("/control", control);
}

OpenAiFake::~OpenAiFake() { stop(); }

Status OpenAiFake::start() {
  Status st = server_.start(options_.host, options_.port, options_.io_threads);
  if (st.is_ok()) {
    // The server already answers: a request may read the prefix meanwhile (TSan).
    std::lock_guard<std::mutex> lock(mu_);
    id_prefix_ = "chatcmpl-fake-" + std::to_string(server_.port()) + "-";
  }
  return st;
}

void OpenAiFake::stop() { server_.stop(); }

Behaviour OpenAiFake::behaviour() const {
  std::lock_guard<std::mutex> lock(mu_);
  return behaviour_;
}

void OpenAiFake::set_behaviour(Behaviour b) {
  std::lock_guard<std::mutex> lock(mu_);
  behaviour_ = std::move(b);
}

Counts OpenAiFake::counts() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counts_;
}

json OpenAiFake::control_state() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {{"name", options_.name}, {"model", options_.model}, {"behaviour", to_json(behaviour_)},
          {"counts", to_json(counts_)}};
}

void OpenAiFake::control(const api::HttpRequest& req, api::ResponseWriterPtr w) {
  if (req.method == "POST") {
    json update = json::parse(req.body, nullptr, false);
    bool reset = false;
    if (update.is_object() && update.contains("reset_counts")) {
      if (!update["reset_counts"].is_boolean()) {
        return w->respond(error_response(400, "control field 'reset_counts' must be true or false",
                                         "invalid_request_error", "reset_counts"));
      }
      reset = update["reset_counts"].get<bool>();
      update.erase("reset_counts");
    }
    std::lock_guard<std::mutex> lock(mu_);
    Result<Behaviour> b = apply_behaviour(behaviour_, update);
    if (!b.is_ok()) {
      return w->respond(
          error_response(400, b.status().message(), "invalid_request_error", b.status().param()));
    }
    behaviour_ = std::move(*b);
    if (reset) counts_ = Counts{0, 0, 0, 0, 0, 0, counts_.active};
  }
  api::HttpResponse r;
  r.body = control_state().dump();
  w->respond(std::move(r));
}

void OpenAiFake::chat(const api::HttpRequest& req, api::ResponseWriterPtr w) {
  json body = json::parse(req.body, nullptr, false);
  if (!body.is_object()) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      counts_.bad_requests++;
    }
    return w->respond(error_response(400, "the body must be a JSON object", "invalid_request_error"));
  }
  auto x = std::make_shared<Exchange>();
  x->w = std::move(w);
  bool fail = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    x->b = behaviour_;
    counts_.requests++;
    // Drawn for every request, so which ones fail depends only on their order.
    fail = std::uniform_real_distribution<double>(0.0, 1.0)(rng_) < x->b.error_rate;
    if (fail) {
      counts_.errors++;
    } else {
      counts_.active++;
      if (x->b.stall) counts_.stalled++;
    }
  }
  if (fail) {
    api::HttpResponse r = error_response(x->b.error_status,
                                         "injected failure (" + options_.name + ", error_rate " +
                                             std::to_string(x->b.error_rate) + ")",
                                         "server_error");
    r.headers["x-fake-upstream"] = options_.name;
    return x->w->respond(std::move(r));
  }
  x->stream = body.value("stream", false) == true;
  if (auto so = body.find("stream_options"); so != body.end() && so->is_object())
    x->include_usage = so->value("include_usage", false) == true;
  x->n = static_cast<int>(std::clamp<int64_t>(positive_int(body, "n"), 1, 16));
  {
    std::lock_guard<std::mutex> lock(mu_);
    x->id = id_prefix_ + std::to_string(next_id_++);
  }
  x->model = body.contains("model") && body["model"].is_string() ? body["model"].get<std::string>() : options_.model;
  x->created = static_cast<int64_t>(std::time(nullptr));
  x->prompt_tokens = estimate_prompt_tokens(body);
  x->max_tokens = positive_int(body, "max_completion_tokens");
  if (x->max_tokens == 0) x->max_tokens = positive_int(body, "max_tokens");
  if (x->b.stall) return wait_stall(std::move(x));
  begin(std::move(x));
}

bool OpenAiFake::gone(const std::shared_ptr<Exchange>& x) {
  if (!x->w->cancel_token()->cancelled()) return false;
  finish(false);
  return true;
}

void OpenAiFake::finish(bool ok) {
  std::lock_guard<std::mutex> lock(mu_);
  counts_.active--;
  if (ok) {
    counts_.ok++;
  } else {
    counts_.cancelled++;
  }
}

void OpenAiFake::wait_stall(std::shared_ptr<Exchange> x) {
  timer_.schedule_after(std::chrono::milliseconds(20), [this, x] {
    if (gone(x)) return;
    Behaviour now = behaviour();
    if (now.stall) return wait_stall(x);
    x->b = std::move(now);
    begin(x);
  });
}

// Fixes the answer from the behaviour, then waits for the first token.
void OpenAiFake::begin(std::shared_ptr<Exchange> x) {
  int64_t n_tokens = x->b.tokens;
  if (x->max_tokens > 0 && x->max_tokens < n_tokens) {
    n_tokens = x->max_tokens;
    x->finish_reason = "length";
  }
  x->tokens = answer_tokens(x->b.text, static_cast<int32_t>(n_tokens));
  auto delay = std::chrono::milliseconds(x->b.ttft_ms);
  if (!x->stream) delay += std::chrono::milliseconds(x->b.token_ms * static_cast<int64_t>(x->tokens.size() - 1));
  timer_.schedule_after(delay, [this, x] { step(x); });
}

void OpenAiFake::step(std::shared_ptr<Exchange> x) {
  if (gone(x)) return;
  std::map<std::string, std::string> headers = {{"x-fake-upstream", options_.name}};
  if (!x->stream) {
    std::string text;
    for (const std::string& t : x->tokens) text += t;
    json choices = json::array();
    for (int i = 0; i < x->n; ++i) {
      choices.push_back({{"index", i},
                         {"message", {{"role", "assistant"}, {"content", text}}},
                         {"finish_reason", x->finish_reason}});
    }
    api::HttpResponse r;
    r.headers = std::move(headers);
    r.body = json{{"id", x->id},           {"object", "chat.completion"}, {"created", x->created},
                  {"model", x->model},     {"choices", std::move(choices)}, {"usage", x->usage()}}
                 .dump();
    x->w->respond(std::move(r));
    return finish(true);
  }
  if (x->next == 0) {
    x->w->start_stream(200, "text/event-stream", std::move(headers));
    json choices = json::array();
    for (int i = 0; i < x->n; ++i)
      choices.push_back({{"index", i}, {"delta", {{"role", "assistant"}, {"content", ""}}}, {"finish_reason", nullptr}});
    x->w->write(sse(x->chunk(std::move(choices))));
  }
  // One token per step; with no delay between tokens, all of them at once.
  do {
    json choices = json::array();
    for (int i = 0; i < x->n; ++i)
      choices.push_back({{"index", i}, {"delta", {{"content", x->tokens[x->next]}}}, {"finish_reason", nullptr}});
    x->w->write(sse(x->chunk(std::move(choices))));
    x->next++;
  } while (x->b.token_ms == 0 && x->next < x->tokens.size());
  if (x->next < x->tokens.size()) {
    timer_.schedule_after(std::chrono::milliseconds(x->b.token_ms), [this, x] { step(x); });
    return;
  }
  json choices = json::array();
  for (int i = 0; i < x->n; ++i)
    choices.push_back({{"index", i}, {"delta", json::object()}, {"finish_reason", x->finish_reason}});
  x->w->write(sse(x->chunk(std::move(choices))));
  if (x->include_usage) {
    json last = x->chunk(json::array());
    last["usage"] = x->usage();
    x->w->write(sse(last));
  }
  x->w->write("data: [DONE]\n\n");
  x->w->end();
  finish(true);
}

}  // namespace llmpool::fake
