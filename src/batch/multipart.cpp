#include "batch/multipart.h"

#include <algorithm>
#include <functional>

#include "common/text.h"

namespace llmpool::batch {
namespace {

Status bad(std::string msg) { return Status::invalid_argument("multipart body: " + std::move(msg), "file"); }

char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// RFC 2046 bchars (without the final space rule: a boundary never ends in one).
bool is_bchar(char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return std::string_view("'()+_,-./:=? ").find(c) != std::string_view::npos;
}

bool is_token_char(char c) {
  if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) return false;
  return std::string_view("()<>@,;:\\\"/[]?={}").find(c) == std::string_view::npos;
}

struct Param {
  std::string name;  // lower-cased
  std::string value;
};

// `; name=value; name="quoted"` after a media type or disposition type.
// Returns the parameters, or an error for a malformed list.
Result<std::vector<Param>> parse_params(std::string_view s, const char* what) {
  std::vector<Param> out;
  size_t i = 0;
  auto skip_ws = [&] {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t')) ++i;
  };
  while (true) {
    skip_ws();
    if (i == s.size()) return out;
    if (s[i] != ';') return bad(std::string("malformed ") + what + " parameters");
    ++i;
    skip_ws();
    if (i == s.size()) return out;  // a trailing ';' is harmless
    size_t start = i;
    while (i < s.size() && is_token_char(s[i])) ++i;
    if (i == start || i == s.size() || s[i] != '=') return bad(std::string("malformed ") + what + " parameters");
    Param p;
    for (char c : s.substr(start, i - start)) p.name += lower(c);
    ++i;
    if (i < s.size() && s[i] == '"') {
      ++i;
      bool closed = false;
      while (i < s.size()) {
        char c = s[i++];
        if (c == '"') {
          closed = true;
          break;
        }
        if (c == '\\') {
          if (i == s.size()) break;
          c = s[i++];
        }
        if (c == '\r' || c == '\n' || c == '\0') return bad(std::string("a control character in ") + what);
        p.value += c;
      }
      if (!closed) return bad(std::string("an unterminated quoted string in ") + what);
    } else {
      start = i;
      while (i < s.size() && is_token_char(s[i])) ++i;
      if (i == start) return bad(std::string("an empty parameter value in ") + what);
      p.value = std::string(s.substr(start, i - start));
    }
    if (std::any_of(out.begin(), out.end(), [&](const Param& q) { return q.name == p.name; }))
      return bad(std::string("the parameter ") + p.name + " appears twice in " + what);
    out.push_back(std::move(p));
  }
}

// Splits "type; params" at the first ';'.
std::pair<std::string_view, std::string_view> split_type(std::string_view value) {
  size_t semi = value.find(';');
  if (semi == std::string_view::npos) return {trim(value), {}};
  return {trim(value.substr(0, semi)), value.substr(semi)};
}

// The header block of one part: CRLF-separated "Name: value" lines.
Result<MultipartPart> parse_part_headers(std::string_view block) {
  MultipartPart part;
  bool disposition = false;
  bool type_seen = false;
  while (!block.empty()) {
    size_t eol = block.find("\r\n");
    std::string_view line = block.substr(0, eol);
    block = eol == std::string_view::npos ? std::string_view() : block.substr(eol + 2);
    if (line.find('\n') != std::string_view::npos || line.find('\r') != std::string_view::npos)
      return bad("a part header line does not end in CRLF");
    if (line.find('\0') != std::string_view::npos) return bad("a NUL byte in a part header");
    size_t colon = line.find(':');
    if (colon == std::string_view::npos || colon == 0) return bad("a part header line without a name");
    std::string_view name = line.substr(0, colon);
    if (!std::all_of(name.begin(), name.end(), is_token_char)) return bad("a malformed part header name");
    std::string_view value = trim(line.substr(colon + 1));
    if (iequals(name, "content-disposition")) {
      if (disposition) return bad("a part has two Content-Disposition headers");
      disposition = true;
      auto [type, params_text] = split_type(value);
      if (!iequals(type, "form-data")) return bad("a part's Content-Disposition is not form-data");
      ASSIGN_OR_RETURN(std::vector<Param> params, parse_params(params_text, "Content-Disposition"));
      bool named = false;
      for (auto& p : params) {
        if (p.name == "name") {
          part.name = std::move(p.value);
          named = true;
        } else if (p.name == "filename") {
          part.filename = std::move(p.value);
        }
      }
      if (!named || part.name.empty()) return bad("a part's Content-Disposition has no name");
    } else if (iequals(name, "content-type")) {
      if (type_seen) return bad("a part has two Content-Type headers");
      type_seen = true;
      part.content_type = std::string(value);
    }
    // Other headers (Content-Transfer-Encoding is deprecated by RFC 7578) are ignored.
  }
  if (!disposition) return bad("a part has no Content-Disposition header");
  return part;
}

}  // namespace

