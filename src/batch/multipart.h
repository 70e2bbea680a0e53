// A strict, bounded multipart/form-data parser (RFC 7578 over RFC 2046) for
// the Files API upload. It reads a body already bounded by the HTTP server
// (server.max_body_bytes) and never copies part contents: every view points
// into the body the caller keeps alive.
//
// Strict means: the body starts with the first delimiter (no preamble), each
// part has a Content-Disposition of form-data with a name, header lines end
// in CRLF, the close delimiter "--boundary--" is present (anything after it,
// the epilogue, is ignored as RFC 2046 says). Every failure is
// InvalidArgument naming what was wrong; nothing throws.
//
// Pure functions; thread-safe.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace llmpool::batch {

struct MultipartLimits {
  size_t max_parts = 16;            // parts in one body
  size_t max_header_bytes = 8192;   // the header block of one part
  size_t max_part_bytes = 0;        // one part's content; 0: only the body's size bounds it
};

struct MultipartPart {
  std::string name;                     // Content-Disposition name
  std::optional<std::string> filename;  // Content-Disposition filename, when given
  std::string content_type;             // the part's Content-Type, "" when absent
  std::string_view data;                // the content, inside the parsed body
};

// The boundary parameter of a `multipart/form-data` Content-Type value
// (quoted or not, 1 to 70 characters of RFC 2046's bchars). InvalidArgument
// when the type is another one or the boundary is missing or malformed.
Result<std::string> multipart_boundary(std::string_view content_type);

// The parts of `body`, in order.
Result<std::vector<MultipartPart>> parse_multipart(std::string_view body, std::string_view boundary,
                                                   const MultipartLimits& limits = {});

}  // namespace llmpool::batch
