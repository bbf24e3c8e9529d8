// Benchmark of cuda::prefill_attention: causal prefill of whole prompts (and chunks after a
// cached prefix) over a paged bf16 cache, timed with CUDA events (median of --iters runs
// after warm-up). Prints time, attention TFLOP/s (causal FLOPs actually needed:
// 4 · head_dim · q_heads · Σ keys seen per query row) and the share of a bf16 dense
// tensor-core peak (--peak-tflops, default H100 SXM 989).
//
//   arbor_bench_prefill_attention [--lens 512,1024,...] [--prefix N] [--batch B]
//       [--q-heads 32] [--kv-heads 8] [--head-dim 128] [--block-size 16] [--iters 20]
//       [--peak-tflops 989]
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bench/int_list.h"
#include "kernels/cuda/bf16.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/prefill_attention.h"

using arbor::cuda::bf16;
using arbor::cuda::DeviceArray;

namespace {

// Fills x with deterministic pseudo-random values uniform in [-1, 1) (never all zeros: a
// tensor core on zeros runs faster than on real data).
__global__ void fill_random(bf16* x, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 0x9e3779b1u ^ seed ^ uint32_t(i >> 32) * 0x85ebca6bu;
    h ^= h >> 16;
    h *= 0x7feb352du;
    h ^= h >> 15;
    h *= 0x846ca68bu;
    h ^= h >> 16;
    x[i] = __float2bfloat16(float(h) * (2.0f / 4294967296.0f) - 1.0f);
  }
}

void fill(DeviceArray<bf16>& a, uint32_t seed) {
  fill_random<<<1024, 256>>>(a.data(), a.size(), seed);
  CUDA_CHECK_LAUNCH();
}

struct Options {
  std::vector<int> lens = {512, 1024, 2048, 4096, 8192, 16384};
  int prefix = 0;  // cached tokens before each prompt (chunked prefill)
  int batch = 1;   // sequences per launch, each with the same length
  int q_heads = 32, kv_heads = 8, head_dim = 128, block_size = 16, iters = 20;
  double peak_tflops = 989.0;
};

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") {
      std::printf(
          "usage: %s [--lens 512,1024,...] [--prefix N] [--batch B] [--q-heads H] "
          "[--kv-heads H] [--head-dim 64|128] [--block-size N] [--iters N] [--peak-tflops X]\n",
          argv[0]);
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::invalid_argument(arg + " needs a value");
    const std::string val = argv[++i];
    if (arg == "--lens")
      o.lens = arbor::bench::parse_int_list(val);
    else if (arg == "--prefix")
      o.prefix = std::stoi(val);
    else if (arg == "--batch")
      o.batch = std::stoi(val);
    else if (arg == "--q-heads")
      o.q_heads = std::stoi(val);
    else if (arg == "--kv-heads")
      o.kv_heads = std::stoi(val);
    else if (arg == "--head-dim")
      o.head_dim = std::stoi(val);
    else if (arg == "--block-size")
      o.block_size = std::stoi(val);
    else if (arg == "--iters")
      o.iters = std::stoi(val);
    else if (arg == "--peak-tflops")
      o.peak_tflops = std::stod(val);
    else
      throw std::invalid_argument("unknown option " + arg);
  }
  if (o.batch < 1 || o.iters < 1 || o.prefix < 0) throw std::invalid_argument("bad option value");
  return o;
}

struct Row {
  int len;
  double ms, tflops;
};

