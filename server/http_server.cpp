#include "server/http_server.h"

#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <functional>
#include <mutex>
#include <regex>
#include <thread>
#include <unordered_map>

#include <httplib.h>
#include <spdlog/spdlog.h>

#include "server/errors.h"
#include "server/openai_schema.h"

namespace arbor {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double seconds(Clock::duration d) {
  return std::chrono::duration<double>(d).count();
}

std::string dump(const json& j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

void send_error(httplib::Response& res, const ApiError& e) {
  res.status = e.status();
  res.set_content(dump(e.to_json()), "application/json");
}

// Runs a route body, turning exceptions into OpenAI error responses.
template <class F>
void guarded(httplib::Response& res, F&& body) {
  try {
    body();
  } catch (const ApiError& e) {
    send_error(res, e);
  } catch (const std::invalid_argument& e) {
    send_error(res, invalid_param({}, e.what()));
  } catch (const std::exception& e) {
    send_error(res, internal_error(e.what()));
  }
}

// cpp-httplib 0.11 gives handlers no access to their socket, so the connection's socket is
// found once per generation request by its two ports; then poll() tells whether the client
// closed it while we wait for tokens.
int find_connection_socket(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (!dir) return -1;
  int found = -1;
  while (dirent* e = readdir(dir)) {
    const int fd = std::atoi(e->d_name);
    if (fd <= 2) continue;
    sockaddr_storage peer{}, local{};
    socklen_t pl = sizeof peer, ll = sizeof local;
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &pl) != 0) continue;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&local), &ll) != 0) continue;
    auto port = [](const sockaddr_storage& a) {
      if (a.ss_family == AF_INET)
        return int(ntohs(reinterpret_cast<const sockaddr_in&>(a).sin_port));
      if (a.ss_family == AF_INET6)
        return int(ntohs(reinterpret_cast<const sockaddr_in6&>(a).sin6_port));
      return -1;
    };
    if (port(peer) == req.remote_port && port(local) == req.local_port) {
      found = fd;
      break;
    }
  }
  closedir(dir);
  return found;
}

bool peer_closed(int fd) {
  if (fd < 0) return false;
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLRDHUP | POLLHUP | POLLERR)) return true;
  char c;
  return recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

struct TimedOutput {
  RequestOutput out;
  Clock::time_point t;
};

// The sink of one HTTP request's engine requests: a queue the engine thread fills.
class OutputQueue : public RequestSink {
 public:
  void on_output(const RequestOutput& output) override {
    {
      std::lock_guard lock(mu_);
      q_.push_back({output, Clock::now()});
    }
    cv_.notify_one();
  }
  bool pop(TimedOutput& o, std::chrono::milliseconds timeout) {
    std::unique_lock lock(mu_);
    if (!cv_.wait_for(lock, timeout, [&] { return !q_.empty(); })) return false;
    o = std::move(q_.front());
    q_.pop_front();
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<TimedOutput> q_;
};

constexpr std::chrono::milliseconds kPollInterval{50};

}  // namespace

// One generation HTTP request in flight: its engine requests, their outputs so far, timing.
struct HttpServer::Generation {
  struct Prompt {
    uint64_t engine_id = 0;
    bool first = false;  // got an output yet
  };
  struct Timing {
    Clock::time_point first, last;
    std::vector<double> itl;
  };
  struct Delta {
    int choice = 0;
    std::string text;
    size_t lp_from = 0;
  };

  HttpServer& server;
  ApiRequest req;
  std::string id;
  int64_t created = 0;
  Clock::time_point arrival = Clock::now();
  std::shared_ptr<OutputQueue> queue = std::make_shared<OutputQueue>();
  std::vector<Prompt> prompts;
  std::unordered_map<uint64_t, int> prompt_of;  // engine id → prompt index
  std::vector<ChoiceResult> choices;
  std::vector<Timing> timing;
  std::vector<bool> role_sent;
  int finished = 0;
  Usage usage;
  int fd = -1;
  bool aborted = false;
  bool rejected = false;                // the engine refused a prompt: no metrics
  bool observed = false;                // metrics recorded (once per HTTP request)
  Clock::time_point first_scheduled{};  // of any of its sequences; epoch: not yet
  Clock::time_point last_peer_check{};  // next(): when the connection was last checked

