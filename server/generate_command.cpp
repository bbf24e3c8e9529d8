#include "server/generate_command.h"

#include <signal.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include <omp.h>
#include <spdlog/spdlog.h>

#include "engine/generate.h"
#include "models/llama.h"
#include "models/model_runner.h"
#ifdef ARBOR_WITH_CUDA
#include "models/llama_cuda.h"
#endif
#include "server/cli_checks.h"
#include "server/model_path.h"
#include "tokenizer/tokenizer.h"

namespace arbor {
namespace {

struct GenerateArgs {
  std::string model;
  std::optional<std::string> prompt, prompt_file;
  int max_tokens = 128;
  std::optional<float> temperature, top_p, min_p, repetition_penalty;
  std::optional<int> top_k;
  float presence_penalty = 0, frequency_penalty = 0;
  std::optional<uint64_t> seed;
  bool ignore_eos = false;
  int threads = 0;
  int block_size = 16;
  int prefill_chunk = 512;
  std::string device = "auto";
  std::string load_format = "auto";
  float gpu_memory_utilization = 0.9f;
};

// The sampling flags over the model's defaults: unset flags fall back to its
// generation_config.json, then to the usual defaults (temperature 1, no top-k/top-p), as
// vLLM does.
SamplingParams sampling_params(const GenerateArgs& args, const GenerationDefaults& model) {
  SamplingParams s;
  s.temperature = args.temperature.value_or(model.temperature.value_or(1.0f));
  s.top_p = args.top_p.value_or(model.top_p.value_or(1.0f));
  s.top_k = args.top_k.value_or(model.top_k.value_or(0));
  s.min_p = args.min_p.value_or(0.0f);
  s.repetition_penalty = args.repetition_penalty.value_or(model.repetition_penalty.value_or(1.0f));
  s.presence_penalty = args.presence_penalty;
  s.frequency_penalty = args.frequency_penalty;
  s.seed = args.seed;
  return s;
}

// The model on the requested device: "cuda" when asked or when "auto" finds a GPU in a
// CUDA build, else the CPU reference engine with a cache just large enough for the request.
std::unique_ptr<ModelRunner> make_runner(const GenerateArgs& args, const std::filesystem::path& dir,
                                         int tokens_needed) {
  bool use_cuda = args.device == "cuda";
#ifdef ARBOR_WITH_CUDA
  std::string why;
  if (args.device == "auto") use_cuda = cuda_available();
  if (args.device == "cuda" && !cuda_available(&why))
    throw std::runtime_error("--device cuda: no CUDA GPU is visible (" + why + ")");
  if (use_cuda) {
    CudaRunnerOptions o;
    o.block_size = args.block_size;
    o.gpu_memory_utilization = args.gpu_memory_utilization;
    o.dummy_weights = args.load_format == "dummy";
    o.max_batch_tokens = std::max(args.prefill_chunk, 1);
    o.max_num_seqs = 8;
    return make_cuda_runner(dir, o);
  }
#else
  if (use_cuda) throw std::runtime_error("this arbor was built without the CUDA backend");
#endif
  if (args.load_format == "dummy")
    throw std::runtime_error("--load-format dummy needs the CUDA backend (--device cuda)");
  const int blocks = (tokens_needed + args.block_size - 1) / args.block_size;
  return std::make_unique<CpuModelRunner>(LlamaCpu::load(dir), blocks, args.block_size);
}

std::string read_prompt_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read prompt file " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (ss.str().empty()) throw std::runtime_error("the prompt file " + path + " is empty");
  return ss.str();
}

// SIGINT while generating: set by the handler, read before every model step. (A signal
// handler can only reach a flag like this one.)
volatile std::sig_atomic_t g_interrupted = 0;

// Catches the first SIGINT while alive (a second one kills the process as usual).
class SigintCatcher {
 public:
  SigintCatcher() {
    g_interrupted = 0;
    struct sigaction sa {};
    sa.sa_handler = [](int) { g_interrupted = 1; };
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESETHAND;
    sigaction(SIGINT, &sa, &previous_);
  }
  ~SigintCatcher() { sigaction(SIGINT, &previous_, nullptr); }
  SigintCatcher(const SigintCatcher&) = delete;
  SigintCatcher& operator=(const SigintCatcher&) = delete;

