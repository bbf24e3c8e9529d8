#include "server/serve_command.h"

#include <pthread.h>
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include <spdlog/spdlog.h>
#include <nlohmann/json.hpp>

#include "engine/comm/rendezvous.h"
#include "engine/engine.h"
#include "models/context_parallel_runner.h"
#include "models/model_runner.h"
#ifdef ARBOR_WITH_CUDA
#include "models/llama_cuda.h"
#endif
#include "server/cli_checks.h"
#include "server/http_server.h"
#include "server/model_path.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace arbor {
namespace {

struct ServeArgs {
  std::string model;
  std::string host = "127.0.0.1";
  int port = 8000;
  std::string api_key;
  std::string served_model_name;
  int max_num_seqs = 256;
  int max_num_batched_tokens = 2048;
  int max_queued_requests = 1024;
  int http_threads = 64;
  size_t max_request_bytes = size_t(8) << 20;
  std::string device = "auto";
  std::string load_format = "auto";
  float gpu_memory_utilization = 0.9f;
  std::string chat_template;
  std::vector<std::string> allowed_origins;
  int block_size = 16;
  int kv_cache_tokens = 0;  // CPU: KV-cache size in tokens (0: default_cpu_kv_cache_tokens)
  double shutdown_timeout = 10;
  // Context parallelism (tree attention): one sequence's KV cache sharded over ranks.
  int context_parallel = 1;
  std::string cp_backend;  // nccl (GPU default) or local (simulated ranks on one device)
  std::string cp_combine = "allgather";
  int nnodes = 1;
  int node_rank = 0;
  // Unset: ARBOR_MASTER_* / MASTER_* or the defaults (comm::RendezvousOptions::resolve).
  std::optional<std::string> master_addr;
  std::optional<int> master_port;

  bool context_parallel_mode() const {
    return context_parallel > 1 || nnodes > 1 || !cp_backend.empty();
  }
};

std::unique_ptr<ModelRunner> make_runner(const ServeArgs& a, const std::filesystem::path& dir) {
  bool use_cuda = a.device == "cuda";
#ifdef ARBOR_WITH_CUDA
  std::string why;
  if (a.device == "auto") use_cuda = cuda_available();
  if (a.device == "cuda" && !cuda_available(&why))
    throw std::runtime_error("--device cuda: no CUDA GPU is visible (" + why + ")");
  if (use_cuda) {
    CudaRunnerOptions o;
    o.block_size = a.block_size;
    o.gpu_memory_utilization = a.gpu_memory_utilization;
    o.dummy_weights = a.load_format == "dummy";
    o.max_batch_tokens = a.max_num_batched_tokens;
    o.max_num_seqs = a.max_num_seqs;
    if (a.context_parallel_mode()) {
      CudaContextParallelOptions cp;
      cp.size = a.context_parallel;
      cp.backend = parse_cp_backend(a.cp_backend.empty() ? "nccl" : a.cp_backend);
      cp.combine = parse_cp_combine(a.cp_combine);
      cp.nnodes = a.nnodes;
      cp.node_rank = a.node_rank;
      if (a.nnodes > 1) {  // flag (or config, or ARBOR_*) > MASTER_ADDR / MASTER_PORT > default
        const comm::RendezvousOptions r = comm::RendezvousOptions::resolve(
            {a.nnodes, a.node_rank, a.master_addr, a.master_port, std::nullopt});
        cp.master_addr = r.master_addr;
        cp.master_port = r.master_port;
      }
      // nullptr on a follower node, once the leader has stopped.
      return make_cuda_context_parallel_runner(dir, o, cp);
    }
    return make_cuda_runner(dir, o);
  }
#else
  if (use_cuda) throw std::runtime_error("this arbor was built without the CUDA backend");
#endif
  if (a.load_format == "dummy")
    throw std::runtime_error("--load-format dummy needs the CUDA backend (--device cuda)");
  LlamaCpu model = LlamaCpu::load(dir);
  const int tokens = a.kv_cache_tokens > 0
                         ? a.kv_cache_tokens
                         : default_cpu_kv_cache_tokens(model.config(), a.block_size);
  const int blocks = int((int64_t(tokens) + a.block_size - 1) / a.block_size);
  if (a.context_parallel_mode()) {
    if (a.nnodes != 1 || (!a.cp_backend.empty() && a.cp_backend != "local"))
      throw std::runtime_error(
          "the CPU backend runs context parallelism as simulated ranks on one node "
          "(--cp-backend local)");
    // Each rank holds 1/p of the positions: the same total KV-cache size in tokens.
    const int p = a.context_parallel;
    return make_cpu_context_parallel_runner(model, p, (blocks + p - 1) / p, a.block_size,
                                            parse_cp_combine(a.cp_combine));
  }
  return std::make_unique<CpuModelRunner>(std::move(model), blocks, a.block_size);
}

// Blocks SIGINT/SIGTERM in every thread started after this; one thread waits for them.
sigset_t block_shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  signal(SIGPIPE, SIG_IGN);
  return set;
}

