// Offline serving benchmark: N requests of random prompt ids, all queued at once, run to
// completion through the Engine (continuous batching, chunked prefill) on the CUDA runner.
// Prints output tok/s, time to first token, mean/p99 inter-token latency, the achieved
// batch size, where each step's time goes (scheduler + host work vs the model forward),
// and the decode roofline at the achieved batch: (weight bytes + KV bytes read per step)
// over the device's measured bandwidth.
//
//   arbor_bench_serve_offline --model bench/models/llama-3.1-8b --load-format dummy
//       --num-requests 256 --prompt-len 512 --output-len 256
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "bench/bandwidth.h"
#include "bench/model_bytes.h"
#include "engine/engine.h"
#include "models/config.h"
#include "models/llama_cuda.h"
#include "tokenizer/tokenizer.h"

namespace {

using namespace arbor;
using Clock = std::chrono::steady_clock;

// Stands in when the model folder has no tokenizer (dummy weights): one letter per id, so
// the detokenizer still runs but costs little.
class LetterTokenizer : public Tokenizer {
 public:
  explicit LetterTokenizer(int vocab) : vocab_(vocab) {}
  std::vector<int32_t> encode(std::string_view, bool) const override { return {}; }
  std::string decode(std::span<const int32_t> ids, bool) const override {
    std::string s;
    for (int32_t id : ids) s += char('a' + (id % 26));
    return s;
  }
  int vocab_size() const override { return vocab_; }
  std::optional<int32_t> bos_id() const override { return std::nullopt; }
  std::optional<int32_t> eos_id() const override { return std::nullopt; }
  bool is_special(int32_t) const override { return false; }
  std::string id_to_piece(int32_t id) const override { return std::string(1, char('a' + id % 26)); }

 private:
  int vocab_;
};

// Token arrival times of every sequence; `step_*` accumulate what the current step sampled.
struct Recorder {
  struct Seq {
    Clock::time_point added;
    std::vector<Clock::time_point> token_times;
  };
  std::map<uint64_t, Seq> seqs;
  int64_t step_sampled = 0;
  int64_t step_kv_tokens = 0;  // context tokens the sampled sequences' attention read
};

class TimingSink : public RequestSink {
 public:
  TimingSink(Recorder& rec, uint64_t key) : rec_(rec), key_(key) {}
  void on_output(const RequestOutput& o) override {
    if (o.token_id < 0) return;
    rec_.seqs[key_].token_times.push_back(Clock::now());
    ++rec_.step_sampled;
    rec_.step_kv_tokens += o.num_prompt_tokens + o.num_output_tokens - 1;
  }

 private:
  Recorder& rec_;
  uint64_t key_;
};

struct StepRecord {
  double seconds = 0, forward = 0;
  int64_t sampled = 0, tokens = 0, kv_tokens = 0;
};

double percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t i = std::min(v.size() - 1, size_t(p / 100.0 * double(v.size() - 1) + 0.5));
  return v[i];
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Offline serving benchmark: throughput and latency of the engine"};
  std::string model, load_format = "auto", tokenizer_dir;
  int num_requests = 256, prompt_len = 512, output_len = 256;
  int max_num_seqs = 256, max_num_batched_tokens = 8192, block_size = 16;
  float gpu_mem = 0.90f, temperature = 0.0f;
  double bandwidth_gbs = 0;  // measure (a fixed default was the H100's and misread an H200)
  bool no_prefix_caching = false, no_graphs = false;
  uint64_t seed = 0;
  app.add_option("--model", model, "model folder (config.json [+ safetensors])")->required();
  app.add_option("--load-format", load_format, "auto or dummy (random weights)")
      ->check(CLI::IsMember({"auto", "dummy"}));
  app.add_option("--tokenizer", tokenizer_dir, "tokenizer folder (default: --model if it has one)");
  app.add_option("--num-requests", num_requests)->check(CLI::Range(1, 1 << 20));
  app.add_option("--prompt-len", prompt_len)->check(CLI::Range(1, 1 << 20));
  app.add_option("--output-len", output_len)->check(CLI::Range(1, 1 << 20));
  app.add_option("--max-num-seqs", max_num_seqs)->check(CLI::Range(1, 4096));
  app.add_option("--max-num-batched-tokens", max_num_batched_tokens)->check(CLI::Range(1, 1 << 20));
  app.add_option("--block-size", block_size)->check(CLI::Range(1, 1024));
  app.add_option("--gpu-memory-utilization", gpu_mem)->check(CLI::Range(0.05, 1.0));
  app.add_option("--temperature", temperature, "0: greedy")->check(CLI::Range(0.0, 2.0));
  app.add_option("--bandwidth-gbs", bandwidth_gbs,
                 "device read bandwidth in GB/s for the roofline; 0 (default): measure it "
                 "here first (H100 SXM measured: 3090)");
  app.add_flag("--no-prefix-caching", no_prefix_caching);
  app.add_flag("--no-cuda-graphs", no_graphs);
  app.add_option("--seed", seed, "seed of the random prompts");
  CLI11_PARSE(app, argc, argv);

