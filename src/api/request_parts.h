// The parts of a /v1/chat/completions or /v1/completions body, one reader
// each; parse_request (api/openai.cpp) runs them in turn. Each reads its
// fields through a FieldReader on the body, so every error names its JSON
// path, and leaves fields it does not know alone (OpenAI clients send many).
// Pure functions; thread-safe.
#pragma once

#include "api/openai.h"
#include "api/request_reader.h"

namespace llmpool::api {

// `messages` (chat): roles, content (a string, null or text parts),
// assistant tool_calls, tool_call_id, reasoning_content.
Status read_messages(const FieldReader& body, std::vector<ChatMessage>* out);

// `tools`, `tool_choice` and `parallel_tool_calls` (chat). Tool parameter
// schemas are checked against engine::kSchemaLimits here, up front.
Status read_tools(const FieldReader& body, GenerateRequest* req);

// `prompt` (completions): one string, or an array holding one string.
Status read_prompt(const FieldReader& body, GenerateRequest* req);

// Sampling numbers, max_tokens, seed, n, priority, thinking_budget,
// ignore_eos and logit_bias.
Status read_sampling(const FieldReader& body, GenerateRequest* req);

// `response_format` (its schema checked against engine::kSchemaLimits) and
// `logprobs`/`top_logprobs` (chat: a boolean plus a count; completions: a count).
Status read_output_format(const FieldReader& body, Endpoint endpoint, SamplingParams* s);

// `stop`: a string or up to kMaxStopStrings strings.
Status read_stop(const FieldReader& body, SamplingParams* s);

// `stream` and `stream_options.include_usage`.
Status read_stream(const FieldReader& body, ApiRequest* out);

// For the router: `user`, `reasoning_effort`, whether `temperature` was
// given, and the extension `ensemble: {strategy, k, judge}`.
Status read_route_hints(const FieldReader& body, router::RouteHints* h);

}  // namespace llmpool::api
