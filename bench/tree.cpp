// Tree-attention benchmark (context parallelism across GPUs), for Llama-3-8B shapes.
//
// On whatever GPUs the machine has, it measures the parts and feeds them to the analytic
// model of a decode step over p GPUs (bench/RESULTS.md, "Tree attention"):
//   step(L, p) = T_rest + layers · (T_attn(L/p) + T_combine(p))          tree attention
//   ring(L, p) = T_rest + layers · (T_attn(L/p) + (p−1)·max(T_attn(L/p), α_p2p + S/B))
//                where S = one rank's K/V shard per layer: ring attention passes K/V around
//   T_rest:    the rest of a decode step (weights, small kernels), measured with the real
//              runner at a short context minus its attention;
//   T_attn:    flash-decoding over one rank's shard, measured per layer (partials entry);
//   T_combine: measured for the backends present (NCCL with the ranks this machine has,
//              simulated ranks on one GPU), modeled for p > GPUs from --allreduce-us.
// It also runs the real context-parallel runner (NCCL, all visible GPUs up to p; and
// simulated ranks) against the plain runner at one context, so the model's inputs and the
// end-to-end numbers come from the same run.
//
//   arbor_bench_tree --model bench/models/llama-3.1-8b
#include <CLI/CLI.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime.h>

#include "bench/bandwidth.h"
#include "bench/int_list.h"
#include "bench/model_bytes.h"
#include "engine/batch_builder.h"
#include "engine/comm/local_gpu_communicator.h"
#include "engine/comm/nccl_communicator.h"
#include "kernels/cuda/attention_merge.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/ops.h"
#include "models/config.h"
#include "models/context_parallel_cuda.h"
#include "models/llama_cuda.h"

namespace {

using arbor::cuda::bf16;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Each rank thread works on its rank's GPU: the NCCL groups here put rank r on device r, the
// simulated (local-gpu) ranks all share device 0. A rank that enqueued its NCCL calls on
// another device's stream would hang its peers.
void use_rank_device(const arbor::comm::Communicator& c) {
  CUDA_CHECK(cudaSetDevice(c.name() == "nccl" ? c.rank() : 0));
}

// Per-layer µs of the combine on every rank of `group` (one thread per rank), for `rows`
// (token × query head) rows. NCCL ranks replay a CUDA graph of `layers` combines; local-gpu
// ranks call it directly (not capturable).
double combine_us(arbor::comm::Group& group, arbor::CpCombine strategy, size_t rows, int head_dim,
                  int layers, int iters) {
  std::vector<double> per_layer(group.size());
  arbor::comm::run_ranks(group, [&](arbor::comm::Communicator& c) {
    use_rank_device(c);
    arbor::CudaCombineWorkspace ws(arbor::ContextParallelRank{&c, strategy}, rows, head_dim);
    arbor::cuda::DeviceArray<bf16> out(rows * size_t(head_dim));
    CUDA_CHECK(cudaMemset(ws.partial_out(), 0, rows * head_dim * sizeof(float)));
    CUDA_CHECK(cudaMemset(ws.partial_lse(), 0, rows * sizeof(float)));
    arbor::cuda::Stream stream;
    cudaStream_t s = stream.get();
    auto layers_once = [&] {
      for (int l = 0; l < layers; ++l) ws.combine(rows, out.data(), s);
    };
    arbor::cuda::Graph graph;
    if (c.graph_capturable()) graph.capture(s, layers_once);
    auto run = [&] { c.graph_capturable() ? graph.launch(s) : layers_once(); };
    run();
    stream.sync();
    c.barrier();
    const auto t0 = Clock::now();
    for (int i = 0; i < iters; ++i) run();
    stream.sync();
    per_layer[size_t(c.rank())] = seconds_since(t0) / (double(iters) * layers) * 1e6;
  });
  return *std::max_element(per_layer.begin(), per_layer.end());
}

// Flash-decoding of one query token (batch 1) over a contiguous paged cache of `ctx`
// tokens (identity block table): the partials entry point (fp32 o + lse), planned once.
struct Batch1Decode {
  static constexpr int kBlock = 16;
  arbor::cuda::DeviceArray<bf16> q, out;
  arbor::cuda::DeviceArray<float> o, lse;
  arbor::cuda::DeviceArray<int32_t> table, len;
  arbor::cuda::DecodeAttentionParams params;
  arbor::cuda::DecodeAttentionPlan plan;
  arbor::cuda::DeviceBuffer workspace;