  Generation(HttpServer& s, ApiRequest r) : server(s), req(std::move(r)) {
    server.in_flight_++;
    id = new_response_id(req.kind);
    created = std::chrono::duration_cast<std::chrono::seconds>(
                  std::chrono::system_clock::now().time_since_epoch())
                  .count();
    choices.resize(req.num_choices());
    timing.resize(choices.size());
    role_sent.assign(choices.size(), false);
    if (req.echo)
      for (size_t c = 0; c < choices.size(); ++c)
        choices[c].text = req.prompt_texts[c / req.base.n];
  }
  ~Generation() {
    if (!done()) abort();
    for (const Prompt& p : prompts)
      if (!p.first) server.queued_--;
    observe(Clock::now());
    log();
    server.in_flight_--;
  }

  bool done() const { return finished == int(choices.size()); }

  // Adds every prompt to the engine; on a rejected one, aborts those already added.
  void submit() {
    for (size_t i = 0; i < req.prompts.size(); ++i) {
      Request r = req.base;
      r.prompt_ids = req.prompts[i];
      r.sink = queue;
      usage.prompt_tokens += int(r.prompt_ids.size());
      try {
        const uint64_t eid = server.engine_.add_request(std::move(r));
        prompts.push_back({eid, false});
        prompt_of[eid] = int(i);
        server.queued_++;
      } catch (...) {
        abort();
        rejected = true;
        finished = int(choices.size());  // nothing more will arrive that we wait for
        throw;
      }
    }
  }

  void abort() {
    aborted = true;
    for (const Prompt& p : prompts) server.engine_.abort(p.engine_id);
  }

  // Waits for the next output and applies it; false on timeout or when the client left
  // (then the request is aborted and `aborted` is set). The connection is checked at least
  // every kPollInterval, also while outputs keep coming (a non-streaming request writes
  // nothing until the end, so only this check notices a client that left).
  bool next(Delta& d) {
    TimedOutput o;
    const bool got = queue->pop(o, kPollInterval);
    const Clock::time_point now = Clock::now();
    if (!got || now - last_peer_check >= kPollInterval) {
      last_peer_check = now;
      if (fd >= 0 && peer_closed(fd)) {
        spdlog::info("{}: client disconnected, aborting", id);
        abort();
        return false;
      }
    }
    if (!got) return false;
    const RequestOutput& out = o.out;
    if (out.first_scheduled != Clock::time_point{} &&
        (first_scheduled == Clock::time_point{} || out.first_scheduled < first_scheduled))
      first_scheduled = out.first_scheduled;
    const int p = prompt_of.at(out.request_id);
    if (!prompts[p].first) {
      prompts[p].first = true;
      server.queued_--;
      usage.cached_tokens += out.num_cached_tokens;
    }
    d.choice = p * req.base.n + out.index;
    ChoiceResult& c = choices[d.choice];
    Timing& t = timing[d.choice];
    d.lp_from = c.logprobs.size();
    if (out.token_id >= 0) {
      if (c.output_tokens == 0)
        t.first = o.t;
      else
        t.itl.push_back(seconds(o.t - t.last));
      t.last = o.t;
      usage.completion_tokens += out.num_output_tokens - c.output_tokens;
      c.output_tokens = out.num_output_tokens;
      if (out.has_logprobs) {
        c.text_offsets.push_back(c.text.size());
        c.logprobs.push_back(make_token_logprob(server.tokenizer_, out));
      }
    }
    d.text = out.text;
    c.text += out.text;
    if (out.finish_reason) {
      c.finish = out.finish_reason;
      c.error = out.error;
      ++finished;
      if (done()) observe(o.t);
    }
    return true;
  }