Row run_one(const Options& o, int len, arbor::cuda::PrefillKernel kernel, cudaStream_t stream) {
  const int ctx = o.prefix + len;
  const int blocks_per_seq = (ctx + o.block_size - 1) / o.block_size;
  const int num_blocks = blocks_per_seq * o.batch;
  const int tokens = len * o.batch;

  DeviceArray<bf16> q(size_t(tokens) * o.q_heads * o.head_dim);
  DeviceArray<bf16> out(q.size());
  const size_t cache_elems = size_t(num_blocks) * o.kv_heads * o.block_size * o.head_dim;
  DeviceArray<bf16> k(cache_elems), v(cache_elems);
  fill(q, 1);
  fill(k, 2);
  fill(v, 3);

  // Shuffled block tables, as a long-running server's pool would hand them out.
  std::vector<int32_t> table(static_cast<size_t>(num_blocks));
  std::iota(table.begin(), table.end(), 0);
  std::shuffle(table.begin(), table.end(), std::mt19937(7));
  std::vector<int32_t> lens(size_t(o.batch), ctx), starts(size_t(o.batch) + 1);
  for (int s = 0; s <= o.batch; ++s) starts[size_t(s)] = s * len;
  DeviceArray<int32_t> d_table(table.size()), d_lens(lens.size()), d_starts(starts.size());
  d_table.upload(table.data(), table.size(), stream);
  d_lens.upload(lens.data(), lens.size(), stream);
  d_starts.upload(starts.data(), starts.size(), stream);

  arbor::cuda::PrefillAttentionParams p;
  p.q = q.data();
  p.k_cache = k.data();
  p.v_cache = v.data();
  p.block_tables = d_table.data();
  p.context_lens = d_lens.data();
  p.query_start = d_starts.data();
  p.num_seqs = o.batch;
  p.num_tokens = tokens;
  p.num_q_heads = o.q_heads;
  p.num_kv_heads = o.kv_heads;
  p.head_dim = o.head_dim;
  p.block_size = o.block_size;
  p.max_blocks_per_seq = blocks_per_seq;
  p.max_query_len = len;
  p.scale = 1.0f / std::sqrt(float(o.head_dim));
  p.out = out.data();
  p.kernel = kernel;

  for (int i = 0; i < 3; ++i) arbor::cuda::prefill_attention(p, stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  std::vector<double> ms;
  arbor::cuda::Event start, stop;
  for (int i = 0; i < o.iters; ++i) {
    start.record(stream);
    arbor::cuda::prefill_attention(p, stream);
    stop.record(stream);
    ms.push_back(stop.elapsed_ms_since(start));
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];

  // Query row i (0-based) of a prompt sees prefix + i + 1 keys.
  const double keys = double(len) * o.prefix + 0.5 * double(len) * (len + 1);
  const double flops = 4.0 * o.head_dim * o.q_heads * keys * o.batch;
  return {len, median, flops / (median * 1e-3) / 1e12};
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Options o = parse(argc, argv);
    cudaDeviceProp prop{};
    int dev = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
    std::printf(
        "%s, %d SMs; q heads %d, kv heads %d, head dim %d, block size %d, batch %d, "
        "cached prefix %d, median of %d\n",
        prop.name, prop.multiProcessorCount, o.q_heads, o.kv_heads, o.head_dim, o.block_size,
        o.batch, o.prefix, o.iters);
    arbor::cuda::Stream stream;
    // Both kernels in the same run where the device has both (wgmma: sm_90a).
    using arbor::cuda::PrefillKernel;
    std::vector<std::pair<PrefillKernel, const char*>> kernels = {
        {PrefillKernel::kMmaSync, "mma.sync"}};
    if (arbor::cuda::prefill_attention_wgmma_available()) {
      kernels.emplace_back(PrefillKernel::kWgmma, "wgmma");
    }
    std::printf("%-9s %8s %10s %10s %8s\n", "kernel", "new tok", "ms", "TFLOP/s", "% peak");
    for (const auto& [kernel, name] : kernels) {
      for (int len : o.lens) {
        const Row r = run_one(o, len, kernel, stream.get());
        std::printf("%-9s %8d %10.3f %10.1f %7.1f%%\n", name, r.len, r.ms, r.tflops,
                    100.0 * r.tflops / o.peak_tflops);
      }
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
