// GEMV tuning benchmark: the decode-step weight products of a model (batch 1 and 2) through
// cuBLASLt and through the gemv kernel in several configurations (loads in flight per lane,
// warps per block), µs and GB/s against the device's measured read bandwidth, and the gemv
// with its fused inputs and outputs against the separate ops + gemv. Each product cycles over 4
// weight copies inside a CUDA graph, so weights come from HBM, not L2.
//
//   arbor_bench_gemv --model bench/models/llama-3.1-8b
#include <CLI/CLI.hpp>

#include <cstdio>
#include <ctime>
#include <functional>
#include <string>
#include <vector>

#include "bench/bandwidth.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/gemv_kernel.cuh"
#include "kernels/cuda/ops.h"
#include "models/config.h"

namespace {

using arbor::cuda::bf16;

template <int M, int kLoads, int kWarps>
void launch_variant(const bf16* x, const bf16* w, int n, int k, bf16* out, cudaStream_t s) {
  auto kernel = arbor::cuda::detail::gemv_kernel<M, kLoads, kWarps>;
  const size_t smem = size_t(M) * k * sizeof(bf16);
  if (smem > 48 * 1024)
    CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  kernel<<<unsigned((n + kWarps - 1) / kWarps), kWarps * 32, smem, s>>>(x, w, n, k, out, {}, {});
  CUDA_CHECK_LAUNCH();
}

using Launcher = std::function<void(const bf16*, const bf16*, int, int, bf16*, cudaStream_t)>;

template <int M>
std::vector<std::pair<std::string, Launcher>> variants() {
  return {
      {"loads2 warps8", launch_variant<M, 2, 8>}, {"loads4 warps8", launch_variant<M, 4, 8>},
      {"loads8 warps8", launch_variant<M, 8, 8>}, {"loads4 warps4", launch_variant<M, 4, 4>},
      {"loads8 warps4", launch_variant<M, 8, 4>}, {"loads4 warps16", launch_variant<M, 4, 16>},
  };
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"arbor gemv tuning benchmark (CUDA)"};
  std::string model = "bench/models/llama-3.1-8b";
  app.add_option("--model", model, "config.json folder");
  CLI11_PARSE(app, argc, argv);
  const arbor::LlamaConfig c = arbor::load_llama_config(model);
  const int H = c.hidden_size, I = c.intermediate_size;
  const int qkv = (c.num_heads + 2 * c.num_kv_heads) * c.head_dim;
  struct Shape {
    const char* name;
    int n, k;
  };
  const std::vector<Shape> shapes = {{"qkv", qkv, H},
                                     {"o", H, c.num_heads * c.head_dim},
                                     {"gate_up", 2 * I, H},
                                     {"down", H, I},
                                     {"lm_head", c.vocab_size, H}};
  const double bw = arbor::bench::measure_read_bandwidth();
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::gmtime(&now));
  std::printf("# arbor gemv benchmark, %s UTC, %s, %s; measured read bandwidth %.0f GB/s\n", date,
              prop.name, model.c_str(), bw * 1e-9);
  std::printf(
      "| m | shape (n×k) | implementation | µs | GB/s | %% of read bw "
      "|\n|---|---|---|---|---|---|\n");
  arbor::cuda::Stream stream;
  cudaStream_t s = stream.get();
  arbor::cuda::Gemm gemm;
  gemm.set_small_m_gemv(false);
  constexpr int kCopies = 4, kReps = 8;
  for (int m : {1, 2}) {
    for (const Shape& sh : shapes) {
      std::vector<arbor::cuda::DeviceArray<bf16>> w;
      for (int i = 0; i < kCopies; ++i) {
        w.emplace_back(size_t(sh.n) * sh.k);
        arbor::cuda::fill_normal_bf16(w.back().data(), w.back().size(), i + 1, 0.0f, 0.02f, s);
      }
      arbor::cuda::DeviceArray<bf16> x(size_t(m) * sh.k), out(size_t(m) * sh.n);
      arbor::cuda::fill_normal_bf16(x.data(), x.size(), 9, 0.0f, 1.0f, s);
      auto time_us = [&](const std::function<void(const bf16*)>& one) {
        arbor::cuda::Graph g;
        g.capture(s, [&] {
          for (int r = 0; r < kReps; ++r)
            for (int i = 0; i < kCopies; ++i) one(w[size_t(i)].data());
        });
        g.launch(s);
        stream.sync();
        arbor::cuda::Event e0, e1;
        e0.record(s);
        for (int it = 0; it < 5; ++it) g.launch(s);
        e1.record(s);
        return double(e1.elapsed_ms_since(e0)) * 1e3 / (5.0 * kReps * kCopies);
      };
      const double bytes = double(sh.n) * sh.k * 2;
      auto row = [&](const std::string& impl, double us) {
        std::printf("| %d | %s %d×%d | %s | %.1f | %.0f | %.0f%% |\n", m, sh.name, sh.n, sh.k,
                    impl.c_str(), us, bytes / us * 1e-3, 100.0 * bytes / (us * 1e-6) / bw);
        std::fflush(stdout);
      };
      row("cuBLASLt",
          time_us([&](const bf16* wp) { gemm.run(x.data(), wp, m, sh.n, sh.k, out.data(), s); }));
      const auto vs = m == 1 ? variants<1>() : variants<2>();
      for (const auto& [name, launch] : vs) {
        if (size_t(m) * sh.k * 2 > 96 * 1024) continue;
        row("gemv " + name,
            time_us([&](const bf16* wp) { launch(x.data(), wp, sh.n, sh.k, out.data(), s); }));
      }

      // The op before the product in a decoder layer, as its own kernel and then fused into
      // the gemv (kernels/cuda/gemv.h): qkv and gate_up follow a residual add + RMSNorm, down
      // follows SiLU·mul. Each pair runs back to back like the step's kernels (PDL).
      const std::string shape_name = sh.name;
      if ((shape_name == "qkv" || shape_name == "gate_up") &&
          arbor::cuda::gemv_rmsnorm_supported(m, sh.k)) {
        arbor::cuda::DeviceArray<bf16> residual[2] = {arbor::cuda::DeviceArray<bf16>(x.size()),
                                                      arbor::cuda::DeviceArray<bf16>(x.size())};
        arbor::cuda::DeviceArray<bf16> norm_w(size_t(sh.k)), normed(x.size());
        for (auto& r : residual) arbor::cuda::fill_normal_bf16(r.data(), r.size(), 7, 0, 1, s);
        arbor::cuda::fill_normal_bf16(norm_w.data(), norm_w.size(), 8, 1.0f, 0.1f, s);
        row("add_rmsnorm + gemv", time_us([&](const bf16* wp) {
              arbor::cuda::add_rmsnorm(residual[0].data(), x.data(), norm_w.data(), m, sh.k, 1e-5f,
                                       normed.data(), s);
              arbor::cuda::gemv(normed.data(), wp, m, sh.n, sh.k, out.data(), s);
            }));
        int turn = 0;  // the fused add writes the other residual buffer
        row("gemv_add_rmsnorm (fused)", time_us([&](const bf16* wp) {
              const int from = turn++ % 2;
              arbor::cuda::gemv_add_rmsnorm(residual[from].data(), x.data(),
                                            residual[1 - from].data(), norm_w.data(), 1e-5f, wp, m,
                                            sh.n, sh.k, out.data(), s);
            }));
      }

      // The op after the product, as its own kernel and then fused into the gemv's output
      // (kernels/cuda/gemv.h, paired outputs): SiLU·mul after gate_up, RoPE + KV-cache write
      // after qkv (one token per row, positions near 1k, each row its own cache slot).
      if (shape_name == "gate_up" && arbor::cuda::gemv_paired_supported(m, sh.k, false)) {
        const int dim = sh.n / 2;
        arbor::cuda::DeviceArray<bf16> act(size_t(m) * dim);
        row("gemv + silu_mul", time_us([&](const bf16* wp) {
              arbor::cuda::gemv(x.data(), wp, m, sh.n, sh.k, out.data(), s);
              arbor::cuda::silu_mul(out.data(), m, dim, act.data(), s);
            }));
        arbor::cuda::GemvInputSpec in;
        in.x = x.data();
        row("gemv_silu_mul (fused)", time_us([&](const bf16* wp) {
              arbor::cuda::gemv_silu_mul(in, wp, m, dim, sh.k, act.data(), s);
            }));
      }
      if (shape_name == "qkv" && arbor::cuda::gemv_paired_supported(m, sh.k, false)) {
        const int block_size = 16, num_blocks = 4;
        const std::vector<int32_t> positions = {1000, 1001}, slots = {0, block_size};
        const std::vector<float> inv_freq =
            arbor::cpu::rope_inv_freq(c.head_dim, c.rope_theta, c.rope_scaling);
        arbor::cuda::DeviceArray<int32_t> d_pos(positions.size()), d_slots(slots.size());
        arbor::cuda::DeviceArray<float> d_inv(inv_freq.size());
        CUDA_CHECK(
            cudaMemcpy(d_pos.data(), positions.data(), d_pos.bytes(), cudaMemcpyHostToDevice));
        CUDA_CHECK(
            cudaMemcpy(d_slots.data(), slots.data(), d_slots.bytes(), cudaMemcpyHostToDevice));
        CUDA_CHECK(
            cudaMemcpy(d_inv.data(), inv_freq.data(), d_inv.bytes(), cudaMemcpyHostToDevice));
        const size_t cache = size_t(num_blocks) * c.num_kv_heads * block_size * c.head_dim;
        arbor::cuda::DeviceArray<bf16> q(size_t(m) * c.num_heads * c.head_dim), kc(cache),
            vc(cache);
        arbor::cuda::RopeKvWriteParams rope;
        rope.qkv = out.data();
        rope.positions = d_pos.data();
        rope.slot_mapping = d_slots.data();
        rope.inv_freq = d_inv.data();
        rope.n_tokens = m;
        rope.num_q_heads = c.num_heads;
        rope.num_kv_heads = c.num_kv_heads;
        rope.head_dim = c.head_dim;
        rope.block_size = block_size;
        rope.num_blocks = num_blocks;
        rope.q_out = q.data();
        rope.k_cache = kc.data();
        rope.v_cache = vc.data();
        row("gemv + rope_kv_write", time_us([&](const bf16* wp) {
              arbor::cuda::gemv(x.data(), wp, m, sh.n, sh.k, out.data(), s);
              arbor::cuda::rope_kv_write(rope, s);
            }));
        arbor::cuda::GemvInputSpec in;
        in.x = x.data();
        row("gemv_rope_kv_write (fused)", time_us([&](const bf16* wp) {
              arbor::cuda::gemv_rope_kv_write(in, wp, m, sh.k, rope, s);
            }));
      }
    }
  }
  return 0;
}