  Batch1Decode(const arbor::LlamaConfig& c, int ctx, int num_sms, cudaStream_t s)
      : q(size_t(c.num_heads) * c.head_dim),
        out(q.size()),
        o(q.size()),
        lse(size_t(c.num_heads)),
        table(size_t((ctx + kBlock - 1) / kBlock)),
        len(1) {
    arbor::cuda::fill_normal_bf16(q.data(), q.size(), 7, 0.0f, 1.0f, s);  // same q on every rank
    std::vector<int32_t> ids(table.size());
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i);
    table.upload(ids.data(), ids.size(), s);
    len.upload(&ctx, 1, s);
    params.q = q.data();
    params.block_tables = table.data();
    params.context_lens = len.data();
    params.num_seqs = 1;
    params.num_q_heads = c.num_heads;
    params.num_kv_heads = c.num_kv_heads;
    params.head_dim = c.head_dim;
    params.block_size = kBlock;
    params.max_blocks_per_seq = int(table.size());
    params.scale = 1.0f / std::sqrt(float(c.head_dim));
    params.max_context_len = ctx;
    params.out = out.data();
    params.out_f32 = o.data();
    params.lse = lse.data();
    plan = arbor::cuda::plan_decode_attention(params, num_sms);
    workspace = arbor::cuda::DeviceBuffer(std::max<size_t>(plan.workspace_bytes, 16));
    CUDA_CHECK(cudaMemsetAsync(workspace.get(), 0, workspace.bytes(), s));
  }
  // Partials over (k, v) into (o_dst, lse_dst).
  void run(const bf16* k, const bf16* v, float* o_dst, float* lse_dst, cudaStream_t s) {
    params.k_cache = k;
    params.v_cache = v;
    params.out_f32 = o_dst;
    params.lse = lse_dst;
    arbor::cuda::decode_attention(params, plan, workspace.get(), s);
  }
};

// Per-layer µs of flash-decoding (partials entry: fp32 o + lse) over a batch-1 context of
// `ctx` tokens, inside a graph of `layers` launches cycling over 4 caches (beyond L2).
double attention_us(const arbor::LlamaConfig& c, int ctx, int layers, int num_sms) {
  constexpr int kBlock = 16, kCaches = 4;
  const int blocks = (ctx + kBlock - 1) / kBlock;
  const size_t elems = size_t(blocks) * c.num_kv_heads * kBlock * c.head_dim;
  std::vector<arbor::cuda::DeviceArray<bf16>> k, v;
  arbor::cuda::Stream stream;
  cudaStream_t s = stream.get();
  for (int i = 0; i < kCaches; ++i) {
    k.emplace_back(elems);
    v.emplace_back(elems);
    arbor::cuda::fill_normal_bf16(k.back().data(), elems, 1 + i, 0.0f, 1.0f, s);
    arbor::cuda::fill_normal_bf16(v.back().data(), elems, 101 + i, 0.0f, 1.0f, s);
  }
  Batch1Decode attention(c, ctx, num_sms, s);
  arbor::cuda::Graph graph;
  graph.capture(s, [&] {
    for (int l = 0; l < layers; ++l) {
      attention.run(k[size_t(l % kCaches)].data(), v[size_t(l % kCaches)].data(),
                    attention.o.data(), attention.lse.data(), s);
    }
  });
  graph.launch(s);
  stream.sync();
  arbor::cuda::Event e0, e1;
  constexpr int kIters = 10;
  e0.record(s);
  for (int i = 0; i < kIters; ++i) graph.launch(s);
  e1.record(s);
  return double(e1.elapsed_ms_since(e0)) * 1e3 / (kIters * layers);
}

