// End-to-end decode speed of the CUDA model: tokens/s for each (batch, context) against the
// weight + KV read roofline at the device's measured read bandwidth.
//
//   arbor_bench_decode --model bench/models/llama-3.1-8b --batch 1,64 --context 1024,32768
//
// Weights are random (--load-format dummy semantics: only config.json is read). Every
// sequence has its own KV blocks (shared blocks would be served from L2 and flatter the
// numbers); the first sequence is prefilled for real, the others decode over whatever their
// blocks hold, which costs the same. A (batch, context) whose KV does not fit in the GPU's
// memory is reported as such. Each step is a real decode step: forward + greedy sampling on
// the GPU, timed on the host from batch building to token ids back.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <exception>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "bench/bandwidth.h"
#include "bench/int_list.h"
#include "bench/model_bytes.h"
#include "engine/batch_builder.h"
#include "models/llama_cuda.h"

namespace {

int run(int argc, char** argv) {
  CLI::App app{"arbor decode benchmark (CUDA, dummy weights)"};
  std::string model = "bench/models/llama-3.1-8b", batches = "1,64", contexts = "1024,32768";
  int steps = 64, warmup = 8;
  bool graphs = true;
  bool gemv = true;
  // Default on, off with ARBOR_FUSED_GEMV=0, so that tools/device_decode_attention.sh can A/B
  // it as a variant's environment setting.
  const char* fused_env = std::getenv("ARBOR_FUSED_GEMV");
  bool fused_gemv = !(fused_env && std::string(fused_env) == "0");
  const char* outputs_env = std::getenv("ARBOR_FUSED_GEMV_OUTPUTS");
  bool fused_outputs = !(outputs_env && std::string(outputs_env) == "0");
  bool gemm_autotune = true;
  int prefill_tokens = 8192;
  std::string peer;
  app.add_option("--model", model, "folder with config.json");
  app.add_option("--batch", batches, "comma-separated batch sizes");
  app.add_option("--context", contexts, "comma-separated context lengths");
  app.add_option("--steps", steps, "timed decode steps");
  app.add_option("--warmup", warmup, "untimed decode steps first");
  app.add_option("--graphs", graphs, "capture decode steps in CUDA graphs (1/0)");
  app.add_option("--gemv", gemv, "steps of <= 2 tokens use the gemv kernel, else cuBLASLt (1/0)");
  app.add_option("--fused-gemv", fused_gemv,
                 "single-token steps compute RMSNorm inside the gemv (1/0; default 1, or "
                 "ARBOR_FUSED_GEMV)");
  app.add_option("--fused-gemv-outputs", fused_outputs,
                 "steps of <= 2 tokens compute RoPE + KV write and SiLU·mul in the gemv (1/0; "
                 "default 1, or ARBOR_FUSED_GEMV_OUTPUTS)");
  app.add_option("--gemm-autotune", gemm_autotune,
                 "prefill products keep the fastest cuBLASLt candidate, else its first (1/0)");
  app.add_option("--prefill-tokens", prefill_tokens,
                 "also time one prefill step of this many prompt tokens (0: skip)");
  app.add_option("--peer", peer,
                 "command printing JSON lines {batch, context, tok_s, impl} for the same shapes, "
                 "e.g. \"python3 tools/bench_hf_decode.py\"; run first, same GPU");
  CLI11_PARSE(app, argc, argv);
  const std::vector<int> bs = arbor::bench::parse_int_list(batches),
                         cs = arbor::bench::parse_int_list(contexts);
  const int max_b = *std::max_element(bs.begin(), bs.end());

  // The peer runs first, alone on the GPU; its numbers join the table.
  std::map<std::pair<int, int>, double> peer_tok_s;
  std::string peer_impl;
  if (!peer.empty()) {
    const std::string cmd = peer + " --model " + model + " --batch " + batches + " --context " +
                            contexts + " --steps " + std::to_string(steps);
    std::fprintf(stderr, "peer: %s\n", cmd.c_str());
    if (FILE* p = ::popen(cmd.c_str(), "r")) {
      char line[4096];
      while (std::fgets(line, sizeof line, p)) {
        try {
          const auto j = nlohmann::json::parse(line);
          peer_tok_s[{j.at("batch").get<int>(), j.at("context").get<int>()}] =
              j.at("tok_s").get<double>();
          peer_impl = j.value("impl", "");
        } catch (const std::exception&) {
          std::fputs(line, stderr);  // not a result line: show it
        }
      }
      ::pclose(p);
    }
  }

  arbor::CudaRunnerOptions o;
  o.dummy_weights = true;
  o.max_num_seqs = std::max(max_b, 1);
  o.max_batch_tokens = 8192;
  o.cuda_graphs = graphs;
  o.small_batch_gemv = gemv;
  o.fused_gemv_norms = fused_gemv;
  o.fused_gemv_outputs = fused_outputs;
  o.gemm_autotune = gemm_autotune;
  const int block_size = o.block_size;
  auto runner = arbor::make_cuda_runner(model, o);
  const arbor::LlamaConfig& c = runner->config();

  const double read_bw = arbor::bench::measure_read_bandwidth();
  const double weight_bytes = arbor::bench::weight_bytes(c);
  const double kv_bytes_per_token = arbor::bench::kv_bytes_per_token(c);

  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::gmtime(&now));
  std::printf(
      "# arbor decode benchmark, %s, %s, %s (%d layers, hidden %d), graphs %s, gemv %s, norms "
      "fused into the gemv for steps of <= %d tokens, RoPE and SiLU·mul for <= %d, gemm "
      "autotune %s\n",
      date, runner->device_name().c_str(), model.c_str(), c.num_layers, c.hidden_size,
      graphs ? "on" : "off", gemv ? "on" : "off", arbor::cuda_fused_gemv_rows(*runner),
      arbor::cuda_paired_gemv_rows(*runner), gemm_autotune ? "on" : "off");
  std::printf("# measured read bandwidth %.0f GB/s; weights %.2f GB\n", read_bw * 1e-9,
              weight_bytes * 1e-9);
  if (!peer_impl.empty()) std::printf("# peer: %s\n", peer_impl.c_str());
  std::printf(
      "| batch | context | step ms | tok/s | roofline tok/s | %% of roofline | peer tok/s |\n");
  std::printf("|---|---|---|---|---|---|---|\n");

