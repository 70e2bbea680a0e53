#include "api/openai_routes.h"

#include <chrono>

#include "api/errors.h"
#include "api/openai.h"

namespace llmpool::api {
namespace {

int64_t unix_now() {
  return std::chrono::duration_cast<std::chrono::seconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

HttpResponse json_response(const nlohmann::json& j) {
  HttpResponse r;
  r.body = dump_json(j);
  return r;
}

}  // namespace

void add_openai_routes(HttpRouter& router, std::shared_ptr<const providers::ModelRegistry> registry) {
  const int64_t started = unix_now();

  router.add("GET", "/health", [](const HttpRequest&, Responder respond) {
    respond(json_response({{"status", "ok"}}));
  });

  router.add("GET", "/v1/models", [registry, started](const HttpRequest&, Responder respond) {
    nlohmann::json data = nlohmann::json::array();
    for (const auto& p : registry->all()) data.push_back(model_json(p->info(), started));
    respond(json_response({{"object", "list"}, {"data", data}}));
  });

  router.add("POST", "/v1/chat/completions", [registry](const HttpRequest& req, Responder respond) {
    Result<ChatRequest> parsed = parse_chat_request(req.body);
    if (!parsed) return respond(error_response(parsed.status()));
    providers::ProviderPtr provider = registry->find(parsed->model);
    if (!provider) {
      return respond(error_response(Status::not_found(
          "The model '" + parsed->model + "' does not exist", "model", "model_not_found")));
    }
    std::string model = provider->info().name;
    provider->chat(std::move(parsed).value(), [respond, model](Result<Completion> result) {
      if (!result) return respond(error_response(result.status()));
      respond(json_response(chat_completion_json(new_completion_id("chatcmpl"), model, unix_now(), *result)));
    });
  });
}

}  // namespace llmpool::api
