// Decode-attention benchmark: microseconds per layer of cuda::decode_attention, as single
// launches and inside a CUDA graph that replays --layers layers back to back (each layer its
// own KV cache, so the caches together exceed L2), and the bandwidth that implies against
// the device's own measured read bandwidth (the fastest of four load paths: 16-byte loads
// into registers, with and without a 256-byte L2 prefetch, cp.async and bulk copies into shared
// memory; bench/bandwidth.h). With --peer it also runs a peer script (tools/bench_sdpa.py: torch
// SDPA flash and cuDNN on the same shapes, as single calls and in a CUDA graph of --layers calls)
// and prints one table.
//
//   arbor_bench_attention --batch 1,8 --context 1024,4096,32768,131072
//       --peer "python3 tools/bench_sdpa.py"
//
// Built as arbor_bench_attention_trace (a traced build of the kernel), --trace N also replays
// the graph N times with every block recording its timeline and prints, per case, where a
// layer's time goes (bench/attention_trace.h).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include <cuda_runtime.h>

#include "bench/attention_trace.h"
#include "bench/bandwidth.h"
#include "bench/peer.h"
#include "kernels/cuda/bf16.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/pdl.h"

namespace {

using arbor::bench::median;
using arbor::cuda::bf16;
using arbor::cuda::DeviceArray;
using arbor::cuda::DeviceBuffer;
using arbor::cuda::Event;
using arbor::cuda::Graph;
using arbor::cuda::Stream;

// Random bf16 in [-2, 2) from a hash of the index (never all zeros: zeros time differently).
__global__ void fill_random_kernel(bf16* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    uint64_t z = (i + 1) * 0x9e3779b97f4a7c15ull + seed;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    p[i] = __float2bfloat16(float(z >> 40) * 0x1p-24f * 4.0f - 2.0f);
  }
}

void fill_random(bf16* p, size_t n, uint64_t seed, cudaStream_t stream) {
  fill_random_kernel<<<1024, 256, 0, stream>>>(p, n, seed);
  CUDA_CHECK_LAUNCH();
}

std::string join(const std::vector<int>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? "," : "") + std::to_string(v[i]);
  return s;
}

// A kernel that only waits for the previous one and lets the next one start: back to back
// in a graph, its period is the floor any kernel of that grid pays between two launches
// (the previous grid's completion reaching the next grid's griddepcontrol.wait).
__global__ void empty_pdl_kernel() {
  arbor::cuda::pdl_wait();
  arbor::cuda::pdl_launch_dependents();
}

// µs per launch of `layers` empty_pdl_kernel launches of `grid` in one graph (--trace).
double empty_kernel_period_us(dim3 grid, int layers, int replays, cudaStream_t stream) {
  Graph graph;
  graph.capture(stream, [&] {
    for (int l = 0; l < layers; ++l) {
      arbor::cuda::launch_pdl(empty_pdl_kernel, grid, dim3(128), 0, stream);
      CUDA_CHECK_LAUNCH();
    }
  });
  for (int it = 0; it < 3; ++it) graph.launch(stream);
  Event start, stop;
  std::vector<double> us;
  for (int it = 0; it < replays; ++it) {
    start.record(stream);
    graph.launch(stream);
    stop.record(stream);
    us.push_back(stop.elapsed_ms_since(start) * 1e3 / layers);
  }
  return median(us);
}

struct Options {
  std::vector<int> batches = {1, 8};
  std::vector<int> contexts = {1024, 4096, 32768, 131072};
  int hq = 32, hkv = 8, head_dim = 128, block_size = 16;
  int iters = 200, warmup = 20, layers = 32, splits = 0;
  int prologue = -1;  // tiles of each split streamed into shared memory first; -1: as planned
  int ring = -1;      // ring stages (0, 2 or 3; with no prologue); -1: as planned
  int kv_heads_adjacent = -1;  // 1 grid (kv head, split, seq), 0 (split, kv head, seq); -1: planned
  int staged = -1;             // ring plans: 1 merge through shared memory, 0 not; -1: as planned
  int ldmatrix = -1;       // ring plans: 1 steps through ldmatrix, 0 register loads; -1: planned
  int cluster_merge = -1;  // 1 splits merged in a thread-block cluster, 0 through L2; -1: planned
  int plan_context = 0;    // plan for this many tokens (>= the context); 0: the context
  int trace = 0;           // traced graph replays (a traced build only)
  bool overlap = true;
  std::string mode = "both";
  std::string block_order = "shuffled";
  std::string peer;
};