// One layer's K and V of `ctx` tokens (a multiple of Batch1Decode::kBlock) in a contiguous
// paged layout (identity block table).
struct Shard {
  arbor::cuda::DeviceArray<bf16> k, v;
  Shard(const arbor::LlamaConfig& c, int ctx, uint64_t seed, cudaStream_t s)
      : k(size_t(ctx) * c.num_kv_heads * c.head_dim), v(k.size()) {
    arbor::cuda::fill_normal_bf16(k.data(), k.size(), seed, 0.0f, 1.0f, s);
    arbor::cuda::fill_normal_bf16(v.data(), v.size(), seed + 1, 0.0f, 1.0f, s);
  }
};

// Per-layer µs, on every rank of `group`, of decode attention (batch 1) over a context of
// p · shard_ctx tokens held as p shards, three ways with the same kernels:
//   tree:      local flash-decoding partials, then the all-gather combine
//   ring-kv:   ring attention: p steps, each computes a partial over the shard at hand while
//              the shard moves one rank on (send_recv on a second stream), partials merged
//   ring-part: local partials, then p − 1 ring hops of the (o, lse) rows, merged
// Returns {tree, ring-kv, ring-part} (the slowest rank's).
std::vector<double> ring_vs_tree_us(arbor::comm::Group& group, const arbor::LlamaConfig& c,
                                    int shard_ctx, int layers, int num_sms) {
  const int p = int(group.size());
  std::vector<std::vector<double>> out(size_t(p), std::vector<double>(3));
  arbor::comm::run_ranks(group, [&](arbor::comm::Communicator& comm) {
    use_rank_device(comm);
    const int rank = comm.rank();
    arbor::cuda::Stream compute, transfer;
    cudaStream_t s = compute.get(), t = transfer.get();
    Shard mine(c, shard_ctx, 11 + rank, s);
    Shard arriving[2] = {Shard(c, shard_ctx, 99, s), Shard(c, shard_ctx, 98, s)};
    const size_t rows = size_t(c.num_heads), packed = rows * (c.head_dim + 1);
    arbor::cuda::DeviceArray<bf16> out_bf16(rows * c.head_dim);
    arbor::cuda::DeviceArray<float> o(rows * c.head_dim), lse(rows), gathered(packed * p);
    Batch1Decode attention(c, shard_ctx, num_sms, s);
    arbor::CudaCombineWorkspace tree_ws(
        arbor::ContextParallelRank{&comm, arbor::CpCombine::allgather}, rows, c.head_dim);
    auto partial = [&](const Shard& sh, float* o_dst, float* lse_dst) {
      attention.run(sh.k.data(), sh.v.data(), o_dst, lse_dst, s);
    };
    arbor::cuda::Event computed, moved;
    auto tree_layer = [&] {
      partial(mine, tree_ws.partial_out(), tree_ws.partial_lse());
      tree_ws.combine(rows, out_bf16.data(), s);
    };
    auto ring_kv_layer = [&] {
      // This rank's shard stays put (every layer reuses it); arrivals alternate between
      // two buffers, so a hop never writes the buffer being sent or computed on.
      const Shard* cur = &mine;
      int arrive = 0;
      for (int step = 0; step < p; ++step) {
        // The hop may start once everything before this step is done (the buffer it fills
        // was last read two steps ago), and then overlaps this step's partial.
        computed.record(s);
        partial(*cur, o.data(), lse.data());
        arbor::cuda::pack_partials(o.data(), lse.data(), rows, c.head_dim,
                                   gathered.data() + size_t(step) * packed, s);
        if (step + 1 < p) {
          Shard& next = arriving[arrive];
          CUDA_CHECK(cudaStreamWaitEvent(t, computed.get(), 0));
          comm.send_recv(cur->k.data(), (rank + 1) % p, next.k.data(), (rank + p - 1) % p,
                         cur->k.size() * 2, arbor::comm::DType::u8, t);
          comm.send_recv(cur->v.data(), (rank + 1) % p, next.v.data(), (rank + p - 1) % p,
                         cur->v.size() * 2, arbor::comm::DType::u8, t);
          moved.record(t);
          CUDA_CHECK(cudaStreamWaitEvent(s, moved.get(), 0));
          cur = &next;
          arrive ^= 1;
        }
      }
      arbor::cuda::merge_packed_partials(gathered.data(), p, rows, c.head_dim, out_bf16.data(), s);
    };
    auto ring_partials_layer = [&] {
      partial(mine, o.data(), lse.data());
      arbor::cuda::pack_partials(o.data(), lse.data(), rows, c.head_dim,
                                 gathered.data() + size_t(rank) * packed, s);
      for (int hop = 1; hop < p; ++hop) {  // hop h passes on what arrived h − 1 hops ago
        const int send_part = (rank - hop + 1 + p) % p, recv_part = (rank - hop + p) % p;
        comm.send_recv(gathered.data() + size_t(send_part) * packed, (rank + 1) % p,
                       gathered.data() + size_t(recv_part) * packed, (rank + p - 1) % p, packed,
                       arbor::comm::DType::f32, s);
      }
      arbor::cuda::merge_packed_partials(gathered.data(), p, rows, c.head_dim, out_bf16.data(), s);
    };
    const std::function<void()> layer_fns[3] = {tree_layer, ring_kv_layer, ring_partials_layer};
    for (int f = 0; f < 3; ++f) {
      for (int l = 0; l < 2; ++l) layer_fns[f]();  // warm-up
      compute.sync();
      transfer.sync();
      comm.barrier();
      const auto t0 = Clock::now();
      for (int l = 0; l < layers; ++l) layer_fns[f]();
      compute.sync();
      transfer.sync();
      out[size_t(rank)][size_t(f)] = seconds_since(t0) / layers * 1e6;
    }
  });
  std::vector<double> worst(3, 0.0);
  for (const auto& r : out)
    for (int f = 0; f < 3; ++f) worst[size_t(f)] = std::max(worst[size_t(f)], r[size_t(f)]);
  return worst;
}