int run_serve(const ServeArgs& a) {
  const sigset_t signals = block_shutdown_signals();
  const std::filesystem::path dir =
      a.model.empty() ? default_model_dir() : std::filesystem::path(a.model);
  const auto t0 = std::chrono::steady_clock::now();
  // Loading a large model takes a while and the port opens only after it: say what happens.
  spdlog::info("loading {} (device {}); the server listens once it is loaded", dir.string(),
               a.device);
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(dir);
  std::unique_ptr<ChatTemplate> chat;
  if (!a.chat_template.empty()) {
    const std::string bos = tokenizer->bos_id() ? tokenizer->id_to_piece(*tokenizer->bos_id()) : "";
    const std::string eos = tokenizer->eos_id() ? tokenizer->id_to_piece(*tokenizer->eos_id()) : "";
    chat = chat_template_from_file(a.chat_template, bos, eos);
  } else {
    chat = load_chat_template(dir);
  }
  if (!chat)
    spdlog::warn("{} has no chat template: /v1/chat/completions will answer 400", dir.string());

  ServerOptions opts;
  opts.served_model_name =
      a.served_model_name.empty() ? default_served_model_name(dir) : a.served_model_name;
  opts.api_key = a.api_key;
  opts.allowed_origins = a.allowed_origins;
  opts.max_request_bytes = a.max_request_bytes;
  opts.max_queued_requests = a.max_queued_requests;
  opts.http_threads = a.http_threads;

  std::unique_ptr<ModelRunner> runner = make_runner(a, dir);
  if (!runner) {  // a follower node of a multi-node context-parallel group
    spdlog::info("node {}: the leader stopped; exiting", a.node_rank);
    return 0;
  }
  EngineConfig ec;
  ec.max_num_seqs = a.max_num_seqs;
  ec.max_num_batched_tokens = a.max_num_batched_tokens;
  Engine engine(*runner, *tokenizer, ec);
  HttpServer http(engine, *tokenizer, chat.get(), opts);
  const int port = http.bind(a.host, a.port);
  std::thread listener([&] { http.listen(); });
  engine.start();
  http.set_ready(true);
  const LlamaConfig& c = runner->config();
  spdlog::info(
      "serving {} as '{}' on {} ({} layers, vocab {}, context {}, {} KV "
      "blocks of {}) on {}; ready in {:.2f} s",
      dir.string(), opts.served_model_name, http_url(a.host, port), c.num_layers, c.vocab_size,
      c.max_position_embeddings, runner->num_kv_blocks(), runner->block_size(),
      runner->device_name(),
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());

  // Periodic stats while there is work; returns on SIGINT/SIGTERM.
  uint64_t last_tokens = 0;
  auto last_t = std::chrono::steady_clock::now();
  for (;;) {
    const timespec ts{10, 0};
    const int sig = sigtimedwait(&signals, nullptr, &ts);
    if (sig == SIGINT || sig == SIGTERM) {
      spdlog::info("signal {}: draining {} requests (up to {:.0f} s)", sig, http.in_flight(),
                   a.shutdown_timeout);
      break;
    }
    const EngineStats s = engine.stats();
    const auto now = std::chrono::steady_clock::now();
    if (s.generation_tokens_total != last_tokens || s.num_requests > 0) {
      const double dt = std::chrono::duration<double>(now - last_t).count();
      spdlog::info(
          "engine: running={} waiting={} kv_usage={:.1f}% prefix_hit={:.1f}% "
          "gen_throughput={:.1f} tok/s preemptions={}",
          s.num_running, s.num_waiting, 100 * s.kv_usage, 100 * s.prefix_hit_rate,
          dt > 0 ? double(s.generation_tokens_total - last_tokens) / dt : 0.0, s.preemptions_total);
    }
    last_tokens = s.generation_tokens_total;
    last_t = now;
  }
  // A second SIGINT/SIGTERM while draining stops at once (as uvicorn does): the signals stay
  // blocked in every thread, so this one waits for them while the drain runs.
  std::thread second_signal([signals] {
    for (;;) {
      const int sig = sigwaitinfo(&signals, nullptr);
      if (sig == SIGINT || sig == SIGTERM) {
        spdlog::warn("signal {} again: stopping without draining", sig);
        spdlog::default_logger()->flush();
        std::_Exit(130);
      }
    }
  });
  second_signal.detach();
  http.shutdown(a.shutdown_timeout);
  listener.join();
  engine.stop();
  spdlog::info("shut down");
  return 0;
}

