#include "api/routing_routes.h"

#include "api/auth.h"
#include "api/errors.h"
#include "api/request_reader.h"

namespace llmpool::api {

using nlohmann::json;

Result<FeedbackRequest> parse_feedback_request(std::string_view body) {
  ASSIGN_OR_RETURN(json j, parse_body(body));
  FieldReader reader(j);
  FeedbackRequest out;
  ASSIGN_OR_RETURN(out.response_id, reader.required_string("response_id", 256, /*non_empty=*/true));
  ASSIGN_OR_RETURN(FieldReader helpful, reader.required("helpful"));
  ASSIGN_OR_RETURN(out.helpful, helpful.boolean());
  return out;
}

void add_routing_routes(HttpRouter& router, std::shared_ptr<router::RouterService> routing) {
  router.add("POST", "/v1/feedback", [routing](const HttpRequest& req, ResponseWriterPtr w) {
    auto parsed = parse_feedback_request(req.body);
    if (!parsed) return w->respond(error_response(parsed.status()));
    // A tenant rates only its own answers (an admin key rates as its tenant).
    const std::string tenant = req.principal ? req.principal->tenant_name() : std::string();
    auto target = routing->feedback(parsed->response_id, parsed->helpful, tenant);
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