// Peer results keyed by (batch, context, backend): microseconds of a single call and per
// call in a graph, or NaN with a note.
using PeerKey = std::tuple<int, int, std::string>;
struct PeerResult {
  double us = NAN, graph_us = NAN;
  std::string note;
};

std::map<PeerKey, PeerResult> run_peer(const Options& o) {
  std::map<PeerKey, PeerResult> results;
  const std::string cmd = o.peer + " --batch " + join(o.batches) + " --context " +
                          join(o.contexts) + " --hq " + std::to_string(o.hq) + " --hkv " +
                          std::to_string(o.hkv) + " --head-dim " + std::to_string(o.head_dim) +
                          " --iters " + std::to_string(o.iters) + " --layers " +
                          std::to_string(o.layers);
  arbor::bench::run_peer_command(cmd, "backend", [&results](const nlohmann::json& j) {
    PeerResult r;
    if (j.contains("us") && j["us"].is_number()) r.us = j["us"].get<double>();
    if (j.contains("graph_us") && j["graph_us"].is_number())
      r.graph_us = j["graph_us"].get<double>();
    std::vector<std::string> notes;
    if (j.contains("error")) notes.push_back(j["error"].get<std::string>());
    if (j.contains("graph_error")) notes.push_back("graph: " + j["graph_error"].get<std::string>());
    if (j.contains("gqa") && j["gqa"] == "expanded") notes.push_back("kv heads expanded");
    for (const auto& n : notes) r.note += (r.note.empty() ? "" : ", ") + n;
    results[{j.value("batch", 0), j.value("context", 0), j.value("backend", "")}] = r;
  });
  return results;
}

struct Row {
  int batch = 0, context = 0, splits = 0, layers_used = 0;
  double single_us = NAN, graph_us = NAN, bytes = 0;
  std::string note;
  arbor::bench::DecodeTraceSummary trace;
  double floor_us = NAN;  // empty kernels of the same grid, back to back (--trace)
};

