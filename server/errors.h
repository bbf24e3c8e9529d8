// OpenAI-shaped API errors: {"error":{"message","type","param","code"}} with an HTTP status.
// Request parsing and the HTTP routes throw ApiError; the server turns it into a response.
#pragma once

#include <stdexcept>
#include <string>

#include <nlohmann/json.hpp>

namespace arbor {

class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, std::string message, std::string param = {},
           std::string code = {});
  int status() const { return status_; }
  const std::string& type() const { return type_; }
  const std::string& param() const { return param_; }
  const std::string& code() const { return code_; }
  // {"error": {...}}; param and code are null when empty.
  nlohmann::json to_json() const;

 private:
  int status_;
  std::string type_, param_, code_;
};

// 400 invalid_request_error naming the parameter.
ApiError invalid_param(const std::string& param, const std::string& message);
// 400 invalid_request_error: the body is not valid JSON (or not an object).
ApiError invalid_json(const std::string& detail);
// 400 context_length_exceeded with both numbers.
ApiError context_length_exceeded(int prompt_tokens, int max_tokens, int max_model_len,
                                 const std::string& param);
ApiError unauthorized();                                                       // 401
ApiError model_not_found(const std::string& model);                            // 404
ApiError route_not_found(const std::string& method, const std::string& path);  // 404
// 405: the route exists for `allowed` (e.g. "POST") only.
ApiError method_not_allowed(const std::string& method, const std::string& path,
                            const std::string& allowed);
ApiError payload_too_large(size_t max_bytes);     // 413
ApiError queue_full(int max_queued);              // 429
ApiError unavailable(const std::string& why);     // 503
ApiError internal_error(const std::string& why);  // 500

}  // namespace arbor