 private:
  struct sigaction previous_ {};
};

void print_summary(int prompt_tokens, double prefill_s, int generated, double decode_s,
                   const char* finish) {
  // The first token comes out of the prefill step; decode speed counts the rest.
  const double decode_tps = generated > 1 && decode_s > 0 ? (generated - 1) / decode_s : 0.0;
  std::fprintf(stderr,
               "prompt: %d tokens in %.1f ms (%.0f tok/s) | generated: %d tokens in %.2f s "
               "(%.1f tok/s) | finish: %s\n",
               prompt_tokens, prefill_s * 1e3, prefill_s > 0 ? prompt_tokens / prefill_s : 0.0,
               generated, decode_s, decode_tps, finish);
}

int run_generate(const GenerateArgs& args) {
  // Everything that can be checked without the model, before anything heavy is loaded.
  if (!args.prompt && !args.prompt_file)
    throw std::invalid_argument("give a prompt with --prompt or --prompt-file");
  if (args.prompt && args.prompt->empty())
    throw std::invalid_argument("--prompt is empty: give the text to continue");
  try {
    sampling_params(args, {}).validate(/*vocab_size=*/1);
  } catch (const std::invalid_argument& e) {
    // "top_p must be in (0, 1], got 7" names the field; say the flag: "--top-p must ..."
    std::string why = e.what();
    std::replace(why.begin(), why.begin() + std::min(why.find(' '), why.size()), '_', '-');
    throw std::invalid_argument("--" + why);
  }
  const std::string prompt = args.prompt ? *args.prompt : read_prompt_file(*args.prompt_file);

  if (args.threads > 0) omp_set_num_threads(args.threads);
  const std::filesystem::path dir =
      args.model.empty() ? default_model_dir() : std::filesystem::path(args.model);
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(dir);
  const std::vector<int32_t> ids = tokenizer->encode(prompt, /*add_special_tokens=*/true);
  // The prompt must leave room for a token; generation stops at the context, so the KV
  // cache never needs more than the context.
  const int context = load_llama_config(dir).max_position_embeddings;
  if (ids.empty()) throw std::invalid_argument("the prompt encodes to no tokens");
  if (ids.size() >= size_t(context))
    throw std::invalid_argument("the prompt has " + std::to_string(ids.size()) +
                                " tokens; the model's context is " + std::to_string(context) +
                                " tokens");
  const int prompt_tokens = int(ids.size());
  const int max_new = std::min(args.max_tokens, context - prompt_tokens);
  std::unique_ptr<ModelRunner> model = make_runner(args, dir, prompt_tokens + max_new);
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const LlamaConfig& c = model->config();
  spdlog::info("loaded {} ({} layers, hidden {}, vocab {}) in {:.2f} s on {}", dir.string(),
               c.num_layers, c.hidden_size, c.vocab_size, load_s, model->device_name());

  GenerateOptions opts;
  opts.sampling = sampling_params(args, c.generation);
  opts.max_tokens = args.max_tokens;
  opts.ignore_eos = args.ignore_eos;
  opts.prefill_chunk = args.prefill_chunk;

  std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  opts.stop_requested = [] { return g_interrupted != 0; };
  GenerateResult r;
  {
    SigintCatcher catch_sigint;
    r = generate(*model, *tokenizer, ids, opts, [](std::string_view text) {
      std::fwrite(text.data(), 1, text.size(), stdout);
      std::fflush(stdout);
    });
  }
  std::fputc('\n', stdout);
  std::fflush(stdout);
  // SIGINT: the summary of what was done until then, and the shell's exit code for it.
  const bool interrupted = r.finish_reason == FinishReason::kAbort;
  print_summary(r.prompt_tokens, r.prefill_seconds, int(r.output_ids.size()), r.decode_seconds,
                interrupted ? "interrupted" : finish_reason_name(r.finish_reason));
  return interrupted ? 128 + SIGINT : 0;
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand(
      "generate", "Generate text from a prompt (on the GPU if there is one, else the CPU)");
  const double inf = HUGE_VAL;
  cmd->add_option("-m,--model", args->model,
                  "Hugging Face model folder (default: $ARBOR_MODEL or the demo model)");
  auto* prompt = cmd->add_option("-p,--prompt", args->prompt, "Prompt text");
  auto* prompt_file =
      cmd->add_option("--prompt-file", args->prompt_file, "Read the prompt from a file")
          ->check(CLI::ExistingFile);
  prompt->excludes(prompt_file);
  cmd->add_option("-n,--max-tokens", args->max_tokens,
                  "Tokens to generate (stops earlier at EOS or the model's context)")
      ->check(cli::integer(0));
  cmd->add_option("--temperature", args->temperature,
                  "0 = greedy (default: generation_config.json, else 1)")
      ->check(cli::number(-inf, inf));
  cmd->add_option("--top-k", args->top_k, "Keep the k most likely tokens (0 = off)")
      ->check(cli::integer(INT_MIN));
  cmd->add_option("--top-p", args->top_p, "Nucleus sampling mass (1 = off)")
      ->check(cli::number(-inf, inf));
  cmd->add_option("--min-p", args->min_p, "Drop tokens below min_p × p(best) (0 = off)")
      ->check(cli::number(-inf, inf));
  cmd->add_option("--repetition-penalty", args->repetition_penalty, "HF-style (1 = off)")
      ->check(cli::number(-inf, inf));
  cmd->add_option("--presence-penalty", args->presence_penalty, "OpenAI-style, [-2, 2]")
      ->check(cli::number(-inf, inf));
  cmd->add_option("--frequency-penalty", args->frequency_penalty, "OpenAI-style, [-2, 2]")
      ->check(cli::number(-inf, inf));
  cmd->add_option("--seed", args->seed, "Seed for reproducible sampling")
      ->check(CLI::Validator(
          [](std::string& s) -> std::string {
            uint64_t v = 0;
            const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
            if (s.empty() || r.ec != std::errc() || r.ptr != s.data() + s.size())
              return "must be an integer in 0..18446744073709551615, got " + s;
            return "";
          },
          ""));
  cmd->add_flag("--ignore-eos", args->ignore_eos, "Keep generating past end-of-sequence");
  cmd->add_option("-t,--threads", args->threads, "CPU threads, up to 1024 (default, 0: all cores)")
      ->check(cli::integer(0, 1024));
  cmd->add_option("--block-size", args->block_size, "KV cache block size in tokens")
      ->check(cli::integer(1, 1024));
  cmd->add_option("--prefill-chunk", args->prefill_chunk, "Prompt tokens per prefill step")
      ->check(cli::integer(1, 1 << 20));
  cmd->add_option("--device", args->device, "auto (GPU if present), cuda or cpu")
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}));
  cmd->add_option("--load-format", args->load_format,
                  "auto (safetensors) or dummy (random weights from config.json, GPU only)")
      ->check(CLI::IsMember({"auto", "dummy"}));
  cmd->add_option("--gpu-memory-utilization", args->gpu_memory_utilization,
                  "Fraction of GPU memory for weights, activations and KV cache")
      ->check(cli::number(0.05, 1.0));
  cmd->callback([args] {
    const int rc = run_generate(*args);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace arbor