// `pool`: the K/V caches of every case, allocated once before the first (a case allocating
// its own caches after a larger one freed its ran slower: H100, batch 32 x 1k 48.4 us per
// layer alone or after shorter cases, 55.7 after batch 32 x 32k; bench/RESULTS.md). A model
// allocates its KV cache once, at startup, too.
Row run_case(const Options& o, int batch, int context, int sms, const DeviceBuffer& pool,
             cudaStream_t stream) {
  Row row;
  row.batch = batch;
  row.context = context;
  const int blocks_per_seq = (context + o.block_size - 1) / o.block_size;
  const size_t num_blocks = size_t(batch) * size_t(blocks_per_seq);
  const size_t cache_elems = num_blocks * size_t(o.hkv) * size_t(o.block_size) * size_t(o.head_dim);
  const size_t layer_bytes = 2 * cache_elems * sizeof(bf16);
  const size_t q_elems = size_t(batch) * size_t(o.hq) * size_t(o.head_dim);
  // Bytes one layer must move: the K and V rows in context, q in, out back.
  row.bytes = 2.0 * double(batch) * context * o.hkv * o.head_dim * sizeof(bf16) +
              2.0 * double(q_elems) * sizeof(bf16);

  row.layers_used =
      int(std::min<size_t>(size_t(o.layers), pool.bytes() / std::max<size_t>(layer_bytes, 1)));
  if (row.layers_used == 0) {
    row.note = "KV cache does not fit";
    return row;
  }

  std::vector<bf16*> caches;  // per layer: K then V, consecutive in the pool
  for (int l = 0; l < row.layers_used; ++l) {
    caches.push_back(pool.as<bf16>() + size_t(l) * 2 * cache_elems);
    fill_random(caches.back(), 2 * cache_elems, 1000 + uint64_t(l), stream);
  }
  // Shuffled block tables, as a long-running server's pool would give; sequential ones lay
  // each sequence's blocks out in order, to measure what the scattered pages cost.
  std::vector<int32_t> perm(num_blocks);
  std::iota(perm.begin(), perm.end(), 0);
  if (o.block_order == "shuffled") std::shuffle(perm.begin(), perm.end(), std::mt19937_64(42));
  // A plan for a longer context needs table rows that long (the blocks past the context are
  // never read; block 0 stands in for them).
  const int plan_ctx = std::max(context, o.plan_context);
  const int table_stride = std::max(blocks_per_seq, (plan_ctx + o.block_size - 1) / o.block_size);
  std::vector<int32_t> host_tables(size_t(batch) * size_t(table_stride), 0);
  for (int s = 0; s < batch; ++s)
    std::copy_n(perm.begin() + size_t(s) * blocks_per_seq, blocks_per_seq,
                host_tables.begin() + size_t(s) * table_stride);
  DeviceArray<int32_t> tables(host_tables.size());
  DeviceArray<int32_t> lens{size_t(batch)};
  tables.upload(host_tables.data(), host_tables.size(), stream);
  const std::vector<int32_t> host_lens(size_t(batch), context);
  lens.upload(host_lens.data(), host_lens.size(), stream);
  DeviceArray<bf16> q(q_elems), out(q_elems);
  fill_random(q.data(), q_elems, 7, stream);

  arbor::cuda::DecodeAttentionParams p;
  p.q = q.data();
  p.block_tables = tables.data();
  p.context_lens = lens.data();
  p.num_seqs = batch;
  p.num_q_heads = o.hq;
  p.num_kv_heads = o.hkv;
  p.head_dim = o.head_dim;
  p.block_size = o.block_size;
  p.max_blocks_per_seq = table_stride;
  p.scale = 1.0f / std::sqrt(float(o.head_dim));
  p.max_context_len = plan_ctx;
  p.out = out.data();
  // The launch before each one is another attention, which writes only `out`: K/V and the
  // tables may be read early, as in a model's step after its RoPE + KV write.
  p.overlap_previous_kernel = o.overlap;
  auto plan = arbor::cuda::plan_decode_attention(p, sms, o.splits);
  // Any count up to the kernel's maximum is valid: tokens past the prologue are read from
  // global memory (with more shared memory per block, fewer blocks may fit one wave).
  if (o.prologue >= 0) plan.prologue_tiles = o.prologue;
  if (o.ring >= 0) plan.ring_stages = o.ring;
  if (o.staged >= 0) plan.staged_merge = o.staged == 1;
  // A plan without a ring (or forced to none) takes no ldmatrix steps unless asked.
  if (o.ldmatrix >= 0) {
    plan.ring_ldmatrix = o.ldmatrix == 1;
  } else if (plan.ring_stages == 0) {
    plan.ring_ldmatrix = false;
  }
  if (o.kv_heads_adjacent >= 0) plan.kv_heads_adjacent = o.kv_heads_adjacent == 1;
  if (o.cluster_merge >= 0) {
    plan.cluster_merge = o.cluster_merge == 1;
  } else if (plan.ring_stages == 0 || plan.staged_merge || plan.kv_heads_adjacent) {
    plan.cluster_merge = false;  // a forced setting the cluster merge cannot run with
  }
  row.splits = plan.num_splits;
  // The plan's path, in the note column.
  std::string path = plan.prologue_tiles > 0 ? "prologue" : "";
  if (plan.ring_stages > 0) path = "ring " + std::to_string(plan.ring_stages);
  if (plan.ring_ldmatrix) path += ", ldmatrix";
  if (plan.staged_merge) path += ", staged merge";
  if (plan.cluster_merge) path += ", cluster merge";
  if (plan.kv_heads_adjacent) path += (path.empty() ? "" : ", ") + std::string("kv heads adjacent");
  row.note = path;
  DeviceBuffer workspace(plan.workspace_bytes);
  if (plan.workspace_bytes) CUDA_CHECK(cudaMemset(workspace.get(), 0, plan.workspace_bytes));
  auto launch_layer = [&](int layer) {
    const bf16* k = caches[size_t(layer % row.layers_used)];
    p.k_cache = k;
    p.v_cache = k + cache_elems;
    arbor::cuda::decode_attention(p, plan, workspace.get(), stream);
  };
  CUDA_CHECK(cudaStreamSynchronize(stream));

  Event start, stop;
  if (o.mode != "graph") {  // single launches, each timed alone, rotating over the caches
    std::vector<double> us;
    for (int it = 0; it < o.warmup + o.iters; ++it) {
      start.record(stream);
      launch_layer(it);
      stop.record(stream);
      const double ms = stop.elapsed_ms_since(start);
      if (it >= o.warmup) us.push_back(ms * 1e3);
    }
    row.single_us = median(us);
  }
  if (o.mode != "single") {  // --layers launches back to back in one graph
    Graph graph;
    graph.capture(stream, [&] {
      for (int l = 0; l < o.layers; ++l) launch_layer(l);
    });
    for (int it = 0; it < std::max(3, o.warmup / 4); ++it) graph.launch(stream);
    std::vector<double> us;
    for (int it = 0; it < std::max(5, o.iters / 4); ++it) {
      start.record(stream);
      graph.launch(stream);
      stop.record(stream);
      us.push_back(stop.elapsed_ms_since(start) * 1e3 / o.layers);
    }
    row.graph_us = median(us);
  }
  if (o.trace > 0) {  // the same graph, every block writing its timeline
    const int words = arbor::cuda::decode_attention_trace_words();
    const int blocks = plan.num_splits * o.hkv * batch;
    const size_t per_layer = size_t(blocks) * size_t(words);
    DeviceArray<uint64_t> trace(size_t(o.layers) * per_layer);
    Graph traced;
    traced.capture(stream, [&] {
      for (int l = 0; l < o.layers; ++l) {
        p.trace = trace.data() + size_t(l) * per_layer;
        launch_layer(l);
      }
    });
    p.trace = nullptr;
    for (int it = 0; it < 3; ++it) traced.launch(stream);
    arbor::bench::DecodeTraceAnalysis analysis(words, blocks);
    std::vector<uint64_t> host(trace.size());
    for (int it = 0; it < o.trace; ++it) {
      CUDA_CHECK(cudaMemsetAsync(trace.data(), 0, trace.bytes(), stream));
      traced.launch(stream);
      trace.download(host.data(), host.size(), stream);
      CUDA_CHECK(cudaStreamSynchronize(stream));
      analysis.add_replay(host, o.layers);
    }
    row.trace = analysis.summary();
    row.floor_us =
        empty_kernel_period_us(dim3(unsigned(plan.num_splits), unsigned(o.hkv), unsigned(batch)),
                               o.layers, std::max(5, o.iters / 4), stream);
  }
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return row;
}

