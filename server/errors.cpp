#include "server/errors.h"

#include <utility>

namespace arbor {

ApiError::ApiError(int status, std::string type, std::string message, std::string param,
                   std::string code)
    : std::runtime_error(std::move(message)),
      status_(status),
      type_(std::move(type)),
      param_(std::move(param)),
      code_(std::move(code)) {}

nlohmann::json ApiError::to_json() const {
  auto or_null = [](const std::string& s) {
    return s.empty() ? nlohmann::json() : nlohmann::json(s);
  };
  return {{"error",
           {{"message", what()},
            {"type", type_},
            {"param", or_null(param_)},
            {"code", or_null(code_)}}}};
}

ApiError invalid_param(const std::string& param, const std::string& message) {
  return ApiError(400, "invalid_request_error", message, param);
}

ApiError invalid_json(const std::string& detail) {
  return ApiError(400, "invalid_request_error",
                  "We could not parse the JSON body of your request: " + detail, {},
                  "invalid_json");
}

ApiError context_length_exceeded(int prompt_tokens, int max_tokens, int max_model_len,
                                 const std::string& param) {
  return ApiError(400, "invalid_request_error",
                  "This model's maximum context length is " + std::to_string(max_model_len) +
                      " tokens. However, you requested " +
                      std::to_string(prompt_tokens + max_tokens) + " tokens (" +
                      std::to_string(prompt_tokens) + " in the prompt, " +
                      std::to_string(max_tokens) +
                      " for the completion). Please reduce the prompt or max_tokens.",
                  param, "context_length_exceeded");
}

ApiError unauthorized() {
  return ApiError(401, "invalid_request_error",
                  "Incorrect or missing API key. Pass it as 'Authorization: Bearer <key>'.", {},
                  "invalid_api_key");
}

ApiError model_not_found(const std::string& model) {
  return ApiError(404, "invalid_request_error",
                  "The model '" + model + "' does not exist; see GET /v1/models.", "model",
                  "model_not_found");
}

ApiError route_not_found(const std::string& method, const std::string& path) {
  return ApiError(404, "invalid_request_error", "Unknown route: " + method + " " + path, {},
                  "not_found");
}

ApiError method_not_allowed(const std::string& method, const std::string& path,
                            const std::string& allowed) {
  return ApiError(405, "invalid_request_error",
                  "Method " + method + " is not allowed on " + path + "; use " + allowed, {},
                  "method_not_allowed");
}

ApiError payload_too_large(size_t max_bytes) {
  return ApiError(413, "invalid_request_error",
                  "The request body is larger than the server's limit of " +
                      std::to_string(max_bytes) + " bytes (--max-request-bytes).",
                  {}, "request_too_large");
}

ApiError queue_full(int max_queued) {
  return ApiError(429, "server_overloaded",
                  "The server's waiting queue is full (" + std::to_string(max_queued) +
                      " requests); retry later.",
                  {}, "queue_full");
}

ApiError unavailable(const std::string& why) {
  return ApiError(503, "server_unavailable", why, {}, "unavailable");
}

ApiError internal_error(const std::string& why) {
  return ApiError(500, "internal_error", why, {}, "internal_error");
}

}  // namespace arbor