  // Records the request's metrics once: when its last sequence ends, or (client gone,
  // aborted) when the handler lets go of it.
  void observe(Clock::time_point end) {
    if (observed || rejected || prompts.empty()) return;
    observed = true;
    double ttft = -1;
    std::vector<double> itl;
    bool error = false, abort_seen = aborted && !done(), length = false;
    for (size_t c = 0; c < choices.size(); ++c) {
      if (choices[c].output_tokens > 0) {
        const double f = seconds(timing[c].first - arrival);
        ttft = ttft < 0 ? f : std::min(ttft, f);
      }
      itl.insert(itl.end(), timing[c].itl.begin(), timing[c].itl.end());
      const std::optional<FinishReason>& r = choices[c].finish;
      error = error || r == FinishReason::kError;
      abort_seen = abort_seen || r == FinishReason::kAbort;
      length = length || r == FinishReason::kLength;
    }
    const char* reason = error ? "error" : abort_seen ? "abort" : length ? "length" : "stop";
    const double queue_s =
        first_scheduled == Clock::time_point{} ? -1 : seconds(first_scheduled - arrival);
    server.metrics_.observe_request(queue_s, ttft, seconds(end - arrival), itl, reason);
  }

  void log() const {
    double ttft = 0;
    Clock::time_point last = arrival;
    for (const Timing& t : timing) {
      if (t.first != Clock::time_point{}) {
        const double f = seconds(t.first - arrival);
        ttft = ttft == 0 ? f : std::min(ttft, f);
      }
      last = std::max(last, t.last);
    }
    const double gen_s = seconds(last - arrival) - ttft;
    std::string reasons;
    for (const ChoiceResult& c : choices) {
      if (!reasons.empty()) reasons += ',';
      reasons += c.finish ? finish_reason_name(*c.finish) : (aborted ? "abort" : "none");
    }
    spdlog::info(
        "{} prompt_tokens={} output_tokens={} cached_tokens={} ttft={:.1f}ms "
        "decode={:.1f}tok/s e2e={:.2f}s finish={}",
        id, usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, ttft * 1e3,
        gen_s > 0 ? usage.completion_tokens / gen_s : 0.0, seconds(Clock::now() - arrival),
        reasons);
  }
};

HttpServer::HttpServer(Engine& engine, const Tokenizer& tokenizer, const ChatTemplate* chat,
                       ServerOptions options)
    : engine_(engine),
      tokenizer_(tokenizer),
      chat_(chat),
      options_(std::move(options)),
      svr_(std::make_unique<httplib::Server>()) {
  const ModelRunner& runner = engine_.runner();
  const int context = runner.config().max_position_embeddings;
  const int64_t kv_tokens = int64_t(runner.num_kv_blocks()) * runner.block_size();
  max_model_len_ = int(std::min<int64_t>(context, kv_tokens));
  if (max_model_len_ < context)
    spdlog::warn(
        "the KV cache holds {} tokens, fewer than the model's context of {}: requests are "
        "limited to {} tokens (prompt + completion)",
        kv_tokens, context, max_model_len_);
  created_ = std::chrono::duration_cast<std::chrono::seconds>(
                 std::chrono::system_clock::now().time_since_epoch())
                 .count();
  register_routes();
}

HttpServer::~HttpServer() {
  if (svr_->is_running()) svr_->stop();
}

