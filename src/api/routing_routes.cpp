#include "api/routing_routes.h"

#include "api/errors.h"

namespace llmpool::api {

using nlohmann::json;

Result<FeedbackRequest> parse_feedback_request(std::string_view body) {
  json j = json::parse(body.begin(), body.end(), nullptr, false);
  if (j.is_discarded()) return Status::invalid_argument("the request body is not valid JSON", "", "invalid_json");
  if (!j.is_object()) return Status::invalid_argument("the request body must be a JSON object");
  FeedbackRequest out;
  auto id = j.find("response_id");
  if (id == j.end() || !id->is_string() || id->get_ref<const std::string&>().empty() ||
      id->get_ref<const std::string&>().size() > 256)
    return Status::invalid_argument("'response_id' is required: the id of a completion (chatcmpl-...)",
                                    "response_id");
  out.response_id = id->get<std::string>();
  auto helpful = j.find("helpful");
  if (helpful == j.end() || !helpful->is_boolean())
    return Status::invalid_argument("'helpful' is required and must be true or false", "helpful");
  out.helpful = helpful->get<bool>();
  return out;
}

void add_routing_routes(HttpRouter& router, std::shared_ptr<router::RouterService> routing) {
  router.add("POST", "/v1/feedback", [routing](const HttpRequest& req, ResponseWriterPtr w) {
    auto parsed = parse_feedback_request(req.body);
    if (!parsed) return w->respond(error_response(parsed.status()));
    auto target = routing->feedback(parsed->response_id, parsed->helpful);
    if (!target) return w->respond(error_response(target.status()));
    json body = {{"object", "feedback"},
                 {"response_id", parsed->response_id},
                 {"helpful", parsed->helpful},
                 {"model", target->model},
                 {"route", target->route.empty() ? json() : json(target->route)},
                 {"arm", target->arm.empty() ? json() : json(target->arm)}};
    HttpResponse r;
    r.body = dump_json(body);
    w->respond(std::move(r));
  });
  router.add("GET", "/api/routing-metrics", [routing](const HttpRequest&, ResponseWriterPtr w) {
    HttpResponse r;
    r.body = dump_json(routing->metrics_json());
    w->respond(std::move(r));
  });
}

}  // namespace llmpool::api
