// Prefill GEMM benchmark: a model's weight products at prefill sizes (m = prompt tokens)
// through cuda::Gemm with the cuBLASLt heuristic's first choice and with autotuning (the
// fastest of the heuristic's candidates, kernels/cuda/gemm.h), side by side in one run with
// torch's F.linear on the same GPU (--peer), in µs and TFLOP/s against the dense bf16 peak.
// With --list it also prints every candidate's time. Sums per step (all layers) show what
// the products cost a prefill step.
//
//   arbor_bench_gemm --model bench/models/llama-3.1-8b --m 2048,8192
//       --peer "python3 tools/bench_torch_gemm.py"   (one command line)
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <map>
#include <string>
#include <tuple>
#include <vector>

#include "bench/int_list.h"
#include "bench/peer.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/ops.h"
#include "models/config.h"

namespace {

using arbor::cuda::bf16;
using arbor::cuda::DeviceArray;

struct Shape {
  std::string name;
  int n, k;
};

using PeerKey = std::tuple<int, int, int>;  // m, n, k

// Runs the peer once for every (m, shape) and reads one JSON object per line:
// {"m": .., "n": .., "k": .., "us": ..} (or "error" instead of "us").
std::map<PeerKey, double> run_peer(const std::string& peer, const std::vector<int>& ms,
                                   const std::vector<Shape>& shapes, int iters) {
  std::map<PeerKey, double> results;
  std::string list;
  for (int m : ms)
    for (const Shape& s : shapes) {
      if (!list.empty()) list += ',';
      list += std::to_string(m);
      list += ':';
      list += std::to_string(s.n);
      list += ':';
      list += std::to_string(s.k);
    }
  const std::string cmd = peer + " --shapes " + list + " --iters " + std::to_string(iters);
  arbor::bench::run_peer_command(cmd, "m", [&results](const nlohmann::json& j) {
    if (j.contains("us") && j["us"].is_number())
      results[{j.value("m", 0), j.value("n", 0), j.value("k", 0)}] = j["us"].get<double>();
    else
      std::fprintf(stderr, "peer: %s\n", j.dump().c_str());  // the shape could not run
  });
  return results;
}

// Mean µs of one product over `iters` back-to-back launches.
double time_gemm(arbor::cuda::Gemm& g, const bf16* x, const bf16* w, int m, int n, int k, bf16* out,
                 int iters, cudaStream_t s) {
  arbor::cuda::Event start, stop;
  start.record(s);
  for (int i = 0; i < iters; ++i) g.run(x, w, m, n, k, out, s);
  stop.record(s);
  return 1e3 * double(stop.elapsed_ms_since(start)) / iters;
}

std::string fmt(double v, const char* f = "%.1f") {
  if (!std::isfinite(v)) return "–";
  char b[32];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"arbor prefill GEMM benchmark (CUDA)"};
  std::string model = "bench/models/llama-3.1-8b", m_list = "2048,8192", peer;
  int iters = 20, rounds = 3;
  double peak_tflops = 989.0;
  bool list = false;
  app.add_option("--model", model, "config.json folder");
  app.add_option("--m", m_list, "rows (prompt tokens per step), comma-separated");
  app.add_option("--iters", iters, "products per timing")->check(CLI::PositiveNumber);
  app.add_option("--rounds", rounds, "timings per implementation, alternating; median shown")
      ->check(CLI::PositiveNumber);
  app.add_option("--peak-tflops", peak_tflops, "dense bf16 peak for the % column");
  app.add_option("--peer", peer, "peer command (tools/bench_torch_gemm.py)");
  app.add_flag("--list", list, "also print every heuristic candidate's time");
  CLI11_PARSE(app, argc, argv);

  const std::vector<int> ms = arbor::bench::parse_int_list(m_list);
  const arbor::LlamaConfig c = arbor::load_llama_config(model);
  const int H = c.hidden_size, I = c.intermediate_size;
  const int qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
  const std::vector<Shape> shapes = {
      {"qkv", qkv, H}, {"o", H, c.num_heads * c.head_dim}, {"gate_up", 2 * I, H}, {"down", H, I}};