int HttpServer::bind(const std::string& host, int port) {
  // cpp-httplib 0.11 listens with a backlog of 5: a burst of clients (hundreds of streams
  // connecting at once, as in tests/e2e/load_test.mjs) overflows the accept queue, and the
  // dropped connections wait for SYN retransmits (1 s, 3 s, ...). The listening socket is
  // the only one that goes through the socket-options hook; listen() again raises the backlog.
  //
  // The options are set here rather than by httplib::default_socket_options, which also sets
  // SO_REUSEPORT: a second server on a port in use then bound it too and the kernel split the
  // connections between the two processes. SO_REUSEADDR alone lets a restarted server bind
  // while old connections sit in TIME_WAIT, and bind() fails while another server listens.
  auto listen_fd = std::make_shared<int>(-1);
  svr_->set_socket_options([listen_fd](int sock) {
    const int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    *listen_fd = sock;
  });
  int bound = port;
  if (port == 0) {
    bound = svr_->bind_to_any_port(host);
    if (bound < 0) throw std::runtime_error("cannot bind " + host + " to a free port");
  } else if (!svr_->bind_to_port(host, port)) {
    throw std::runtime_error("cannot bind " + host + ":" + std::to_string(port) +
                             " (in use, or not an address of this machine)");
  }
  if (*listen_fd >= 0 && ::listen(*listen_fd, SOMAXCONN) != 0)
    spdlog::warn("cannot raise the listen backlog to {}: {}", SOMAXCONN, std::strerror(errno));
  return bound;
}

void HttpServer::listen() {
  listen_started_ = true;
  if (!stop_requested_) svr_->listen_after_bind();
  listen_done_ = true;
}