// Contexts up to this many tokens are prefilled before the decode steps are timed; longer
// ones are decoded over the unfilled cache (same bytes read, same kernels): prefilling 1M
// tokens would take minutes of the device's time for no difference in the step.
constexpr int kMaxPrefilled = 65536;

// Mean ms of a batch-1 greedy decode step at context `ctx` on `runner` (a prefill first, up
// to kMaxPrefilled tokens).
double decode_step_ms(arbor::ModelRunner& runner, int ctx, int steps) {
  const int bs = runner.block_size();
  std::vector<int32_t> tokens(size_t(ctx + steps + 2));
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = int32_t((i * 7919) % 32000);
  std::vector<int32_t> table((tokens.size() + bs - 1) / bs);
  for (size_t i = 0; i < table.size(); ++i) table[i] = int32_t(i);
  std::vector<int32_t> ids;
  for (int start = 0; ctx <= kMaxPrefilled && start < ctx; start += runner.max_batch_tokens()) {
    arbor::ScheduledChunk chunk{tokens, table, start,
                                std::min(runner.max_batch_tokens(), ctx - start), true};
    runner.forward_greedy(arbor::build_forward_batch({&chunk, 1}, bs), ids);
  }
  double total = 0;
  for (int step = 0; step < steps + 2; ++step) {
    arbor::ScheduledChunk chunk{tokens, table, ctx + step, 1, true};
    const auto batch = arbor::build_forward_batch({&chunk, 1}, bs);
    const auto t0 = Clock::now();
    runner.forward_greedy(batch, ids);
    if (step >= 2) total += seconds_since(t0);  // 2 warm-up steps (graph capture)
  }
  return total / steps * 1e3;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"arbor tree-attention benchmark and analytic model (CUDA)"};
  std::string model = "bench/models/llama-3.1-8b";
  std::string contexts = "131072,524288,1048576,4194304", ranks = "1,2,4,8", sim_ranks = "2,4,8";
  std::string e2e_contexts = "32768";
  int layers_flag = 0, max_local_context = 1048576;
  double allreduce_us = 25.0, p2p_us = 10.0, link_gbs = 450.0, project_gbs = 0;
  app.add_option("--model", model, "config.json folder (dummy weights)");
  app.add_option("--contexts", contexts, "total contexts of the model table");
  app.add_option("--ranks", ranks, "p values of the model table");
  app.add_option("--sim-ranks", sim_ranks, "simulated ranks on one GPU for the combine table");
  app.add_option("--layers", layers_flag, "layers (default: the model's)");
  app.add_option("--e2e-contexts", e2e_contexts,
                 "contexts of the end-to-end runner comparison (overheads at the first only)");
  app.add_option("--max-local-context", max_local_context, "largest shard measured directly");
  app.add_option("--allreduce-us", allreduce_us,
                 "modeled latency of one small NVLink collective when p > visible GPUs "
                 "(published 8×H100 NCCL all-reduce: 23–33 µs)");
  app.add_option("--p2p-us", p2p_us, "modeled latency of one ring hop");
  app.add_option("--link-gbs", link_gbs, "modeled per-direction GPU-GPU bandwidth (NVLink 4: 450)");
  app.add_option("--project-bandwidth-gbs", project_gbs,
                 "also project the table to a GPU with this read bandwidth (H200: 4800·0.92)");
  CLI11_PARSE(app, argc, argv);

  const arbor::LlamaConfig c = arbor::load_llama_config(model);
  const int layers = layers_flag > 0 ? layers_flag : c.num_layers;
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  int gpus = 0;
  CUDA_CHECK(cudaGetDeviceCount(&gpus));
  const double read_bw = arbor::bench::measure_read_bandwidth();
  const double kv_per_token = arbor::bench::kv_bytes_per_token(c);
  const double weight_bytes = arbor::bench::weight_bytes(c);
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%d %H:%M", std::gmtime(&now));
  std::printf("# arbor tree-attention benchmark, %s UTC, %d × %s, %s (%d layers)\n", date, gpus,
              prop.name, model.c_str(), layers);
  std::printf("# measured read bandwidth %.0f GB/s; NCCL %d; weights %.2f GB; KV %.0f KiB/token\n",
              read_bw * 1e-9, arbor::comm::nccl_version(), weight_bytes * 1e-9,
              kv_per_token / 1024);

  // ---- 1. Combine latency per layer.
  std::printf("\n## Combine per layer (µs): decode batch b → rows = b·%d heads of %d+1 floats\n",
              c.num_heads, c.head_dim);
  std::printf(
      "| backend | p | strategy | rows | message KiB | µs/layer |\n|---|---|---|---|---|---|\n");
  std::map<std::pair<int, int>, double> nccl_combine;  // (p, strategy) → µs at batch 1
  auto combine_row = [&](arbor::comm::Group& group, const char* backend, int p) {
    for (auto strategy : {arbor::CpCombine::allgather, arbor::CpCombine::allreduce}) {
      for (int batch : {1, 8, 64}) {
        const size_t rows = size_t(batch) * c.num_heads;
        const double us = combine_us(group, strategy, rows, c.head_dim, layers, 20);
        std::printf("| %s | %d | %s | %zu | %.1f | %.1f |\n", backend, p,
                    arbor::to_string(strategy), rows, rows * (c.head_dim + 1) * 4.0 / 1024, us);
        std::fflush(stdout);
        if (batch == 1 && std::string(backend) == "nccl") nccl_combine[{p, int(strategy)}] = us;
      }
    }
  };
  for (int p = 1; p <= gpus; p *= 2) {
    std::vector<int> devices;
    for (int i = 0; i < p; ++i) devices.push_back(i);
    arbor::comm::Group group = arbor::comm::make_nccl_group(devices);
    combine_row(group, "nccl", p);
  }
  for (int p : arbor::bench::parse_int_list(sim_ranks)) {
    arbor::comm::Group group = arbor::comm::make_local_gpu_group(p, 0);
    combine_row(group, "local-gpu (host-synchronized)", p);
  }

  // ---- 2. Flash-decoding over one rank's shard.
  std::map<int, double> attn;  // local context → µs per layer
  std::vector<int> totals = arbor::bench::parse_int_list(contexts),
                   ps = arbor::bench::parse_int_list(ranks);
  for (int L : totals)
    for (int p : ps)
      if (L / p <= max_local_context) attn[L / p] = 0;
  attn[1024] = 0;
  std::printf("\n## Flash-decoding partials per layer, batch 1 (one rank's shard)\n");
  std::printf("| shard tokens | µs/layer | GB/s | %% of read bw |\n|---|---|---|---|\n");
  for (auto& [ctx, us] : attn) {
    us = attention_us(c, ctx, layers, prop.multiProcessorCount);
    const double bytes = double(ctx) * kv_per_token / c.num_layers;
    std::printf("| %d | %.1f | %.0f | %.0f%% |\n", ctx, us, bytes / us * 1e-3,
                100.0 * bytes / (us * 1e-6) / read_bw);
    std::fflush(stdout);
  }

  // ---- 3. The rest of a decode step, and the real runners end to end.
  arbor::CudaRunnerOptions o;
  o.dummy_weights = true;
  o.max_num_seqs = 1;
  o.max_batch_tokens = 8192;
  const std::vector<int> e2e = arbor::bench::parse_int_list(e2e_contexts);
  double plain_short = 0;
  {
    o.num_kv_blocks = (1024 + 4096) / o.block_size;
    auto runner = arbor::make_cuda_runner(model, o);
    plain_short = decode_step_ms(*runner, 1024, 20);
  }
  const double rest_ms = plain_short - layers * attn[1024] * 1e-3;
  std::printf("\n## Decode step, batch 1, real runners (dummy weights)\n");
  std::printf(
      "# contexts over %d tokens are decoded over an unfilled cache: the step reads the "
      "same bytes, and a %d-token prefill would take minutes\n",
      kMaxPrefilled, kMaxPrefilled);
  std::printf("| runner | context | step ms | tok/s | GB used per GPU |\n|---|---|---|---|---|\n");
  std::printf("| plain | 1024 | %.3f | %.1f | |\n", plain_short, 1000 / plain_short);
  std::printf("# rest of the step (1k step − %d × attention at 1k): %.3f ms\n", layers, rest_ms);
  // One row: the runner built with `make`, or why it could not be (a context that does not
  // fit in p GPUs is a result, not an error).
  auto e2e_row = [&](const std::string& label, int ctx, int p,
                     const std::function<std::unique_ptr<arbor::ModelRunner>()>& make) {
    try {
      auto runner = make();
      double used_gb = 0;
      for (int d = 0; d < std::max(1, std::min(p, gpus)); ++d) {
        size_t free_bytes = 0, total_bytes = 0;
        CUDA_CHECK(cudaSetDevice(d));
        CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
        used_gb = std::max(used_gb, double(total_bytes - free_bytes) * 1e-9);
      }
      CUDA_CHECK(cudaSetDevice(0));
      const double ms = decode_step_ms(*runner, ctx, 20);
      std::printf("| %s | %d | %.3f | %.1f | %.1f |\n", label.c_str(), ctx, ms, 1000 / ms, used_gb);
    } catch (const std::exception& e) {
      CUDA_CHECK(cudaSetDevice(0));
      std::printf("| %s | %d | does not run: %.120s | | |\n", label.c_str(), ctx, e.what());
    }
    std::fflush(stdout);
  };
  for (size_t i = 0; i < e2e.size(); ++i) {
    const int ctx = e2e[i];
    arbor::CudaRunnerOptions po = o;
    po.num_kv_blocks = (ctx + 4096) / po.block_size;
    e2e_row("plain", ctx, 1, [&] { return arbor::make_cuda_runner(model, po); });
    auto cp_row = [&](arbor::CpBackend backend, arbor::CpCombine strategy, int p) {
      arbor::CudaContextParallelOptions cp;
      cp.size = p;
      cp.backend = backend;
      cp.combine = strategy;
      arbor::CudaRunnerOptions ro = o;
      ro.num_kv_blocks = (ctx / p + 4096) / ro.block_size;
      const std::string label = std::string("context-parallel ") + arbor::to_string(backend) +
                                " p=" + std::to_string(p) + " " + arbor::to_string(strategy);
      e2e_row(label, ctx, p,
              [&] { return arbor::make_cuda_context_parallel_runner(model, ro, cp); });
    };
    // The overheads (NCCL with one rank, all-reduce, simulated ranks) at the first context
    // only; after it, all-gather over 2.. GPUs.
    const bool first = i == 0;
    for (auto strategy : {arbor::CpCombine::allgather, arbor::CpCombine::allreduce}) {
      if (!first && strategy != arbor::CpCombine::allgather) continue;
      for (int p = first ? 1 : 2; p <= gpus; p *= 2) cp_row(arbor::CpBackend::nccl, strategy, p);
      if (first) cp_row(arbor::CpBackend::local, strategy, 2);
    }
  }

  // ---- 4. Ring attention vs tree, same kernels, real communicators.
  std::printf("\n## Ring vs tree per layer (µs), batch-1 decode, same kernels\n");
  std::printf(
      "| backend | p | shard tokens | tree | ring (K/V shards passed) | ring of partials | "
      "step ms tree / ring K/V (rest + %d layers) |\n|---|---|---|---|---|---|---|\n",
      layers);
  auto ring_rows = [&](arbor::comm::Group& group, const char* backend,
                       const std::vector<int>& shards) {
    for (int shard : shards) {
      const auto us = ring_vs_tree_us(group, c, shard, layers, prop.multiProcessorCount);
      std::printf("| %s | %zu | %d | %.1f | %.1f | %.1f | %.2f / %.2f |\n", backend, group.size(),
                  shard, us[0], us[1], us[2], rest_ms + layers * us[0] * 1e-3,
                  rest_ms + layers * us[1] * 1e-3);
      std::fflush(stdout);
    }
  };
  for (int p = 2; p <= gpus; p *= 2) {
    std::vector<int> devices;
    for (int i = 0; i < p; ++i) devices.push_back(i);
    arbor::comm::Group group = arbor::comm::make_nccl_group(devices);
    std::vector<int> shards;  // each total context of the model table, split p ways
    for (int L : totals)
      if (L / p <= max_local_context) shards.push_back(L / p);
    ring_rows(group, "nccl", shards);
  }
  for (int p : {2, 4}) {
    arbor::comm::Group group = arbor::comm::make_local_gpu_group(p, 0);
    ring_rows(group, "local-gpu (one GPU, host-synchronized)", {32768, 131072});
  }

  // ---- 5. The model.
  auto model_table = [&](double bw_scale, const char* title) {
    std::printf("\n## %s\n", title);
    std::printf(
        "| context | p | KV GB/GPU | mem GB/GPU | attn ms | combine ms | tree step ms | tree tok/s "
        "| "
        "ring step ms | tree speedup |\n|---|---|---|---|---|---|---|---|---|---|\n");
    for (int L : totals) {
      for (int p : ps) {
        const int local = L / p;
        double a_us;
        if (attn.count(local) && attn[local] > 0) {
          a_us = attn[local];
        } else {  // beyond what was measured: bandwidth-scaled from the largest measured shard
          const auto& [big, big_us] = *attn.rbegin();
          a_us = big_us * double(local) / big;
        }
        a_us *= bw_scale;
        double comb_us = 0;
        if (p > 1) {
          const auto it = nccl_combine.find({p, int(arbor::CpCombine::allgather)});
          comb_us = it != nccl_combine.end() ? it->second : allreduce_us;
        }
        const double shard_bytes = double(local) * kv_per_token / c.num_layers;
        const double hop_us = p2p_us + shard_bytes / (link_gbs * 1e3);
        const double ring_layer = a_us + (p - 1) * std::max(a_us, hop_us);
        const double rest = rest_ms * bw_scale;
        const double tree = rest + layers * (a_us + comb_us) * 1e-3;
        const double ring = rest + layers * ring_layer * 1e-3;
        const double kv_gb = double(local) * kv_per_token * 1e-9;
        std::printf("| %d | %d | %.1f | %.1f | %.2f | %.2f | %.2f | %.1f | %.2f | %.1f× |\n", L, p,
                    kv_gb, kv_gb + weight_bytes * 1e-9 + 2.0, layers * a_us * 1e-3,
                    layers * comb_us * 1e-3, tree, 1000 / tree, ring, ring / tree);
      }
    }
  };
  model_table(1.0, "Model: decode step over p GPUs of this kind (measured parts)");
  if (project_gbs > 0) {
    char title[160];
    std::snprintf(title, sizeof title,
                  "Model projected to %.0f GB/s read bandwidth (attention and the rest scaled "
                  "by %.2f)",
                  project_gbs, read_bw * 1e-9 / project_gbs);
    model_table(read_bw * 1e-9 / project_gbs, title);
  }
  std::printf(
      "# model inputs: combine for p > %d GPUs = %.0f µs (--allreduce-us), ring hop "
      "%.0f µs + shard / %.0f GB/s\n",
      gpus, allreduce_us, p2p_us, link_gbs);
  return 0;
}
