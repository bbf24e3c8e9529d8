// The OpenAI wire format: request JSON → validated engine Requests, and engine outputs →
// response JSON in OpenAI's exact shapes (text_completion, chat.completion and their
// streaming chunks). No HTTP here; the routes live in http_server.cpp.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "engine/request.h"
#include "tokenizer/tokenizer.h"

namespace arbor {

class ChatTemplate;

enum class ApiKind { kCompletion, kChat };

struct ModelLimits {
  int max_model_len = 0;  // prompt + completion tokens
  int vocab_size = 0;
};

// One HTTP request, validated. Each prompt becomes one engine Request (with `base`'s
// parameters and n); choice index = prompt index * n + sequence index.
struct ApiRequest {
  ApiKind kind = ApiKind::kCompletion;
  std::string model;  // as sent; empty when absent
  std::vector<std::vector<int32_t>> prompts;
  std::vector<std::string> prompt_texts;  // for echo
  Request base;                           // sampling, max_tokens, stop, n, ignore_eos
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool echo = false;           // completions only
  // -1: no logprobs; else the number of top alternatives (completions `logprobs`, chat
  // `top_logprobs` with `logprobs: true`).
  int logprobs = -1;
  std::string user;
  int num_choices() const { return int(prompts.size()) * base.n; }
};

// Parses a request body; throws ApiError (invalid_json) for malformed JSON or a non-object.
nlohmann::json parse_json_body(const std::string& body);

// Validate and tokenize. Throw ApiError (400, naming the parameter) for wrong types, values
// out of range and missing fields, and context_length_exceeded when a prompt plus max_tokens
// does not fit. Unknown fields are ignored.
ApiRequest parse_completion_request(const nlohmann::json& body, const Tokenizer& tokenizer,
                                    const ModelLimits& limits);
// `chat` may be null (the model has no template): chat requests then fail with a 400.
ApiRequest parse_chat_request(const nlohmann::json& body, const Tokenizer& tokenizer,
                              const ModelLimits& limits, const ChatTemplate* chat);
// The prompt text of a chat conversation (messages validated as in parse_chat_request).
std::string render_chat(const nlohmann::json& messages, const ChatTemplate* chat,
                        bool add_generation_prompt);

// ---- responses ----

struct TokenLogprob {
  std::string token;
  float logprob = 0;
  std::vector<std::pair<std::string, float>> top;
};

// The accumulated state of one choice.
struct ChoiceResult {
  std::string text;
  std::vector<TokenLogprob> logprobs;
  std::vector<size_t> text_offsets;  // completions: offset of each token's text
  std::optional<FinishReason> finish;
  std::string error;
  int output_tokens = 0;
};

struct Usage {
  int prompt_tokens = 0;
  int completion_tokens = 0;
  int cached_tokens = 0;
};

// A token's text as OpenAI's logprobs show it (SentencePiece's ▁ as a space).
std::string token_text(const Tokenizer& tokenizer, int32_t id);
TokenLogprob make_token_logprob(const Tokenizer& tokenizer, const RequestOutput& out);

// "cmpl-…" / "chatcmpl-…" with 24 random hex digits.
std::string new_response_id(ApiKind kind);
nlohmann::json usage_json(const Usage& usage);

// A whole non-streaming response.
nlohmann::json completion_response(ApiKind kind, const std::string& id, int64_t created,
                                   const std::string& model,
                                   const std::vector<ChoiceResult>& choices, bool with_logprobs,
                                   const Usage& usage);

// One streaming chunk for one choice. For chat, `role` adds the assistant role to the delta
// (the choice's first chunk); text may be empty; logprobs may be null.
nlohmann::json stream_chunk(ApiKind kind, const std::string& id, int64_t created,
                            const std::string& model, int index, const std::string& text, bool role,
                            const std::vector<TokenLogprob>* logprobs,
                            const std::vector<size_t>* text_offsets,
                            std::optional<FinishReason> finish, bool usage_null);
// The final chunk with empty choices and the usage (stream_options.include_usage).
nlohmann::json usage_chunk(ApiKind kind, const std::string& id, int64_t created,
                           const std::string& model, const Usage& usage);

}  // namespace arbor