void HttpServer::shutdown(double timeout_s) {
  draining_ = true;
  ready_ = false;
  const auto deadline = Clock::now() + std::chrono::duration<double>(timeout_s);
  while (in_flight_ > 0 && Clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  if (in_flight_ > 0) {
    spdlog::warn("shutdown: {} requests still running after {:.0f} s; aborting them",
                 in_flight_.load(), timeout_s);
    engine_.stop();  // aborts every unfinished request; their handlers then return
    const auto grace = Clock::now() + std::chrono::seconds(5);
    while (in_flight_ > 0 && Clock::now() < grace)
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  // cpp-httplib's stop() does nothing until listen_after_bind() has marked the server running,
  // so a shutdown right after listen() was called could leave the listener blocked in
  // accept() for good (seen as a hung test). Either listen() sees stop_requested_ and returns,
  // or this waits until the server runs (or listen() is done) before stopping it.
  stop_requested_ = true;
  if (listen_started_) {
    while (!listen_done_ && !svr_->is_running())
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  svr_->stop();
}

std::string HttpServer::read_body(const httplib::ContentReader& reader,
                                  httplib::Response& res) const {
  std::string body;
  bool too_large = false;
  const bool complete = reader([&](const char* data, size_t size) {
    if (size > options_.max_request_bytes - body.size()) {
      too_large = true;
      return false;
    }
    body.append(data, size);
    return true;
  });
  if (too_large || res.status == 413) {
    res.set_header("Connection", "close");  // the rest of the body is not read
    throw payload_too_large(options_.max_request_bytes);
  }
  if (!complete) {
    res.set_header("Connection", "close");
    throw invalid_json("could not read the request body");
  }
  return body;
}

void HttpServer::handle_generation(ApiKind kind, const httplib::Request& http_req,
                                   const std::string& raw_body, httplib::Response& res) {
  const json body = parse_json_body(raw_body);
  // The model first: a request for another model gets 404 whatever else is wrong with it.
  if (const auto m = body.find("model"); m != body.end() && m->is_string() &&
                                         !m->get<std::string>().empty() &&
                                         m->get<std::string>() != options_.served_model_name)
    throw model_not_found(m->get<std::string>());
  const LlamaConfig& cfg = engine_.runner().config();
  const ModelLimits limits{max_model_len_, cfg.vocab_size};
  ApiRequest req = kind == ApiKind::kChat ? parse_chat_request(body, tokenizer_, limits, chat_)
                                          : parse_completion_request(body, tokenizer_, limits);
  if (draining_) throw unavailable("the server is shutting down");
  if (queued_ + int(req.prompts.size()) > options_.max_queued_requests)
    throw queue_full(options_.max_queued_requests);

  auto gen = std::make_shared<Generation>(*this, std::move(req));
  gen->submit();
  gen->fd = find_connection_socket(http_req);
  const std::string& model = options_.served_model_name;

  if (!gen->req.stream) {
    Generation::Delta d;
    while (!gen->done()) {
      if (!gen->next(d) && gen->aborted) return;  // the client is gone
    }
    for (const ChoiceResult& c : gen->choices)
      if (c.finish == FinishReason::kError) throw internal_error("generation failed: " + c.error);
    res.set_content(dump(completion_response(gen->req.kind, gen->id, gen->created, model,
                                             gen->choices, gen->req.logprobs >= 0, gen->usage)),
                    "application/json");
    return;
  }

  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [gen, model](size_t, httplib::DataSink& sink) {
        const ApiRequest& r = gen->req;
        const bool chat = r.kind == ApiKind::kChat;
        auto send = [&](const json& j) {
          const std::string s = "data: " + dump(j) + "\n\n";
          return sink.write(s.data(), s.size());
        };
        auto fail = [&] {
          gen->abort();
          return false;
        };
        for (size_t c = 0; c < gen->choices.size(); ++c) {
          if (chat) {
            gen->role_sent[c] = true;
            if (!send(stream_chunk(r.kind, gen->id, gen->created, model, int(c), "", true, nullptr,
                                   nullptr, std::nullopt, r.include_usage)))
              return fail();
          } else if (r.echo) {
            if (!send(stream_chunk(r.kind, gen->id, gen->created, model, int(c),
                                   gen->choices[c].text, false, nullptr, nullptr, std::nullopt,
                                   r.include_usage)))
              return fail();
          }
        }
        Generation::Delta d;
        while (!gen->done()) {
          if (!gen->next(d)) {
            if (gen->aborted) return false;
            continue;
          }
          const ChoiceResult& c = gen->choices[d.choice];
          if (c.finish == FinishReason::kError) {
            const ApiError e = internal_error("generation failed: " + c.error);
            if (!send(e.to_json())) return fail();
            continue;
          }
          const bool new_lp = c.logprobs.size() > d.lp_from;
          if (d.text.empty() && !new_lp && !c.finish) continue;
          std::vector<TokenLogprob> lps;
          std::vector<size_t> offs;
          if (r.logprobs >= 0) {
            lps.assign(c.logprobs.begin() + long(d.lp_from), c.logprobs.end());
            offs.assign(c.text_offsets.begin() + long(d.lp_from), c.text_offsets.end());
          }
          if (!send(stream_chunk(r.kind, gen->id, gen->created, model, d.choice, d.text, false,
                                 r.logprobs >= 0 ? &lps : nullptr, &offs, c.finish,
                                 r.include_usage)))
            return fail();
        }
        if (r.include_usage && !send(usage_chunk(r.kind, gen->id, gen->created, model, gen->usage)))
          return fail();
        static const std::string kDone = "data: [DONE]\n\n";
        if (!sink.write(kDone.data(), kDone.size())) return fail();
        sink.done();
        return true;
      },
      [gen](bool) {
        if (!gen->done()) gen->abort();
      });
}

std::string HttpServer::allowed_methods(const std::string& path) const {
  std::string methods;
  for (const auto& [method, pattern] : route_patterns_) {
    if (std::regex_match(path, pattern) && methods.find(method) == std::string::npos)
      methods += (methods.empty() ? "" : ", ") + method;
  }
  return methods;
}

void HttpServer::register_routes() {
  httplib::Server& s = *svr_;
  s.new_task_queue = [n = options_.http_threads] { return new httplib::ThreadPool(size_t(n)); };
  s.set_payload_max_length(options_.max_request_bytes);
  s.set_read_timeout(30, 0);
  s.set_write_timeout(30, 0);

  s.set_pre_routing_handler([this](const httplib::Request& req, httplib::Response& res) {
    const std::string origin = req.get_header_value("Origin");
    if (!origin.empty()) {
      for (const std::string& o : options_.allowed_origins) {
        if (o == "*" || o == origin) {
          res.set_header("Access-Control-Allow-Origin", o == "*" ? "*" : origin);
          res.set_header("Vary", "Origin");
          break;
        }
      }
    }
    if (req.method == "OPTIONS") return httplib::Server::HandlerResponse::Unhandled;
    if (!options_.api_key.empty() && req.path.rfind("/v1/", 0) == 0 &&
        req.get_header_value("Authorization") != "Bearer " + options_.api_key) {
      send_error(res, unauthorized());
      return httplib::Server::HandlerResponse::Handled;
    }
    // A request with a method that may carry a body but neither Content-Length nor chunked
    // Transfer-Encoding has an empty body (RFC 9112), yet httplib 0.11 would read until the
    // client closes or the read timeout: answer it now, before httplib reads anything.
    const bool body_method = req.method == "POST" || req.method == "PUT" || req.method == "PATCH" ||
                             req.method == "DELETE";
    if (body_method && !req.has_header("Content-Length") && !req.has_header("Transfer-Encoding")) {
      const std::string allowed = allowed_methods(req.path);
      if (allowed.empty()) {
        send_error(res, route_not_found(req.method, req.path));
      } else if (allowed != req.method) {
        res.set_header("Allow", allowed + ", OPTIONS");
        send_error(res, method_not_allowed(req.method, req.path, allowed));
      } else {
        send_error(res, invalid_json("the request has no body (no Content-Length)"));
      }
      return httplib::Server::HandlerResponse::Handled;
    }
    return httplib::Server::HandlerResponse::Unhandled;
  });
  s.Options(".*", [](const httplib::Request&, httplib::Response& res) {
    res.status = 204;
    res.set_header("Access-Control-Allow-Methods", "GET, POST, OPTIONS");
    res.set_header("Access-Control-Allow-Headers", "Authorization, Content-Type");
    res.set_header("Access-Control-Max-Age", "600");
  });
  s.set_error_handler([this](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty()) return;
    const std::string allowed = allowed_methods(req.path);
    if (res.status == 404 && !allowed.empty()) {
      res.set_header("Allow", allowed + ", OPTIONS");
      send_error(res, method_not_allowed(req.method, req.path, allowed));
    } else if (res.status == 404)
      send_error(res, route_not_found(req.method, req.path));
    else if (res.status == 413)
      send_error(res, payload_too_large(options_.max_request_bytes));
    else if (res.status == 400)
      send_error(res, invalid_json("bad HTTP request"));
    else
      send_error(res, ApiError(res.status, "invalid_request_error", "HTTP error"));
  });
  s.set_exception_handler(
      [](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          send_error(res, internal_error(e.what()));
        } catch (...) {
          send_error(res, internal_error("unknown error"));
        }
      });

  // Every route once, in one table: httplib gets its handler from here and allowed_methods()
  // its (method, path pattern), so that a wrong method gets 405 and not 404.
  using Handler =
      std::function<void(const httplib::Request&, httplib::Response&, const std::string& body)>;
  struct Route {
    const char* method;   // "GET" or "POST" (OPTIONS answers every path, above)
    const char* pattern;  // httplib's: a regular expression matched against the whole path
    Handler handle;       // POST: with the body read by read_body; GET: with ""
  };
  auto model_card = [this] {
    return json{{"id", options_.served_model_name},
                {"object", "model"},
                {"created", created_},
                {"owned_by", "arbor"},
                {"max_model_len", max_model_len_}};
  };
  const Route routes[] = {
      {"POST", "/v1/completions",
       [this](const httplib::Request& req, httplib::Response& res, const std::string& body) {
         handle_generation(ApiKind::kCompletion, req, body, res);
       }},
      {"POST", "/v1/chat/completions",
       [this](const httplib::Request& req, httplib::Response& res, const std::string& body) {
         handle_generation(ApiKind::kChat, req, body, res);
       }},
      {"GET", "/v1/models",
       [model_card](const httplib::Request&, httplib::Response& res, const std::string&) {
         res.set_content(dump({{"object", "list"}, {"data", json::array({model_card()})}}),
                         "application/json");
       }},
      {"GET", R"(/v1/models/(.+))",
       [this, model_card](const httplib::Request& req, httplib::Response& res, const std::string&) {
         const std::string id = req.matches[1];
         if (id != options_.served_model_name) throw model_not_found(id);
         res.set_content(dump(model_card()), "application/json");
       }},
      {"GET", "/health",
       [this](const httplib::Request&, httplib::Response& res, const std::string&) {
         if (ready_) {
           res.set_content("{\"status\":\"ok\"}", "application/json");
         } else {
           send_error(res, unavailable(draining_ ? "shutting down" : "the model is loading"));
         }
       }},
      {"GET", "/metrics",
       [this](const httplib::Request&, httplib::Response& res, const std::string&) {
         res.set_content(metrics_.render(engine_.stats(), options_.served_model_name, in_flight_),
                         "text/plain; version=0.0.4");
       }},
      {"POST", "/tokenize",
       [this](const httplib::Request&, httplib::Response& res, const std::string& text) {
         const json body = parse_json_body(text);
         std::vector<int32_t> ids;
         if (body.contains("messages")) {
           const bool agp = body.value("add_generation_prompt", true);
           ids = tokenizer_.encode(render_chat(body["messages"], chat_, agp), false);
         } else {
           if (!body.contains("prompt") || !body["prompt"].is_string())
             throw invalid_param("prompt", "'prompt' must be a string");
           const auto& add = body.value("add_special_tokens", json(true));
           if (!add.is_boolean())
             throw invalid_param("add_special_tokens", "'add_special_tokens' must be a boolean");
           ids = tokenizer_.encode(body["prompt"].get<std::string>(), add.get<bool>());
         }
         res.set_content(
             dump({{"tokens", ids}, {"count", ids.size()}, {"max_model_len", max_model_len_}}),
             "application/json");
       }},
      {"POST", "/detokenize",
       [this](const httplib::Request&, httplib::Response& res, const std::string& text) {
         const json body = parse_json_body(text);
         if (!body.contains("tokens") || !body["tokens"].is_array())
           throw invalid_param("tokens", "'tokens' must be a list of token ids");
         std::vector<int32_t> ids;
         for (const json& t : body["tokens"]) {
           if (!t.is_number_integer() || t.get<int64_t>() < 0 ||
               t.get<int64_t>() >= tokenizer_.vocab_size())
             throw invalid_param("tokens", "token ids must be integers in [0, " +
                                               std::to_string(tokenizer_.vocab_size()) + ")");
           ids.push_back(t.get<int32_t>());
         }
         res.set_content(dump({{"prompt", tokenizer_.decode(ids, false)}}), "application/json");
       }},
  };
  for (const Route& r : routes) {
    route_patterns_.emplace_back(r.method, std::regex(r.pattern));
    if (std::string(r.method) == "POST") {
      // POST routes read their bodies themselves (read_body: the size limit holds for chunked
      // bodies too).
      s.Post(r.pattern, [this, h = r.handle](const httplib::Request& req, httplib::Response& res,
                                             const httplib::ContentReader& reader) {
        guarded(res, [&] { h(req, res, read_body(reader, res)); });
      });
    } else {
      s.Get(r.pattern, [h = r.handle](const httplib::Request& req, httplib::Response& res) {
        guarded(res, [&] { h(req, res, std::string()); });
      });
    }
  }
}

}  // namespace arbor
