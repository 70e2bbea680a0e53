// The OpenAI Files and Batch APIs (docs/batch.md), registered on an
// HttpRouter over a batch::BatchService:
//   POST   /v1/files                  multipart/form-data: purpose=batch, file
//   GET    /v1/files                  ?purpose, limit (1..10000), after, order (asc|desc)
//   GET    /v1/files/{id}
//   GET    /v1/files/{id}/content     the file's bytes
//   DELETE /v1/files/{id}
//   POST   /v1/batches                {input_file_id, endpoint, completion_window, metadata}
//   GET    /v1/batches                ?after, limit (1..100)
//   GET    /v1/batches/{id}
//   POST   /v1/batches/{id}/cancel
// Every file and batch belongs to the tenant `tenant_of` returns for the
// request ("" without tenancy); a tenant sees only its own, and another's
// id is 404 like a missing one. The service must outlive the router.
// Handlers block only on SQLite (the batch store), never on a model.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "api/router.h"
#include "batch/local_runner.h"
#include "batch/service.h"

namespace llmpool::api {

// The tenant a request runs for: serve passes the authenticated
// principal's; no_tenant ("") when auth is off.
using TenantOf = std::function<std::string(const HttpRequest&)>;
std::string no_tenant(const HttpRequest&);

void add_batch_routes(HttpRouter& router, std::shared_ptr<batch::BatchService> service,
                      TenantOf tenant_of = no_tenant);

// A LocalJobRunner dispatch that runs each job through `router` as a POST
// to the job's endpoint, the way a client's request would go (`router`
// must outlive the runner). The request carries x-request-id = the job id.
// With `principal_for` (auth on), each job runs as the principal it gives
// for the job's tenant (Authenticator::principal_for_tenant).
using PrincipalFor = std::function<std::shared_ptr<const Principal>(const std::string& tenant)>;
batch::LocalJobRunner::Dispatch route_dispatch(const HttpRouter& router, PrincipalFor principal_for = {});

}  // namespace llmpool::api