// --config FILE: a JSON object whose keys are the long flag names without dashes
// ("max-num-seqs" or "max_num_seqs"), one of `keys`; flags on the command line win.
void apply_config_file(CLI::App& cmd, const std::set<std::string>& keys, const std::string& file) {
  std::ifstream in(file);
  if (!in) throw std::runtime_error("--config: cannot read " + file);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, false);
  if (j.is_discarded() || !j.is_object())
    throw std::runtime_error("--config: " + file + " is not a JSON object");
  for (const auto& [key, val] : j.items()) {
    std::string name = key;
    std::replace(name.begin(), name.end(), '_', '-');
    CLI::Option* opt = keys.count(name) ? cmd.get_option_no_throw("--" + name) : nullptr;
    if (!opt) throw std::runtime_error(file + ": unknown key '" + key + "'");
    if (opt->count() > 0) continue;  // the command line wins
    std::vector<std::string> vals;
    if (val.is_array()) {
      for (const auto& v : val) vals.push_back(v.is_string() ? v.get<std::string>() : v.dump());
    } else {
      vals.push_back(val.is_string() ? val.get<std::string>() : val.dump());
    }
    opt->clear();
    opt->add_result(vals);
    try {
      opt->run_callback();
    } catch (const CLI::ParseError& e) {
      // "--port: must be an integer in 0..65535, got 18203.7" → "FILE: port must be ..."
      std::string why = e.what();
      const std::string prefix = opt->get_name() + ": ";
      if (why.rfind(prefix, 0) == 0) why.erase(0, prefix.size());
      throw std::runtime_error(file + ": " + key + " " + why);
    }
  }
}

}  // namespace

