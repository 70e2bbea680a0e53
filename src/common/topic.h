// TopicNamer (seed 000): the one place that turns a tenant and a domain into
// a queue subject, `llm.<tenant>.<domain>.v1`, and a control subject,
// `ctrl.<tenant>.<what>`. A tenant or domain that is not a safe subject
// token (1-64 of [a-z0-9_-]; domains may hold dots between such tokens, as
// in `infer.requests`) is refused, so no name can reach into another
// tenant's subjects with `.`, `*` or `>`.
//
// Reserved domains: infer.requests, infer.results (the fabric),
// embeddings.ingest (the RAG ingest flow, not built yet).
#pragma once

#include <string>
#include <string_view>

#include "common/status.h"

namespace llmpool {

// The tenant used when tenancy is off.
inline constexpr std::string_view kDefaultTenant = "default";

// True for 1-64 characters of [a-z0-9_-].
inline bool is_subject_token(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

class TopicNamer {
 public:
  // llm.<tenant>.<domain>.v1; InvalidArgument for a bad tenant or domain.
  static Result<std::string> topic(std::string_view tenant, std::string_view domain) {
    if (!is_subject_token(tenant))
      return Status::invalid_argument("tenant is not a subject token (1-64 of [a-z0-9_-])");
    if (!valid_domain(domain))
      return Status::invalid_argument("domain must be dot-separated subject tokens");
    return "llm." + std::string(tenant) + "." + std::string(domain) + ".v1";
  }
  // ctrl.<tenant>.<what>, e.g. control("acme", "workers.scale").
  static Result<std::string> control(std::string_view tenant, std::string_view what) {
    if (!is_subject_token(tenant))
      return Status::invalid_argument("tenant is not a subject token (1-64 of [a-z0-9_-])");
    if (!valid_domain(what))
      return Status::invalid_argument("control name must be dot-separated subject tokens");
    return "ctrl." + std::string(tenant) + "." + std::string(what);
  }

 private:
  static bool valid_domain(std::string_view d) {
    if (d.empty() || d.size() > 128) return false;
    size_t start = 0;
    while (true) {
      size_t dot = d.find('.', start);
      std::string_view part = d.substr(start, dot == std::string_view::npos ? d.npos : dot - start);
      if (!is_subject_token(part)) return false;
      if (dot == std::string_view::npos) return true;
      start = dot + 1;
    }
  }
};

}  // namespace llmpool
