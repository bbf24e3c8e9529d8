#include "server/generate_command.h"

#include <chrono>
#include <cstdio>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>

#include <omp.h>
#include <spdlog/spdlog.h>

#include "engine/generate.h"
#include "models/llama.h"
#include "models/model_runner.h"
#ifdef ARBOR_WITH_CUDA
#include "models/llama_cuda.h"
#endif
#include "server/model_path.h"
#include "tokenizer/tokenizer.h"

namespace arbor {
namespace {

struct GenerateArgs {
  std::string model;
  std::string prompt;
  std::string prompt_file;
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

// The model on the requested device: "cuda" when asked or when "auto" finds a GPU in a
// CUDA build, else the CPU reference engine with a cache just large enough for the request.
std::unique_ptr<ModelRunner> make_runner(const GenerateArgs& args, const std::filesystem::path& dir,
                                         int tokens_needed) {
  bool use_cuda = args.device == "cuda";
#ifdef ARBOR_WITH_CUDA
  std::string why;
  if (args.device == "auto") use_cuda = cuda_available(&why);
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

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read prompt file " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int run_generate(const GenerateArgs& args) {
  if (args.threads > 0) omp_set_num_threads(args.threads);
  const std::filesystem::path dir =
      args.model.empty() ? default_model_dir() : std::filesystem::path(args.model);
  const auto t0 = std::chrono::steady_clock::now();
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(dir);
  const std::string prompt =
      args.prompt_file.empty() ? args.prompt : read_text_file(args.prompt_file);
  const std::vector<int32_t> ids = tokenizer->encode(prompt, /*add_special_tokens=*/true);
  std::unique_ptr<ModelRunner> runner =
      make_runner(args, dir, int(ids.size()) + std::max(args.max_tokens, 0));
  const double load_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const LlamaConfig& c = runner->config();
  spdlog::info("loaded {} ({} layers, hidden {}, vocab {}) in {:.2f} s on {}", dir.string(),
               c.num_layers, c.hidden_size, c.vocab_size, load_s, runner->device_name());

  // Unset sampling flags fall back to the model's generation_config.json, then to the
  // usual defaults (temperature 1, no top-k/top-p), as vLLM does.
  GenerateOptions opts;
  SamplingParams& s = opts.sampling;
  s.temperature = args.temperature.value_or(c.generation.temperature.value_or(1.0f));
  s.top_p = args.top_p.value_or(c.generation.top_p.value_or(1.0f));
  s.top_k = args.top_k.value_or(c.generation.top_k.value_or(0));
  s.min_p = args.min_p.value_or(0.0f);
  s.repetition_penalty =
      args.repetition_penalty.value_or(c.generation.repetition_penalty.value_or(1.0f));
  s.presence_penalty = args.presence_penalty;
  s.frequency_penalty = args.frequency_penalty;
  s.seed = args.seed;
  opts.max_tokens = args.max_tokens;
  opts.ignore_eos = args.ignore_eos;
  opts.prefill_chunk = args.prefill_chunk;

  std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  GenerateResult r = generate(*runner, *tokenizer, ids, opts, [](std::string_view text) {
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
  });
  std::fputc('\n', stdout);
  std::fflush(stdout);

  const int n = int(r.output_ids.size());
  // The first token comes out of the prefill step; decode speed counts the rest.
  const double decode_tps = n > 1 && r.decode_seconds > 0 ? (n - 1) / r.decode_seconds : 0.0;
  std::fprintf(stderr,
               "prompt: %d tokens in %.1f ms (%.0f tok/s) | generated: %d tokens in %.2f s "
               "(%.1f tok/s) | finish: %s\n",
               r.prompt_tokens, r.prefill_seconds * 1e3,
               r.prefill_seconds > 0 ? r.prompt_tokens / r.prefill_seconds : 0.0, n,
               r.decode_seconds, decode_tps, finish_reason_name(r.finish_reason));
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto args = std::make_shared<GenerateArgs>();
  CLI::App* cmd = app.add_subcommand("generate", "Generate text from a prompt (CPU backend)");
  cmd->add_option("-m,--model", args->model,
                  "Hugging Face model folder (default: $ARBOR_MODEL or the demo model)");
  auto* prompt = cmd->add_option("-p,--prompt", args->prompt, "Prompt text");
  auto* prompt_file =
      cmd->add_option("--prompt-file", args->prompt_file, "Read the prompt from a file")
          ->check(CLI::ExistingFile);
  prompt->excludes(prompt_file);
  cmd->add_option("-n,--max-tokens", args->max_tokens, "Tokens to generate")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--temperature", args->temperature,
                  "0 = greedy (default: generation_config.json, else 1)");
  cmd->add_option("--top-k", args->top_k, "Keep the k most likely tokens (0 = off)");
  cmd->add_option("--top-p", args->top_p, "Nucleus sampling mass (1 = off)");
  cmd->add_option("--min-p", args->min_p, "Drop tokens below min_p × p(best) (0 = off)");
  cmd->add_option("--repetition-penalty", args->repetition_penalty, "HF-style (1 = off)");
  cmd->add_option("--presence-penalty", args->presence_penalty, "OpenAI-style, [-2, 2]");
  cmd->add_option("--frequency-penalty", args->frequency_penalty, "OpenAI-style, [-2, 2]");
  cmd->add_option("--seed", args->seed, "Seed for reproducible sampling");
  cmd->add_flag("--ignore-eos", args->ignore_eos, "Keep generating past end-of-sequence");
  cmd->add_option("-t,--threads", args->threads, "CPU threads (default: all cores)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--block-size", args->block_size, "KV cache block size in tokens")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--prefill-chunk", args->prefill_chunk, "Prompt tokens per prefill step")
      ->check(CLI::Range(1, 1 << 20));
  cmd->add_option("--device", args->device, "auto (GPU if present), cuda or cpu")
      ->check(CLI::IsMember({"auto", "cuda", "cpu"}));
  cmd->add_option("--load-format", args->load_format,
                  "auto (safetensors) or dummy (random weights from config.json, GPU only)")
      ->check(CLI::IsMember({"auto", "dummy"}));
  cmd->add_option("--gpu-memory-utilization", args->gpu_memory_utilization,
                  "Fraction of GPU memory for weights, activations and KV cache")
      ->check(CLI::Range(0.05, 1.0));
  cmd->callback([args] {
    if (args->prompt.empty() && args->prompt_file.empty())
      throw CLI::ValidationError("--prompt", "give a prompt with --prompt or --prompt-file");
    int rc = run_generate(*args);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace arbor
