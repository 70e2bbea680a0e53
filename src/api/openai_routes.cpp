#include "api/openai_routes.h"

#include <algorithm>
#include <chrono>
#include <map>
#include <mutex>
#include <string_view>
#include <utility>

#include "api/auth.h"
#include "api/errors.h"
#include "api/openai.h"
#include "api/router.h"
#include "common/json.h"
#include "providers/io_loop.h"

namespace llmpool::api {
namespace {

using nlohmann::json;
using Clock = std::chrono::steady_clock;

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

HttpResponse json_response(const json& j) {
  HttpResponse r;
  r.body = dump_json(j);
  return r;
}

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Per-model request metrics, created once per model label (a configured
// name, or obs::kUnknownLabel: see MetricsRegistry::label).
struct RequestMetrics {
  obs::Histogram* ttft;
  obs::Histogram* itl;
  obs::Histogram* duration;
  obs::Histogram* cancel_latency;
  obs::Counter* prompt_tokens;
  obs::Counter* completion_tokens;

  RequestMetrics(obs::MetricsRegistry& r, const std::string& model_label)
      : registry_(r), labels_{{"model", model_label}} {
    ttft = &r.histogram("llmpool_time_to_first_token_seconds", "Time from request to first output token.", labels_);
    itl = &r.histogram("llmpool_inter_token_latency_seconds", "Time between output tokens of one choice.", labels_);
    duration = &r.histogram("llmpool_request_duration_seconds", "Time from request to last byte.", labels_);
    cancel_latency = &r.histogram("llmpool_cancel_latency_seconds",
                                  "Time from a client's disconnect to its sequences being freed.", labels_);
    prompt_tokens = &r.counter("llmpool_prompt_tokens_total", "Prompt tokens processed.", labels_);
    completion_tokens = &r.counter("llmpool_completion_tokens_total", "Tokens generated.", labels_);
  }

  // llmpool_requests_total of this model for an endpoint and status: taken
  // from the registry once per pair, not per request. Thread-safe.
  obs::Counter& requests(const char* endpoint, int status) {
    std::lock_guard<std::mutex> lock(mu_);
    obs::Counter*& slot = requests_[{endpoint, status}];
    if (!slot)
      slot = &registry_.counter("llmpool_requests_total", "Requests answered, by model, endpoint and HTTP status.",
                                {labels_.front(), {"endpoint", endpoint}, {"status", std::to_string(status)}});
    return *slot;
  }

 private:
  obs::MetricsRegistry& registry_;
  obs::Labels labels_;
  std::mutex mu_;
  std::map<std::pair<std::string_view, int>, obs::Counter*> requests_;  // by endpoint and status; guarded by mu_
};

// One generation request in flight: formats deltas as SSE chunks or
// collects the completion, and records latency metrics. Callbacks arrive
// on one thread at a time (the provider's), so no locking is needed.
struct Generation {
  Endpoint endpoint;
  ResponseMeta meta;
  std::map<std::string, std::string> headers;  // x-llmpool-model, x-llmpool-route-reason
  std::string llmpool;                         // the extension field as JSON text; empty: none
  qos::AdmissionGate::Hold hold;               // released when the answer is complete
  router::DirectAttempt direct;                // a request sent straight to a model
  std::shared_ptr<router::RouterService> routing;  // remembers the id for feedback (direct)
  std::string tenant;                              // whose request (feedback is the tenant's own)
  std::shared_ptr<LimitCharge> charge;             // the rate limiter's admission; null: none
  std::string key_id;                              // the credential, for usage
  std::shared_ptr<tenancy::UsageRecorder> usage;   // null: not recorded
  bool stream = false;
  bool include_usage = false;
  bool with_logprobs = false;
  ResponseWriterPtr writer;
  std::shared_ptr<RequestMetrics> metrics;
  Clock::time_point start = Clock::now();
  bool started = false;  // stream headers sent
  bool chunk_sent = false;  // a chunk was written
  std::vector<bool> first_seen;
  std::vector<Clock::time_point> last_token;
  bool any_token = false;
  std::vector<std::pair<std::string, Usage>> member_usage;  // a routed answer's attempts (RouteInfo)

  const char* endpoint_name() const {
    return endpoint == Endpoint::kChat ? "chat.completions" : "completions";
  }

  void on_delta(Delta d) {
    auto now = Clock::now();
    size_t i = static_cast<size_t>(d.index);
    if (i >= first_seen.size()) {
      first_seen.resize(i + 1, false);
      last_token.resize(i + 1, start);
    }
    if (!d.text.empty() || !d.logprobs.empty()) {
      if (!any_token) metrics->ttft->observe(std::chrono::duration<double>(now - start).count());
      else if (first_seen[i]) metrics->itl->observe(std::chrono::duration<double>(now - last_token[i]).count());
      any_token = true;
      last_token[i] = now;
    }
    if (!stream) return;
    start_stream();
    bool first = !first_seen[i];
    first_seen[i] = true;
    std::string event = "data: ";
    // docs/api.md: the llmpool field is on the first chunk.
    append_chunk(event, endpoint, meta, d, first, with_logprobs, chunk_sent ? std::string_view() : llmpool);
    event += "\n\n";
    chunk_sent = true;
    writer->write(std::move(event));
  }

  // Streams a whole completion that arrived without deltas (a routed answer
  // of a gathering strategy, or from a provider that does not stream): per
  // choice one content chunk and one finishing chunk.
  void replay(const Completion& c) {
    for (const Choice& ch : c.choices) {
      Delta d;
      d.index = ch.index;
      d.text = ch.text;
      d.reasoning_content = ch.reasoning_content;
      d.logprobs = ch.logprobs;
      for (size_t i = 0; i < ch.tool_calls.size(); ++i)
        d.tool_calls.push_back(
            {static_cast<int32_t>(i), ch.tool_calls[i].id, ch.tool_calls[i].name, ch.tool_calls[i].arguments});
      on_delta(std::move(d));
      Delta fin;
      fin.index = ch.index;
      fin.finish_reason = ch.finish_reason;
      on_delta(std::move(fin));
    }
  }

  void start_stream() {
    if (started) return;
    auto h = headers;
    h["X-Accel-Buffering"] = "no";
    writer->start_stream(200, "text/event-stream", std::move(h));
    started = true;
  }

  // Which model answers and why: headers and the `llmpool` field.
  void set_route(const router::RouteInfo& info) {
    member_usage = info.member_usage;
    if (!info.model.empty()) headers["x-llmpool-model"] = info.model;
    headers["x-llmpool-route-reason"] = info.reason;
    // {"canary_arm"?, "ensemble", "model", "reason", "route"}: sorted, as the answer's own members.
    llmpool.clear();
    JsonWriter w(llmpool);
    w.begin_object();
    if (!info.arm.empty()) w.key("canary_arm").string(info.arm);
    w.key("ensemble").value(info.ensemble).key("model");
    if (info.model.empty())
      w.null();
    else
      w.string(info.model);
    w.key("reason").string(info.reason).key("route").string(info.route).end_object();
  }

  // The request counts once, under the model that answered; the tokens are
  // each member's (an ensemble's attempts and judge), under its own model,
  // and the rate limiter is charged all of them.
  void record_usage(const Result<Completion>& r) {
    if (!r) {
      if (charge) charge->finish(0);
      return;
    }
    std::vector<std::pair<std::string, Usage>> spent = member_usage;
    if (spent.empty()) spent.emplace_back(meta.model, r->usage);
    int64_t total = 0;
    for (const auto& [model, u] : spent) total += int64_t{u.prompt_tokens} + u.completion_tokens;
    if (charge) charge->finish(total);
    if (!usage || tenant.empty()) return;
    // The request is counted with the answering model's tokens (one add for
    // a direct request), or on its own when no attempt was by that model.
    bool counted = false;
    for (const auto& [model, u] : spent) {
      const int64_t request = !counted && model == meta.model ? 1 : 0;
      counted = counted || request == 1;
      usage->add(tenant, key_id, model, request, u.prompt_tokens, u.completion_tokens);
    }
    if (!counted) usage->add(tenant, key_id, meta.model, 1, 0, 0);
  }

  void respond_error(const Status& status) {
    HttpResponse resp = error_response(status);
    for (const auto& [k, v] : headers) resp.headers[k] = v;
    writer->respond(std::move(resp));
  }

  void on_done(Result<Completion> r) {
    metrics->duration->observe(seconds_since(start));
    const bool all_cancelled = r && !r->choices.empty() &&
                               std::all_of(r->choices.begin(), r->choices.end(), [](const Choice& ch) {
                                 return ch.finish_reason == FinishReason::kCancelled;
                               });
    direct.finish(r.status(), all_cancelled);
    record_usage(r);
    if (r && !all_cancelled && routing && !direct.model().empty()) routing->remember(meta.id, direct.feedback_target());
    hold.release();
    if (!r) {
      metrics->requests(endpoint_name(), http_status_for(r.status().code())).inc();
      if (started) {  // headers are out: the error travels as an event
        writer->write("data: " + dump_json(error_json(r.status())) + "\n\n");
        writer->end();
      } else {
        respond_error(r.status());
      }
      return;
    }
    const Completion& c = *r;
    metrics->prompt_tokens->inc(c.usage.prompt_tokens);
    metrics->completion_tokens->inc(c.usage.completion_tokens);
    // 499: the client closed the request (nginx's convention); nobody reads the answer.
    metrics->requests(endpoint_name(), all_cancelled ? 499 : 200).inc();
    if (all_cancelled) {
      auto at = writer->cancel_token()->cancelled_at();
      if (at != Clock::time_point()) metrics->cancel_latency->observe(seconds_since(at));
      return writer->end();
    }
    if (!stream) {
      // The last use of the route's headers: moved, not copied.
      HttpResponse resp;
      append_completion(resp.body, endpoint, meta, c, with_logprobs, llmpool);
      resp.headers = std::move(headers);
      writer->respond(std::move(resp));
      return;
    }
    if (!chunk_sent) replay(c);
    start_stream();
    if (include_usage) {
      std::string event = "data: ";
      append_usage_chunk(event, endpoint, meta, c.usage);
      event += "\n\n";
      writer->write(std::move(event));
    }
    writer->write("data: [DONE]\n\n");
    writer->end();
  }
};

class OpenAiRoutes : public std::enable_shared_from_this<OpenAiRoutes> {
 public:
  OpenAiRoutes(std::shared_ptr<providers::ModelDirectory> models, obs::MetricsRegistry& metrics,
               std::shared_ptr<router::RouterService> routing, TenancyOptions tenancy)
      : models_(std::move(models)),
        metrics_(metrics),
        routing_(std::move(routing)),
        limiter_(std::move(tenancy.limiter)),
        usage_(std::move(tenancy.usage)) {}

  void generate(Endpoint endpoint, const HttpRequest& req, const ResponseWriterPtr& writer) {
    Result<ApiRequest> parsed = parse_request(req.body, endpoint);
    if (!parsed) return writer->respond(error_response(parsed.status()));
    // Tenancy (api/auth.h): the tenant's models, its priority cap, its rate limits.
    const ModelLookup found = req.principal ? lookup(parsed->generate.model) : ModelLookup{};
    if (Status st = authorize_generation(req.principal.get(), parsed->generate, found.is_model, found.name); !st)
      return writer->respond(error_response(st));
    qos::AdmissionGate::Hold hold;
    if (routing_) {
      auto admitted = routing_->admit();
      if (!admitted) {
        HttpResponse resp = error_response(admitted.status());
        if (admitted.status().code() == StatusCode::kResourceExhausted)
          resp.headers["Retry-After"] = std::to_string(routing_->retry_after_seconds());
        return writer->respond(std::move(resp));
      }
      hold = std::move(admitted).value();
    }
    // After the gate, so that a request the gate refuses costs the tenant nothing.
    auto subject = limiter_ ? limit_subject(req.principal.get()) : std::nullopt;
    if (!subject) return proceed(endpoint, std::move(parsed).value(), std::move(hold), nullptr, req.principal, writer);
    // The admission is asynchronous: with Redis the request waits on the
    // limiter's worker thread (in one round trip with the others waiting then),
    // not on this thread, and comes back to its I/O loop.
    const int64_t reserve = reserve_tokens(parsed->generate, found.context);
    struct Waiting {
      ApiRequest request;
      qos::AdmissionGate::Hold hold;
    };
    auto waiting = std::make_shared<Waiting>(Waiting{std::move(parsed).value(), std::move(hold)});
    auto self = shared_from_this();
    limiter_->admit_async(*subject, reserve, [self, endpoint, waiting, who = req.principal, writer,
                                              loop = current_io_loop()](Result<ratelimit::Decision> decision) {
      // Made here, so that the ticket is given back even if the loop never runs what follows.
      std::shared_ptr<LimitCharge> charge;
      if (decision && decision->admitted) {
        charge = std::make_shared<LimitCharge>(self->limiter_, decision->ticket);
        charge->headers = decision->headers;
      }
      run_on(loop, [self, endpoint, waiting, who, writer, decision = std::move(decision), charge] {
        within_error_boundary(writer, "generation after admission", [&] {
          if (!decision) return writer->respond(error_response(decision.status()));
          if (!decision->admitted) return writer->respond(rate_limited_response(*decision));
          self->proceed(endpoint, std::move(waiting->request), std::move(waiting->hold), charge, who, writer);
        });
      });
    });
  }

  // After admission: through the router, or straight to the named model.
  void proceed(Endpoint endpoint, ApiRequest parsed, qos::AdmissionGate::Hold hold, std::shared_ptr<LimitCharge> charge,
               const std::shared_ptr<const Principal>& who, const ResponseWriterPtr& writer) {
    if (routing_) {
      if (routing_->routes(parsed.generate.model, parsed.hints))
        return route(endpoint, std::move(parsed), std::move(hold), std::move(charge), who.get(), writer);
      routing_->regulate_direct(parsed.generate, parsed.hints);
    }
    std::string model = parsed.generate.model;
    auto self = shared_from_this();
    auto request = std::make_shared<ApiRequest>(std::move(parsed));
    auto held = std::make_shared<qos::AdmissionGate::Hold>(std::move(hold));
    models_->acquire(model, [self, endpoint, request, held, charge, who, writer](Result<providers::ProviderPtr> p) {
      if (!p) return writer->respond(error_response(p.status()));
      self->start(endpoint, std::move(*request), *p, std::move(*held), charge, who.get(), writer);
    });
  }

  // Through the router. A FASTEST run streams (when asked) the deltas of
  // the attempt that produced output first: the SSE headers go out with
  // its first delta, so they name the model that answers. The gathering
  // strategies, and providers that do not stream, answer whole: that is
  // streamed as one content chunk and one finishing chunk per choice.
  void route(Endpoint endpoint, ApiRequest parsed, qos::AdmissionGate::Hold hold, std::shared_ptr<LimitCharge> charge,
             const Principal* who, const ResponseWriterPtr& writer) {
    auto g = new_generation(endpoint, parsed, parsed.generate.model, writer, std::move(charge), who);
    g->hold = std::move(hold);
    router::RouteRequest rr{std::move(parsed.generate), std::move(parsed.hints), g->meta.id, {}, {}};
    auto self = shared_from_this();
    if (g->stream) {
      // The router calls these one at a time, before its done (RouteRequest).
      rr.on_stream_start = [self, g](const router::RouteInfo& info) {
        g->meta.model = info.model;
        g->metrics = self->metrics_for(info.model);  // TTFT and ITL count for the model that answers
        g->set_route(info);
      };
      rr.on_delta = [g](Delta d) { g->on_delta(std::move(d)); };
    }
    routing_->route(std::move(rr), writer->cancel_token(), [self, g](router::RouteOutcome o) {
      if (!o.info.model.empty()) g->meta.model = o.info.model;
      g->metrics = self->metrics_for(g->meta.model);
      g->set_route(o.info);
      g->on_done(std::move(o.completion));  // ends the stream, or streams a whole answer (see replay)
    });
  }

  std::shared_ptr<Generation> new_generation(Endpoint endpoint, const ApiRequest& parsed, const std::string& model,
                                             const ResponseWriterPtr& writer, std::shared_ptr<LimitCharge> charge,
                                             const Principal* who) {
    auto g = std::make_shared<Generation>();
    g->tenant = parsed.generate.tenant;
    if (who) g->key_id = who->key_id;
    g->usage = usage_;
    if (charge) add_rate_headers(charge->headers, g->headers);
    g->charge = std::move(charge);
    g->endpoint = endpoint;
    g->meta = {new_completion_id(endpoint == Endpoint::kChat ? "chatcmpl" : "cmpl"), model, unix_now()};
    g->stream = parsed.stream;
    g->include_usage = parsed.include_usage;
    g->with_logprobs = parsed.generate.sampling.top_logprobs >= 0;
    g->writer = writer;
    g->metrics = metrics_for(model);
    g->routing = routing_;
    return g;
  }

  void start(Endpoint endpoint, ApiRequest parsed, const providers::ProviderPtr& provider,
             qos::AdmissionGate::Hold hold, std::shared_ptr<LimitCharge> charge, const Principal* who,
             const ResponseWriterPtr& writer) {
    auto g = new_generation(endpoint, parsed, provider->info().name, writer, std::move(charge), who);
    g->hold = std::move(hold);
    if (routing_) {
      g->direct = routing_->start_direct(provider->info().name, parsed.generate.tenant);
      g->set_route({provider->info().name, provider->info().name, "requested by name", "", nullptr, {}});
    }
    GenerateCallbacks cb;
    // Deltas only for a stream, as through the router: without on_delta a
    // provider may deliver the answer whole (a queue model's job is then
    // redelivered to another worker when its worker dies, docs/fabric.md).
    if (g->stream) cb.on_delta = [g](Delta d) { g->on_delta(std::move(d)); };
    cb.on_done = [g](Result<Completion> r) { g->on_done(std::move(r)); };
    provider->generate(std::move(parsed.generate), writer->cancel_token(), std::move(cb));
  }

  void embeddings(const HttpRequest& req, const ResponseWriterPtr& writer) {
    auto parsed = parse_embeddings_request(req.body);
    if (!parsed) return writer->respond(error_response(parsed.status()));
    if (Status st = check_model(req.principal.get(), parsed->model); !st) return writer->respond(error_response(st));
    auto request = std::make_shared<EmbeddingsRequest>(std::move(parsed).value());
    auto self = shared_from_this();
    models_->acquire(request->model, [self, request, writer](Result<providers::ProviderPtr> p) {
      if (!p) return writer->respond(error_response(p.status()));
      std::string model = (*p)->info().name;
      auto start = Clock::now();
      (*p)->embed(std::move(request->inputs), [self, request, writer, model, start](Result<Embeddings> e) {
        self->metrics_for(model)->duration->observe(seconds_since(start));
        if (e && request->dimensions && !e->vectors.empty() &&
            static_cast<size_t>(*request->dimensions) != e->vectors.front().size())
          e = Status::invalid_argument("'dimensions' must be " + std::to_string(e->vectors.front().size()) +
                                           " for model '" + model + "' (it cannot be reduced)",
                                       "dimensions");
        self->metrics_for(model)->requests("embeddings", e ? 200 : http_status_for(e.status().code())).inc();
        if (!e) return writer->respond(error_response(e.status()));
        self->metrics_for(model)->prompt_tokens->inc(e->prompt_tokens);
        writer->respond(json_response(embeddings_json(model, *e, request->base64)));
      });
    });
  }

  void tokenize(const HttpRequest& req, const ResponseWriterPtr& writer) {
    auto parsed = parse_tokenize_request(req.body);
    if (!parsed) return writer->respond(error_response(parsed.status()));
    std::string content = std::move(parsed->content);
    bool add_special = parsed->add_special;
    with_model(req.principal.get(), parsed->model, writer, [content, add_special, writer](const providers::ProviderPtr& p) {
      auto tokens = p->tokenize(content, add_special);
      if (!tokens) return writer->respond(error_response(tokens.status()));
      writer->respond(json_response({{"tokens", *tokens}}));
    });
  }

  void detokenize(const HttpRequest& req, const ResponseWriterPtr& writer) {
    auto parsed = parse_detokenize_request(req.body);
    if (!parsed) return writer->respond(error_response(parsed.status()));
    std::vector<int32_t> tokens = std::move(parsed->tokens);
    with_model(req.principal.get(), parsed->model, writer, [tokens, writer](const providers::ProviderPtr& p) {
      auto text = p->detokenize(tokens);
      if (!text) return writer->respond(error_response(text.status()));
      writer->respond(json_response({{"content", *text}}));
    });
  }

  void list_models(const Principal* who, const ResponseWriterPtr& writer) {
    json data = json::array();
    for (const auto& e : models_->list()) {
      if (who && !who->allows_model(e.info.name)) continue;  // a tenant sees its own models only
      json m = model_json(e.info, started_);
      m["state"] = e.state;
      data.push_back(std::move(m));
    }
    writer->respond(json_response({{"object", "list"}, {"data", data}}));
  }

 private:
  // `model` may be what the client asked for: one set per label, so the
  // map and the registry stay as large as the configuration.
  std::shared_ptr<RequestMetrics> metrics_for(const std::string& model) {
    std::string label = metrics_.label(model);
    std::lock_guard<std::mutex> lock(mu_);
    auto& m = request_metrics_[label];
    if (!m) m = std::make_shared<RequestMetrics>(metrics_, label);
    return m;
  }

  // /tokenize and /detokenize: `model` is optional when one model is served.
  template <typename F>
  void with_model(const Principal* who, std::string name, const ResponseWriterPtr& writer, F&& f) {
    if (name.empty()) {
      auto all = models_->list();
      if (all.size() != 1)
        return writer->respond(
            error_response(Status::invalid_argument("'model' is required when several models are served", "model")));
      name = all.front().info.name;
    }
    if (Status st = check_model(who, name); !st) return writer->respond(error_response(st));
    models_->acquire(name, [writer, f = std::forward<F>(f)](Result<providers::ProviderPtr> p) {
      if (!p) return writer->respond(error_response(p.status()));
      f(*p);
    });
  }

  std::shared_ptr<providers::ModelDirectory> models_;
  obs::MetricsRegistry& metrics_;
  // A configured model by name or alias (is_model false when `name` is
  // none: a route group, "auto" or unknown), and the largest context a
  // request for `name` may use (the model's, else the largest configured).
  struct ModelLookup {
    bool is_model = false;
    std::string name;  // the model's name when is_model
    int64_t context = 0;
  };
  ModelLookup lookup(const std::string& name) const {
    ModelLookup out;
    int64_t largest = 0;
    for (const auto& e : models_->list()) {
      largest = std::max<int64_t>(largest, e.info.context);
      if (!out.is_model && (e.info.name == name || std::find(e.info.aliases.begin(), e.info.aliases.end(), name) !=
                                                       e.info.aliases.end())) {
        out = {true, e.info.name, e.info.context};
      }
    }
    if (!out.is_model) out.context = largest;
    return out;
  }

  // Whether `who` may use the model `name` (not a route group).
  Status check_model(const Principal* who, const std::string& name) const {
    if (!who || who->admin) return Status::ok();
    ModelLookup found = lookup(name);
    if (found.is_model && (who->allows_model(found.name) || who->allows_model(name))) return Status::ok();
    return model_not_found(name);
  }

  // What the limiter reserves at admission: the prompt's size in tokens,
  // estimated high (a token per 3 bytes, and some per message for the
  // template), plus every choice's max_tokens or, without one, the context.
  static int64_t reserve_tokens(const GenerateRequest& g, int64_t context) {
    int64_t bytes = g.prompt ? static_cast<int64_t>(g.prompt->size()) : 0;
    for (const auto& m : g.messages) bytes += static_cast<int64_t>(m.content.size()) + 16;
    int64_t per_choice = g.sampling.max_tokens ? *g.sampling.max_tokens : (context > 0 ? context : 4096);
    return (bytes + 2) / 3 + std::max<int64_t>(1, g.n) * std::max<int64_t>(0, per_choice);
  }

  std::shared_ptr<router::RouterService> routing_;  // null: no routing, no admission limit
  std::shared_ptr<ratelimit::Limiter> limiter_;     // null: no rate limits
  std::shared_ptr<tenancy::UsageRecorder> usage_;   // null: usage not recorded
  std::mutex mu_;
  std::map<std::string, std::shared_ptr<RequestMetrics>> request_metrics_;  // by label; guarded by mu_
  int64_t started_ = unix_now();
};

// Scrape-time figures from every provider.
void collect_provider_stats(const providers::ModelDirectory& models, std::string& out) {
  struct Field {
    const char* name;
    const char* help;
    const char* type;
    double (*get)(const providers::ProviderStats&);
  };
  static const Field kFields[] = {
      {"llmpool_queue_depth", "Requests waiting for a sequence.", "gauge",
       [](const providers::ProviderStats& s) { return double(s.queued); }},
      {"llmpool_active_sequences", "Sequences prefilling or generating.", "gauge",
       [](const providers::ProviderStats& s) { return double(s.active_sequences); }},
      {"llmpool_parallel_sequences", "Sequence capacity.", "gauge",
       [](const providers::ProviderStats& s) { return double(s.parallel); }},
      {"llmpool_engine_prompt_tokens_total", "Prompt tokens admitted by the engine.", "counter",
       [](const providers::ProviderStats& s) { return double(s.prompt_tokens); }},
      {"llmpool_prefix_cache_hit_tokens_total", "Prompt tokens served from the prefix cache.", "counter",
       [](const providers::ProviderStats& s) { return double(s.cached_prompt_tokens); }},
      {"llmpool_prefix_cache_hit_ratio", "Share of prompt tokens served from the prefix cache.", "gauge",
       [](const providers::ProviderStats& s) {
         return s.prompt_tokens ? double(s.cached_prompt_tokens) / double(s.prompt_tokens) : 0.0;
       }},
      {"llmpool_engine_generated_tokens_total", "Tokens generated by the engine.", "counter",
       [](const providers::ProviderStats& s) { return double(s.generated_tokens); }},
      {"llmpool_kv_cache_used_cells", "KV cache cells in use (tokens held).", "gauge",
       [](const providers::ProviderStats& s) { return double(s.kv_cells_used); }},
      {"llmpool_kv_cache_total_cells", "KV cache size in cells.", "gauge",
       [](const providers::ProviderStats& s) { return double(s.kv_cells_total); }},
      {"llmpool_engine_aborted_steps_total", "Engine steps aborted (and undone) for a cancelled or expired request.",
       "counter", [](const providers::ProviderStats& s) { return double(s.aborted_steps); }},
      {"llmpool_prompt_cache_saved_total", "Sequences copied to the host prompt cache before being overwritten.",
       "counter", [](const providers::ProviderStats& s) { return double(s.prompts_saved); }},
      {"llmpool_prompt_cache_restored_total", "Host prompt cache copies restored for a request.", "counter",
       [](const providers::ProviderStats& s) { return double(s.prompts_restored); }},
      {"llmpool_prompt_cache_used_bytes", "Host memory the prompt cache's copies hold.", "gauge",
       [](const providers::ProviderStats& s) { return double(s.prompt_cache_used_bytes); }},
      {"llmpool_model_memory_bytes",
       "Memory the pool counts for the model (local: weights, KV cache, compute buffers, prompt cache budget).", "gauge",
       [](const providers::ProviderStats& s) { return double(s.memory_bytes); }},
      {"llmpool_model_weights_bytes", "Model weights in memory (local models).", "gauge",
       [](const providers::ProviderStats& s) { return double(s.weights_bytes); }},
      {"llmpool_model_kv_cache_bytes", "KV cache of all sequences (local models).", "gauge",
       [](const providers::ProviderStats& s) { return double(s.kv_cache_bytes); }},
      {"llmpool_model_compute_bytes", "Compute buffers (local models).", "gauge",
       [](const providers::ProviderStats& s) { return double(s.compute_bytes); }},
      {"llmpool_model_prompt_cache_bytes", "The host prompt cache's budget (local models).", "gauge",
       [](const providers::ProviderStats& s) { return double(s.prompt_cache_bytes); }},
      // Speculative decoding (docs/architecture.md).
      {"llmpool_speculative_drafted_total", "Draft tokens verified by the target model.", "counter",
       [](const providers::ProviderStats& s) { return double(s.speculative_drafted); }},
      {"llmpool_speculative_accepted_total", "Draft tokens the target model accepted.", "counter",
       [](const providers::ProviderStats& s) { return double(s.speculative_accepted); }},
      {"llmpool_speculative_acceptance_rate", "Share of verified draft tokens accepted.", "gauge",
       [](const providers::ProviderStats& s) {
         return s.speculative_drafted ? double(s.speculative_accepted) / double(s.speculative_drafted) : 0.0;
       }},
      {"llmpool_speculative_speedup_estimate",
       "Measured tokens/s of decode steps speculating over steps not speculating, drafting included (NaN: not "
       "measured).",
       "gauge", [](const providers::ProviderStats& s) { return s.speculative_speedup; }},
  };
  std::vector<std::pair<std::string, providers::ProviderStats>> stats;
  for (const auto& e : models.list()) stats.emplace_back(e.info.name, e.stats);
  for (const auto& f : kFields) {
    std::vector<std::pair<obs::Labels, double>> samples;
    for (const auto& [name, s] : stats) samples.push_back({{{"model", name}}, f.get(s)});
    obs::append_family(out, f.name, f.help, f.type, samples);
  }
  // The speculation gate's steps, by whether it let them speculate.
  std::vector<std::pair<obs::Labels, double>> steps;
  for (const auto& [name, s] : stats) {
    steps.push_back({{{"model", name}, {"mode", "on"}}, double(s.speculative_steps_on)});
    steps.push_back({{{"model", name}, {"mode", "off"}}, double(s.speculative_steps_off)});
  }
  obs::append_family(out, "llmpool_speculative_steps_total",
                     "Decode steps of speculating sequences, by whether the speculation gate let them speculate.",
                     "counter", steps);
}

}  // namespace

void add_openai_routes(HttpRouter& router, std::shared_ptr<providers::ModelDirectory> models,
                       obs::MetricsRegistry& metrics, std::shared_ptr<router::RouterService> routing,
                       TenancyOptions tenancy) {
  auto routes = std::make_shared<OpenAiRoutes>(models, metrics, routing, std::move(tenancy));
  metrics.add_collector([models](std::string& out) { collect_provider_stats(*models, out); });

  router.add("GET", "/health", [](const HttpRequest&, ResponseWriterPtr w) {
    w->respond(json_response({{"status", "ok"}}));
  });
  router.add("GET", "/v1/models",
             [routes](const HttpRequest& r, ResponseWriterPtr w) { routes->list_models(r.principal.get(), w); });
  router.add("POST", "/v1/chat/completions", [routes](const HttpRequest& r, ResponseWriterPtr w) {
    routes->generate(Endpoint::kChat, r, w);
  });
  router.add("POST", "/v1/completions", [routes](const HttpRequest& r, ResponseWriterPtr w) {
    routes->generate(Endpoint::kCompletions, r, w);
  });
  router.add("POST", "/v1/embeddings", [routes](const HttpRequest& r, ResponseWriterPtr w) { routes->embeddings(r, w); });
  router.add("POST", "/tokenize", [routes](const HttpRequest& r, ResponseWriterPtr w) { routes->tokenize(r, w); });
  router.add("POST", "/detokenize", [routes](const HttpRequest& r, ResponseWriterPtr w) { routes->detokenize(r, w); });
  router.add("GET", "/metrics", [&metrics](const HttpRequest&, ResponseWriterPtr w) {
    HttpResponse r;
    r.content_type = "text/plain; version=0.0.4; charset=utf-8";
    r.body = metrics.render();
    w->respond(std::move(r));
  });
}

}  // namespace llmpool::api