  try {
    CudaRunnerOptions ro;
    ro.block_size = block_size;
    ro.gpu_memory_utilization = gpu_mem;
    ro.max_batch_tokens = max_num_batched_tokens;
    ro.max_num_seqs = max_num_seqs;
    ro.dummy_weights = load_format == "dummy";
    ro.dummy_seed = seed;
    ro.cuda_graphs = !no_graphs;
    bool bandwidth_measured = false;
    if (bandwidth_gbs <= 0) {  // before the runner takes the memory the probe needs
      bandwidth_gbs = arbor::bench::measure_read_bandwidth() / 1e9;
      bandwidth_measured = true;
    }
    const auto t_load = Clock::now();
    std::unique_ptr<ModelRunner> runner = make_cuda_runner(model, ro);
    const double load_s = std::chrono::duration<double>(Clock::now() - t_load).count();
    const LlamaConfig& cfg = runner->config();

    std::unique_ptr<Tokenizer> tokenizer;
    const std::filesystem::path tok_dir = tokenizer_dir.empty() ? model : tokenizer_dir;
    if (std::filesystem::exists(tok_dir / "tokenizer.model"))
      tokenizer = load_tokenizer(tok_dir);
    else
      tokenizer = std::make_unique<LetterTokenizer>(cfg.vocab_size);
    const bool real_tokenizer = !dynamic_cast<LetterTokenizer*>(tokenizer.get());

    EngineConfig ec;
    ec.max_num_seqs = max_num_seqs;
    ec.max_num_batched_tokens = max_num_batched_tokens;
    ec.enable_prefix_caching = !no_prefix_caching;
    Engine engine(*runner, *tokenizer, ec);

    std::mt19937_64 rng(seed);
    const int id_limit = std::min(cfg.vocab_size, 128000);  // below Llama-3's special ids
    Recorder rec;
    auto make_request = [&](int len, int out_len, uint64_t key) {
      Request r;
      for (int i = 0; i < len; ++i) r.prompt_ids.push_back(int32_t(rng() % uint64_t(id_limit)));
      r.max_tokens = out_len;
      r.ignore_eos = true;
      r.sampling.temperature = temperature;
      r.sampling.seed = seed + key;
      r.sink = std::make_shared<TimingSink>(rec, key);
      return r;
    };

    // Warm-up (first launches, allocator): a few short requests, not measured.
    for (int i = 0; i < 4; ++i)
      engine.add_request(make_request(std::min(prompt_len, 64), 8, ~0ull - i));
    engine.run_until_idle();
    rec = Recorder{};
    const EngineStats s0 = engine.stats();

    const auto t0 = Clock::now();
    for (int i = 0; i < num_requests; ++i) {
      rec.seqs[i].added = Clock::now();
      engine.add_request(make_request(prompt_len, output_len, uint64_t(i)));
    }
    std::vector<StepRecord> steps;
    EngineStats prev = engine.stats();
    for (bool more = true; more;) {
      rec.step_sampled = rec.step_kv_tokens = 0;
      const auto ts = Clock::now();
      more = engine.step();
      const EngineStats now = engine.stats();
      StepRecord r;
      r.seconds = std::chrono::duration<double>(Clock::now() - ts).count();
      r.forward = now.forward_seconds - prev.forward_seconds;
      r.tokens = int64_t(now.batched_tokens_total - prev.batched_tokens_total);
      r.sampled = rec.step_sampled;
      r.kv_tokens = rec.step_kv_tokens;
      if (r.tokens > 0) steps.push_back(r);
      prev = now;
    }
    const double total_s = std::chrono::duration<double>(Clock::now() - t0).count();
    const EngineStats s1 = engine.stats();

    // Latencies.
    std::vector<double> itl, ttft;
    int64_t out_tokens = 0;
    for (const auto& [key, seq] : rec.seqs) {
      if (seq.token_times.empty()) continue;
      out_tokens += int64_t(seq.token_times.size());
      ttft.push_back(std::chrono::duration<double>(seq.token_times[0] - seq.added).count());
      for (size_t i = 1; i < seq.token_times.size(); ++i)
        itl.push_back(
            std::chrono::duration<double>(seq.token_times[i] - seq.token_times[i - 1]).count());
    }
    auto mean = [](const std::vector<double>& v) {
      return v.empty() ? 0.0 : std::accumulate(v.begin(), v.end(), 0.0) / double(v.size());
    };

    // Steps: all, and decode-only ones (every token sampled) grouped by batch size.
    double step_sum = 0, fwd_sum = 0;
    int64_t sampled_sum = 0;
    for (const StepRecord& r : steps) {
      step_sum += r.seconds;
      fwd_sum += r.forward;
      sampled_sum += r.sampled;
    }
    const double wbytes = arbor::bench::weight_bytes_read_per_step(cfg),
                 kv_tok = arbor::bench::kv_bytes_per_token(cfg);
    const double bw = bandwidth_gbs * 1e9;
    struct Bucket {
      int n = 0;
      double seconds = 0, forward = 0, roofline = 0, batch = 0;
    };
    std::map<int, Bucket> buckets;  // by batch size rounded up to a power of two
    for (const StepRecord& r : steps) {
      if (r.tokens != r.sampled) continue;  // has prefill work
      int b = 1;
      while (b < r.sampled) b *= 2;
      Bucket& k = buckets[b];
      ++k.n;
      k.seconds += r.seconds;
      k.forward += r.forward;
      k.batch += double(r.sampled);
      k.roofline += (wbytes + kv_tok * double(r.kv_tokens)) / bw;
    }

    char date[64];
    const std::time_t now_t = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&now_t));
    std::printf("# arbor serve-offline\n\n");
    std::printf("| | |\n|---|---|\n");
    std::printf("| device | %s |\n| date | %s |\n", runner->device_name().c_str(), date);
    std::printf("| model | %s (%s weights, loaded in %.1f s) |\n", model.c_str(),
                load_format == "dummy" ? "dummy" : "real", load_s);
    std::printf("| tokenizer | %s |\n",
                real_tokenizer ? tok_dir.c_str() : "synthetic (1 letter per id)");
    std::printf("| requests | %d × (%d prompt + %d output tokens), temperature %g |\n",
                num_requests, prompt_len, output_len, temperature);
    std::printf(
        "| engine | max_num_seqs %d, max_num_batched_tokens %d, block %d, %d KV blocks, "
        "prefix caching %s |\n",
        engine.config().max_num_seqs, engine.config().max_num_batched_tokens, block_size,
        runner->num_kv_blocks(), ec.enable_prefix_caching ? "on" : "off");
    std::printf("| total time | %.2f s, %zu steps, %llu preemptions |\n", total_s, steps.size(),
                static_cast<unsigned long long>(s1.preemptions_total - s0.preemptions_total));
    std::printf("| output throughput | **%.0f tok/s** (total %.0f tok/s with prompts) |\n",
                double(out_tokens) / total_s,
                double(out_tokens + int64_t(num_requests) * prompt_len) / total_s);
    std::printf("| time to first token | mean %.1f ms, p99 %.1f ms |\n", 1e3 * mean(ttft),
                1e3 * percentile(ttft, 99));
    std::printf("| inter-token latency | **mean %.2f ms, p99 %.2f ms** |\n", 1e3 * mean(itl),
                1e3 * percentile(itl, 99));
    std::printf("| mean batch size | %.1f sequences sampled per step |\n",
                steps.empty() ? 0.0 : double(sampled_sum) / double(steps.size()));
    std::printf(
        "| step time split | forward %.1f%%, scheduler + host %.2f%% (schedule %.2f%%, "
        "sampling/stops/sinks %.2f%%) |\n",
        100 * fwd_sum / step_sum, 100 * (step_sum - fwd_sum) / step_sum,
        100 * (s1.schedule_seconds - s0.schedule_seconds) / step_sum,
        100 * (s1.postprocess_seconds - s0.postprocess_seconds) / step_sum);
    std::printf(
        "| roofline inputs | weights %.2f GB/step, KV %.1f KiB/token, bandwidth %.0f GB/s (%s) |\n",
        wbytes / 1e9, kv_tok / 1024, bandwidth_gbs, bandwidth_measured ? "measured" : "given");

    std::printf(
        "\nDecode-only steps by batch size (roofline: (weights + KV read) / bandwidth):\n\n");
    std::printf(
        "| batch ≤ | steps | mean batch | step ms | forward ms | host %% | roofline ms | "
        "%% of roofline | tok/s | roofline tok/s |\n");
    std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for (const auto& [b, k] : buckets) {
      const double step_ms = 1e3 * k.seconds / k.n, fwd_ms = 1e3 * k.forward / k.n;
      const double roof_ms = 1e3 * k.roofline / k.n, batch = k.batch / k.n;
      std::printf("| %d | %d | %.1f | %.2f | %.2f | %.2f | %.2f | %.0f%% | %.0f | %.0f |\n", b, k.n,
                  batch, step_ms, fwd_ms, 100 * (step_ms - fwd_ms) / step_ms, roof_ms,
                  100 * roof_ms / step_ms, 1e3 * batch / step_ms, 1e3 * batch / roof_ms);
    }
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
