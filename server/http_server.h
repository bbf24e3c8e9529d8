// The OpenAI-compatible HTTP front end over a running Engine: routes, auth, CORS, SSE
// streaming, client-disconnect aborts, metrics and graceful drain. cpp-httplib runs one
// handler thread per connection; each generation request waits on its own OutputQueue (a
// RequestSink the engine thread pushes into).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <regex>
#include <string>
#include <utility>
#include <vector>

#include "engine/engine.h"
#include "server/metrics.h"
#include "server/openai_schema.h"
#include "tokenizer/tokenizer.h"

namespace httplib {
class Server;
class ContentReader;
struct Request;
struct Response;
}  // namespace httplib

namespace arbor {

class ChatTemplate;

struct ServerOptions {
  std::string served_model_name = "arbor";
  std::string api_key;                       // empty: no auth
  std::vector<std::string> allowed_origins;  // CORS; "*" for any; empty: no CORS headers
  size_t max_request_bytes = size_t(8) << 20;
  int max_queued_requests = 1024;  // requests waiting for their first token; beyond: 429
  int http_threads = 64;           // concurrent connections served
};

class HttpServer {
 public:
  // engine (already started), tokenizer and chat (may be null) must outlive the server.
  HttpServer(Engine& engine, const Tokenizer& tokenizer, const ChatTemplate* chat,
             ServerOptions options);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Binds; port 0 picks a free one. Returns the port; throws std::runtime_error on failure.
  int bind(const std::string& host, int port);
  // Serves until stop(); call from one thread after bind().
  void listen();
  // /health answers 503 until ready.
  void set_ready(bool ready) { ready_ = ready; }
  // Graceful shutdown: new generation requests get 503, in-flight ones get up to
  // `timeout_s` to finish and are aborted after that, then the listener stops.
  void shutdown(double timeout_s);
  int in_flight() const { return in_flight_.load(); }
  // Prompt + completion tokens one request may hold: the model's context, or less when the
  // KV cache holds fewer tokens (a longer request could never finish).
  int max_model_len() const { return max_model_len_; }
  const ServerOptions& options() const { return options_; }

 private:
  struct Generation;
  void handle_generation(ApiKind kind, const httplib::Request& req, const std::string& body,
                         httplib::Response& res);
  // The request body, at most options_.max_request_bytes (413 beyond, then the connection
  // closes): httplib 0.11 enforces its payload limit on Content-Length bodies only.
  std::string read_body(const httplib::ContentReader& reader, httplib::Response& res) const;
  void register_routes();
  // The methods register_routes() serves `path` with besides OPTIONS, e.g. "POST"; empty: no
  // route (404, where a known path with another method gets 405 and this as its Allow).
  std::string allowed_methods(const std::string& path) const;

  Engine& engine_;
  const Tokenizer& tokenizer_;
  const ChatTemplate* chat_;
  ServerOptions options_;
  std::unique_ptr<httplib::Server> svr_;
  ServerMetrics metrics_;
  std::atomic<bool> ready_{false};
  std::atomic<bool> draining_{false};
  std::atomic<int> in_flight_{0};
  std::vector<std::pair<std::string, std::regex>> route_patterns_;  // (method, path), one per route
  int max_model_len_ = 0;
  int64_t created_ = 0;  // /v1/models' "created": when this server was made (Unix seconds)
  // listen() and shutdown() may race (a server stopped right after it started): see there.
  std::atomic<bool> listen_started_{false}, listen_done_{false}, stop_requested_{false};
  std::atomic<int> queued_{0};  // added, no output yet
};

}  // namespace arbor