void add_serve_command(CLI::App& app) {
  auto a = std::make_shared<ServeArgs>();
  auto config = std::make_shared<std::string>();
  CLI::App* cmd = app.add_subcommand("serve", "OpenAI-compatible HTTP server");
  auto env = [](const char* flag) {
    std::string e = "ARBOR_";
    for (const char* p = flag; *p; ++p) e += *p == '-' ? '_' : char(std::toupper(*p));
    return e;
  };
  auto keys = std::make_shared<std::set<std::string>>();  // what --config may set
  auto opt = [&](const char* flag, auto& target, const std::string& help) {
    keys->insert(flag);
    return cmd->add_option(std::string("--") + flag, target, help)->envname(env(flag));
  };
  const double inf = HUGE_VAL;
  opt("model", a->model, "Hugging Face model folder (default: $ARBOR_MODEL or the demo model)");
  opt("host", a->host, "Address to listen on");
  opt("port", a->port, "Port to listen on (0: any free port)")->check(cli::integer(0, 65535));
  opt("api-key", a->api_key, "Require 'Authorization: Bearer KEY' on /v1/*");
  opt("served-model-name", a->served_model_name, "Model id in the API (default: folder name)");
  opt("max-num-seqs", a->max_num_seqs, "Sequences per engine step")->check(cli::integer(1));
  opt("max-num-batched-tokens", a->max_num_batched_tokens, "Tokens per engine step")
      ->check(cli::integer(1));
  opt("max-queued-requests", a->max_queued_requests,
      "Requests waiting for their first token before new ones get 429")
      ->check(cli::integer(1));
  opt("http-threads", a->http_threads,
      "HTTP worker threads: connections served at once (more wait for a free thread)")
      ->check(cli::integer(1, 4096));
  opt("max-request-bytes", a->max_request_bytes, "Largest request body (413 beyond)")
      ->check(cli::integer(1, (1LL << 40)));
  opt("device", a->device, "auto (GPU if present), cuda or cpu")
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}));
  opt("load-format", a->load_format, "auto (safetensors) or dummy (random weights, GPU only)")
      ->check(CLI::IsMember({"auto", "dummy"}));
  opt("gpu-memory-utilization", a->gpu_memory_utilization,
      "Fraction of GPU memory for weights, activations and KV cache")
      ->check(cli::number(0.05, 1.0));
  opt("chat-template", a->chat_template, "Jinja chat template file (default: the model's)")
      ->check(CLI::ExistingFile);
  opt("allowed-origins", a->allowed_origins, "CORS origins ('*' for any)")->delimiter(',');
  opt("block-size", a->block_size, "KV-cache block size in tokens")->check(cli::integer(1, 1024));
  opt("kv-cache-tokens", a->kv_cache_tokens,
      "CPU backend: KV-cache size in tokens (default, 0: 4 × the model's context, at most "
      "what fits in 4 GiB; requests are limited to it when it is smaller than the context)")
      ->check(cli::integer(0, 1 << 30));
  opt("shutdown-timeout", a->shutdown_timeout,
      "Seconds in-flight requests get to finish on SIGTERM/SIGINT")
      ->check(cli::number(0, inf));
  opt("context-parallel", a->context_parallel,
      "Ranks sharing each sequence's KV cache (tree attention across GPUs)")
      ->check(cli::integer(1, 1024));
  opt("cp-backend", a->cp_backend,
      "nccl (one rank per GPU) or local (simulated ranks on one device; CPU: always)")
      ->check(CLI::IsMember({"nccl", "local"}));
  opt("cp-combine", a->cp_combine,
      "How ranks merge partial attention: allgather (one collective) or allreduce (two)")
      ->check(CLI::IsMember({"allgather", "allreduce"}));
  opt("nnodes", a->nnodes, "Nodes of a multi-node context-parallel group")
      ->check(cli::integer(1, 1024));
  opt("node-rank", a->node_rank, "This node's index; node 0 serves HTTP")
      ->check(cli::integer(0, 1023));
  opt("master-addr", a->master_addr,
      "Node 0's address for the rendezvous (default: $MASTER_ADDR, else 127.0.0.1)");
  opt("master-port", a->master_port,
      "Node 0's rendezvous port (default: $MASTER_PORT, else 29500; the rendezvous waits "
      "$ARBOR_RENDEZVOUS_TIMEOUT_S seconds, default 300)")
      ->check(cli::integer(1, 65535));
  cmd->add_option("--config", *config, "JSON file with the same keys as the long flags")
      ->envname("ARBOR_CONFIG")
      ->check(CLI::ExistingFile);
  cmd->callback([a, config, keys, cmd] {
    if (!config->empty()) apply_config_file(*cmd, *keys, *config);
    const int rc = run_serve(*a);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

int default_cpu_kv_cache_tokens(const LlamaConfig& c, int block_size) {
  constexpr int64_t kBudgetBytes = int64_t(4) << 30;
  const int64_t bytes_per_token =
      std::max<int64_t>(1, int64_t(2) * c.num_layers * c.num_kv_heads * c.head_dim * 4);
  const int64_t tokens =
      std::min(int64_t(4) * c.max_position_embeddings, kBudgetBytes / bytes_per_token);
  return int(std::max<int64_t>(tokens / block_size, 1) * block_size);
}

std::string http_url(const std::string& host, int port) {
  const bool ipv6 = host.find(':') != std::string::npos && host.front() != '[';
  return "http://" + (ipv6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
}

}  // namespace arbor