// Where a layer's time goes (--trace), one line per case after the table.
void print_trace(const Row& r) {
  const auto& t = r.trace;
  std::printf("%6d %8d %6d", r.batch, r.context, r.splits);
  for (const std::string& c : arbor::bench::DecodeTraceAnalysis::columns()) {
    const auto it = t.us.find(c);
    std::printf(" %8.2f", it == t.us.end() ? NAN : it->second);
  }
  std::printf(" %9.2f %7.2f %6d %8.0f %6.3f\n", r.graph_us, r.floor_us, t.layers, t.timer_step_ns,
              t.clock_ghz);
}

std::string fmt(double v, const char* f = "%.2f") {
  if (std::isnan(v)) return "-";
  char b[64];
  std::snprintf(b, sizeof b, f, v);
  return b;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"Decode attention (flash-decoding) benchmark"};
  app.add_option("--batch", o.batches, "batch sizes, comma separated")->delimiter(',');
  app.add_option("--context", o.contexts, "context lengths, comma separated")->delimiter(',');
  app.add_option("--hq", o.hq, "query heads");
  app.add_option("--hkv", o.hkv, "KV heads");
  app.add_option("--head-dim", o.head_dim, "head dim (64 or 128)");
  app.add_option("--block-size", o.block_size, "KV cache block size");
  app.add_option("--iters", o.iters, "timed iterations (graph mode: a quarter as many replays)");
  app.add_option("--warmup", o.warmup, "untimed iterations first");
  app.add_option("--layers", o.layers, "layers per graph replay, each with its own KV cache");
  app.add_option("--block-order", o.block_order,
                 "shuffled (a server's pool after a while) or sequential block tables")
      ->check(CLI::IsMember({"shuffled", "sequential"}));
  app.add_option("--splits", o.splits, "force this split count (0: the plan chooses)");
  app.add_option("--overlap", o.overlap,
                 "1: read K/V before the previous launch completes (as the model does), 0: not");
  app.add_option("--prologue", o.prologue,
                 "tiles of each split streamed into shared memory before the previous launch "
                 "ends: -1 as the plan decides (whole short splits), 0 none, N the first N");
  app.add_option("--ring", o.ring,
                 "ring stages: -1 as planned, 0 none, 2 or 3 (needs no prologue: --prologue 0 "
                 "where the plan has one)")
      ->check(CLI::IsMember({-1, 0, 2, 3}));
  app.add_option("--staged", o.staged,
                 "ring plans' merge: -1 as planned, 1 through the ring's shared memory, 0 from "
                 "registers (with --splits, the plan takes no ring: give --ring too)")
      ->check(CLI::IsMember({-1, 0, 1}));
  app.add_option("--ldmatrix", o.ldmatrix,
                 "ring plans' steps: -1 as planned, 1 through ldmatrix, 0 register loads")
      ->check(CLI::IsMember({-1, 0, 1}));
  app.add_option("--cluster-merge", o.cluster_merge,
                 "merge of the splits: -1 as planned, 1 in a thread-block cluster through shared "
                 "memory (ring plans of 2-8 splits, GQA 4), 0 through L2")
      ->check(CLI::IsMember({-1, 0, 1}));
  app.add_option("--kv-heads-adjacent", o.kv_heads_adjacent,
                 "grid order: -1 as planned, 1 one split's KV heads launched next to each other, "
                 "0 one KV head's splits")
      ->check(CLI::IsMember({-1, 0, 1}));
  app.add_option("--plan-context", o.plan_context,
                 "plan for this many tokens and run at each --context, as the model's captured "
                 "decode graphs do (planned for its longest context); 0: plan for the context");
  app.add_option("--trace", o.trace,
                 "replay the graph this many more times with block timelines and print where "
                 "a layer's time goes (arbor_bench_attention_trace only)");
  app.add_option("--mode", o.mode, "single, graph or both")
      ->check(CLI::IsMember({"single", "graph", "both"}));
  app.add_option("--peer", o.peer,
                 "command printing JSON result lines for the same shapes, e.g. "
                 "\"python3 tools/bench_sdpa.py\"");
  CLI11_PARSE(app, argc, argv);
  if (o.trace > 0 && arbor::cuda::decode_attention_trace_words() == 0) {
    std::fprintf(stderr,
                 "error: --trace needs a traced build of the kernel: run "
                 "arbor_bench_attention_trace\n");
    return 2;
  }

  try {
    int device = 0;
    CUDA_CHECK(cudaGetDevice(&device));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
    const int sms = prop.multiProcessorCount;

    // The peer runs first, alone on the GPU, and releases its memory when it exits.
    std::map<PeerKey, PeerResult> peer;
    if (!o.peer.empty()) peer = run_peer(o);

    Stream stream;
    const arbor::bench::ReadPaths read_paths = arbor::bench::measure_read_paths();
    // The ceiling is the fastest path: a kernel can choose its loads (H100: the copies into
    // shared memory read ~1% faster than loads into registers, and cuDNN's SDPA exceeded
    // the loads' figure; bench/RESULTS.md).
    const double read_bw = read_paths.fastest();
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    const DeviceBuffer kv_pool(size_t(double(free_bytes) * 0.85) / 4096 * 4096);

    char date[64];
    const std::time_t now = std::time(nullptr);
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S %Z", std::localtime(&now));
    std::printf("device: %s (%d SMs, L2 %.0f MiB), %s\n", prop.name, sms,
                prop.l2CacheSize / 1048576.0, date);
    std::printf(
        "measured read bandwidth: %.0f GB/s (the fastest of: loads %.0f, loads with a 256-byte "
        "prefetch %.0f, cp.async %.0f, bulk copies %.0f)\n",
        read_bw * 1e-9, read_paths.loads * 1e-9, read_paths.loads_prefetch * 1e-9,
        read_paths.cp_async * 1e-9, read_paths.bulk * 1e-9);
    std::printf(
        "4 KiB pages in shuffled order (a paged cache's reads): loads with the prefetch %.0f, "
        "cp.async %.0f, bulk copies %.0f GB/s\n",
        read_paths.paged_loads * 1e-9, read_paths.paged_cp_async * 1e-9,
        read_paths.paged_bulk * 1e-9);
    // A -1 / 0 / 1 option as the header shows it.
    const auto on_off = [](int v) { return v < 0 ? "as planned" : v ? "on" : "off"; };
    std::printf(
        "shape: hq=%d hkv=%d head_dim=%d block_size=%d (%s), bf16; graph: %d layers/replay; "
        "overlap %d, prologue %s, ring %s, staged merge %s, ldmatrix %s, cluster merge %s, kv "
        "heads adjacent %s, plan for %s\n",
        o.hq, o.hkv, o.head_dim, o.block_size, o.block_order.c_str(), o.layers, int(o.overlap),
        o.prologue < 0 ? "as planned" : (std::to_string(o.prologue) + " tiles").c_str(),
        o.ring < 0 ? "as planned" : (std::to_string(o.ring) + " stages").c_str(), on_off(o.staged),
        on_off(o.ldmatrix), on_off(o.cluster_merge), on_off(o.kv_heads_adjacent),
        o.plan_context > 0 ? (std::to_string(o.plan_context) + " tokens").c_str() : "the context");
    std::printf(
        "GB/s and %% use the graph time (else single); %%read: against the fastest read path, "
        "%%paged: against the loads over 4 KiB pages in shuffled order; SDPA: dense KV, µs of a "
        "single call (flash, cudnn) and per call in a graph of %d calls (flash_g, cudnn_g)\n\n",
        o.layers);
    std::printf("%6s %8s %6s %7s %10s %12s %8s %7s %7s %9s %9s %9s %9s  %s\n", "batch", "context",
                "splits", "caches", "single_us", "graph_us/ly", "GB/s", "%read", "%paged", "flash",
                "cudnn", "flash_g", "cudnn_g", "note");
    std::vector<Row> rows;
    for (int b : o.batches) {
      for (int c : o.contexts) {
        const Row r = run_case(o, b, c, sms, kv_pool, stream.get());
        rows.push_back(r);
        const double t = std::isnan(r.graph_us) ? r.single_us : r.graph_us;
        const double gbs = r.bytes / (t * 1e-6) * 1e-9;
        const auto pf = peer.find({b, c, "flash"});
        const auto pc = peer.find({b, c, "cudnn"});
        std::string note = r.note;
        for (const auto* it : {&pf, &pc}) {
          if (*it != peer.end() && !(*it)->second.note.empty()) {
            note +=
                (note.empty() ? "" : "; ") + std::get<2>((*it)->first) + ": " + (*it)->second.note;
          }
        }
        const PeerResult none;
        const PeerResult& flash = pf != peer.end() ? pf->second : none;
        const PeerResult& cudnn = pc != peer.end() ? pc->second : none;
        std::printf("%6d %8d %6d %7d %10s %12s %8s %7s %7s %9s %9s %9s %9s  %s\n", b, c, r.splits,
                    r.layers_used, fmt(r.single_us).c_str(), fmt(r.graph_us).c_str(),
                    fmt(gbs, "%.0f").c_str(), fmt(100.0 * gbs * 1e9 / read_bw, "%.1f").c_str(),
                    fmt(100.0 * gbs * 1e9 / read_paths.paged_loads, "%.1f").c_str(),
                    fmt(flash.us).c_str(), fmt(cudnn.us).c_str(), fmt(flash.graph_us).c_str(),
                    fmt(cudnn.graph_us).c_str(), note.c_str());
        std::fflush(stdout);
      }
    }
    if (o.trace > 0) {
      std::printf(
          "\nWhere a layer's time goes (traced build, %d replays; medians over layers, µs): "
          "period = release to release; lead = blocks resident before release (started: the "
          "critical block); then the "
          "critical block (last merger): compute (within it, loaded: its requests before the "
          "wait in shared memory), publish, arrive, merge, level2, exit; "
          "handoff = last block's end to the next release; spread = first to last block's "
          "steps done; last%% = share of layers whose critical block is its sequence's last split; "
          "untraced = this build's µs per layer with recording off; floor = "
          "µs per launch of empty kernels of the same grid, back to back in a graph "
          "(bench/attention_trace.h)\n",
          o.trace);
      std::printf("%6s %8s %6s", "batch", "context", "splits");
      for (const std::string& c : arbor::bench::DecodeTraceAnalysis::columns())
        std::printf(" %8s", c.c_str());
      std::printf(" %9s %7s %6s %8s %6s\n", "untraced", "floor", "layers", "timer_ns", "GHz");
      for (const Row& r : rows) print_trace(r);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