  // The peer runs first, alone on the GPU, and releases its memory when it exits.
  std::map<PeerKey, double> peer_us;
  if (!peer.empty()) peer_us = run_peer(peer, ms, shapes, iters);

  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::gmtime(&now));
  std::printf("# arbor prefill GEMM benchmark, %s UTC, %s, %s (%d layers); peak %.0f TFLOP/s\n",
              date, prop.name, model.c_str(), c.num_layers, peak_tflops);
  std::printf("# µs per product, median of %d timings of %d products; TFLOP/s in brackets\n",
              rounds, iters);
  std::printf(
      "| m | product (n×k) | heuristic first | autotuned (rank) | gain | torch F.linear |\n"
      "|---|---|---|---|---|---|\n");

  arbor::cuda::Stream stream;
  const cudaStream_t s = stream.get();
  arbor::cuda::Gemm heuristic, tuned;
  heuristic.set_autotune(false);
  tuned.set_autotune(true);
  auto tflops = [](int m, const Shape& sh, double us) {
    return 2.0 * m * double(sh.n) * sh.k / (us * 1e-6) * 1e-12;
  };
  std::vector<std::string> listing;
  for (int m : ms) {
    double step_first = 0, step_tuned = 0, step_peer = 0, flops = 0;
    for (const Shape& sh : shapes) {
      DeviceArray<bf16> x(size_t(m) * sh.k), w(size_t(sh.n) * sh.k), out(size_t(m) * sh.n);
      arbor::cuda::fill_normal_bf16(x.data(), x.size(), 1, 0.0f, 1.0f, s);
      arbor::cuda::fill_normal_bf16(w.data(), w.size(), 2, 0.0f, 0.02f, s);
      // First calls make the plans (the tuned one times its candidates here).
      heuristic.run(x.data(), w.data(), m, sh.n, sh.k, out.data(), s);
      tuned.run(x.data(), w.data(), m, sh.n, sh.k, out.data(), s);
      std::vector<double> t_first, t_tuned;
      for (int r = 0; r < rounds; ++r) {
        t_first.push_back(
            time_gemm(heuristic, x.data(), w.data(), m, sh.n, sh.k, out.data(), iters, s));
        t_tuned.push_back(
            time_gemm(tuned, x.data(), w.data(), m, sh.n, sh.k, out.data(), iters, s));
      }
      std::sort(t_first.begin(), t_first.end());
      std::sort(t_tuned.begin(), t_tuned.end());
      const double first = t_first[t_first.size() / 2], best = t_tuned[t_tuned.size() / 2];

      // Which candidate autotuning kept, and (with --list) every candidate's time.
      int kept_rank = -1;
      for (const auto& info : tuned.plans())
        if (info.m == m && info.n == sh.n && info.k == sh.k && !info.f32_out) kept_rank = info.rank;
      if (list) {
        const auto timings =
            heuristic.time_algorithms(x.data(), w.data(), m, sh.n, sh.k, out.data(),
                                      arbor::cuda::Gemm::kAutotuneCandidates, iters, s);
        for (const auto& t : timings) {
          char line[256];
          std::snprintf(line, sizeof line, "| %d | %s %d×%d | %d | %s | %.1f | %.1f |", m,
                        sh.name.c_str(), sh.n, sh.k, t.rank, t.algorithm.c_str(), t.us,
                        tflops(m, sh, t.us));
          listing.push_back(line);
        }
      }
      const auto p = peer_us.find({m, sh.n, sh.k});
      const double peer_time = p != peer_us.end() ? p->second : NAN;
      std::printf("| %d | %s %d×%d | %.1f (%.0f) | %.1f (%.0f) (%d) | %+.1f%% | %s (%s) |\n", m,
                  sh.name.c_str(), sh.n, sh.k, first, tflops(m, sh, first), best,
                  tflops(m, sh, best), kept_rank, 100.0 * (first / best - 1.0),
                  fmt(peer_time).c_str(), fmt(tflops(m, sh, peer_time), "%.0f").c_str());
      step_first += first * c.num_layers;
      step_tuned += best * c.num_layers;
      step_peer += peer_time * c.num_layers;
      flops += 2.0 * m * double(sh.n) * sh.k * c.num_layers;
    }
    auto pct = [&](double us) { return 100.0 * flops / (us * 1e-6) * 1e-12 / peak_tflops; };
    std::printf(
        "| %d | all layers, ms (%% of peak) | %.2f (%.1f%%) | %.2f (%.1f%%) | %+.1f%% | %s "
        "(%s%%) |\n",
        m, step_first * 1e-3, pct(step_first), step_tuned * 1e-3, pct(step_tuned),
        100.0 * (step_first / step_tuned - 1.0), fmt(step_peer * 1e-3, "%.2f").c_str(),
        fmt(pct(step_peer)).c_str());
  }
  if (list) {
    std::printf("\n| m | product | rank | algorithm | µs | TFLOP/s |\n|---|---|---|---|---|---|\n");
    for (const auto& l : listing) std::printf("%s\n", l.c_str());
  }
  return 0;
}