  if (prefill_tokens > 0) {
    // One prompt of prefill_tokens in a single step (max_batch_tokens permitting), after a
    // warm-up step; FLOPs = 2 · parameters (lm_head only for the last token) · tokens plus
    // the causal attention (QKᵀ and PV, half the square).
    const int n = std::min(prefill_tokens, runner->max_batch_tokens());
    std::vector<int32_t> tokens(n);
    for (int i = 0; i < n; ++i) tokens[i] = int32_t((i * 7919) % c.vocab_size);
    std::vector<int32_t> table((n + block_size - 1) / block_size);
    for (size_t i = 0; i < table.size(); ++i) table[i] = int32_t(i);
    arbor::ScheduledChunk chunk{tokens, table, 0, n, true};
    const arbor::ForwardBatch batch = arbor::build_forward_batch({&chunk, 1}, block_size);
    std::vector<int32_t> ids;
    runner->forward_greedy(batch, ids);
    std::vector<double> times;
    for (int r = 0; r < 5; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      runner->forward_greedy(batch, ids);
      times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    std::sort(times.begin(), times.end());
    const double t = times[times.size() / 2];
    const double matmul_params = weight_bytes / 2.0 - double(c.vocab_size) * c.hidden_size *
                                                          (c.tie_word_embeddings ? 1.0 : 2.0);
    const double flops = 2.0 * matmul_params * n +
                         2.0 * 2.0 * c.num_layers * c.num_heads * c.head_dim * double(n) * n / 2.0;
    std::printf(
        "# prefill of %d tokens: %.2f ms, %.0f tok/s, %.0f TFLOP/s (%.1f%% of 989 dense bf16)\n", n,
        t * 1e3, n / t, flops / t * 1e-12, 100.0 * flops / t / 989e12);
  }

  for (int ctx : cs) {
    // Prefill one sequence to `ctx` tokens (chunked), so the KV cache holds real values.
    std::vector<int32_t> tokens(ctx + warmup + steps + 1);
    for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7919) % c.vocab_size);
    const int blocks_per_seq = int((tokens.size() + block_size - 1) / block_size);
    std::vector<int32_t> table(blocks_per_seq);
    for (size_t i = 0; i < table.size(); ++i) table[i] = int32_t(i);
    std::vector<int32_t> ids;
    for (int start = 0; start < ctx; start += runner->max_batch_tokens()) {
      arbor::ScheduledChunk chunk{tokens, table, start,
                                  std::min(runner->max_batch_tokens(), ctx - start), true};
      runner->forward_greedy(arbor::build_forward_batch({&chunk, 1}, block_size), ids);
    }
    for (int b : bs) {
      if (int64_t(b) * blocks_per_seq > runner->num_kv_blocks()) {
        std::printf("| %d | %d | does not fit: KV %.1f GB, cache %.1f GB | | | | |\n", b, ctx,
                    double(b) * blocks_per_seq * block_size * kv_bytes_per_token * 1e-9,
                    double(runner->num_kv_blocks()) * block_size * kv_bytes_per_token * 1e-9);
        continue;
      }
      std::vector<std::vector<int32_t>> tables(b, table);
      for (int s = 1; s < b; ++s)
        for (int i = 0; i < blocks_per_seq; ++i) tables[s][i] = s * blocks_per_seq + i;
      double total_s = 0;
      for (int step = 0; step < warmup + steps; ++step) {
        const int pos = ctx + step;  // every sequence decodes the token at `pos`
        std::vector<arbor::ScheduledChunk> chunks;
        for (int s = 0; s < b; ++s) chunks.push_back({tokens, tables[s], pos, 1, true});
        const arbor::ForwardBatch batch = arbor::build_forward_batch(chunks, block_size);
        const auto t0 = std::chrono::steady_clock::now();
        runner->forward_greedy(batch, ids);
        const double s =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        if (step >= warmup) total_s += s;
      }
      const double step_s = total_s / steps;
      const double avg_ctx = ctx + warmup + steps / 2.0;
      const double bytes = weight_bytes + b * avg_ctx * kv_bytes_per_token;
      const double roofline = b / (bytes / read_bw);
      const auto it = peer_tok_s.find({b, ctx});
      char peer_cell[32] = "-";
      if (it != peer_tok_s.end()) std::snprintf(peer_cell, sizeof peer_cell, "%.1f", it->second);
      std::printf("| %d | %d | %.3f | %.1f | %.1f | %.1f%% | %s |\n", b, ctx, step_s * 1e3,
                  b / step_s, roofline, 100.0 * (b / step_s) / roofline, peer_cell);
      std::fflush(stdout);
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {  // no GPU, model does not fit, bad folder: say so
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