Result<std::string> multipart_boundary(std::string_view content_type) {
  auto [type, params_text] = split_type(content_type);
  if (!iequals(type, "multipart/form-data"))
    return Status::invalid_argument("the upload must be multipart/form-data", "file");
  ASSIGN_OR_RETURN(std::vector<Param> params, parse_params(params_text, "Content-Type"));
  for (const auto& p : params) {
    if (p.name != "boundary") continue;
    const std::string& b = p.value;
    if (b.empty() || b.size() > 70 || b.back() == ' ' || !std::all_of(b.begin(), b.end(), is_bchar))
      return bad("the boundary must be 1 to 70 characters of RFC 2046's set");
    return b;
  }
  return bad("the Content-Type has no boundary");
}

Result<std::vector<MultipartPart>> parse_multipart(std::string_view body, std::string_view boundary,
                                                   const MultipartLimits& limits) {
  if (boundary.empty()) return bad("empty boundary");
  const std::string dash = "--" + std::string(boundary);
  const std::string delimiter = "\r\n" + dash;
  const std::boyer_moore_horspool_searcher search(delimiter.begin(), delimiter.end());

  if (body.substr(0, dash.size()) != dash) return bad("the body does not start with the boundary");
  size_t pos = dash.size();
  std::vector<MultipartPart> parts;
  while (true) {
    // After a delimiter: "--" closes, CRLF opens the next part.
    if (body.substr(pos, 2) == "--") return parts;  // the epilogue, if any, is ignored
    if (body.substr(pos, 2) != "\r\n") return bad("a boundary is not followed by CRLF or --");
    pos += 2;
    if (parts.size() == limits.max_parts) return bad("more than " + std::to_string(limits.max_parts) + " parts");

    // Headers end at the first empty line; the block may be empty.
    std::string_view rest = body.substr(pos);
    std::string_view block;
    if (rest.substr(0, 2) == "\r\n") {
      pos += 2;
    } else {
      size_t end = rest.substr(0, limits.max_header_bytes + 4).find("\r\n\r\n");
      if (end == std::string_view::npos) {
        if (rest.size() > limits.max_header_bytes) return bad("a part's headers are larger than " +
                                                              std::to_string(limits.max_header_bytes) + " bytes");
        return bad("the body ends inside a part's headers");
      }
      if (end > limits.max_header_bytes)
        return bad("a part's headers are larger than " + std::to_string(limits.max_header_bytes) + " bytes");
      block = rest.substr(0, end);
      pos += end + 4;
    }
    ASSIGN_OR_RETURN(MultipartPart part, parse_part_headers(block));

    auto it = std::search(body.begin() + static_cast<std::ptrdiff_t>(pos), body.end(), search);
    if (it == body.end()) return bad("the body ends before the closing boundary");
    size_t end = static_cast<size_t>(it - body.begin());
    part.data = body.substr(pos, end - pos);
    if (limits.max_part_bytes && part.data.size() > limits.max_part_bytes)
      return bad("the part '" + cut_utf8(part.name, 64) + "' is larger than " + std::to_string(limits.max_part_bytes) + " bytes");
    parts.push_back(std::move(part));
    pos = end + delimiter.size();
  }
}

}  // namespace llmpool::batch
