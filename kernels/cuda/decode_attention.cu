// Flash-decoding over the paged KV cache (contract: kernels/cuda/decode_attention.h).
//
// One launch, grid (split, kv head, sequence), 4 warps per block:
//
//   1. Each block takes a contiguous range of its sequence's context. The number of splits a
//      sequence really uses comes from its device-side length (splits_used below), so one
//      plan and one captured graph serve every length up to the planned maximum; split
//      blocks past that count exit at once.
//   2. Prologue (kernel variant kPrologue), for splits short enough (the plan decides, see
//      prologue_tiles below): the whole split is requested as bulk copies into shared memory
//      (kernels/cuda/bulk_copy.cuh), one per cache page, each tile completing on its own
//      mbarrier. With overlap_previous_kernel this happens before griddepcontrol.wait, while
//      the previous kernel (RoPE + KV write) still runs, so a short context is on chip when
//      q arrives; the one row that kernel may be writing (each sequence's last) is read
//      again after the wait.
//   3. Otherwise (and for any tokens past the prologue) each warp walks its own tokens with
//      no block-level barrier, kRowGroups K and V loads per lane in flight before any is
//      used. A lane owns 8 consecutive head-dim values (one 16-byte load) of one token row,
//      so a warp reads 32 / (head_dim / 8) rows per instruction, fully coalesced. Both paths
//      feed the same step (accumulate): the query heads of the KV group live in registers
//      (pre-multiplied by scale·log2 e), so each K/V byte is read once for all of them;
//      scores are summed across the lanes of a row with xor shuffles; the softmax is online
//      (running max per head, base 2), accumulated in fp32. For head dim 128 with GQA 4 or 8
//      and cache blocks of 16 tokens or more (Llama-3 shapes), these steps run on tensor
//      cores instead (mma_steps; H200: up to 14% faster at long contexts, 93-97% of read
//      bandwidth from batch 8 x 32k on, bench/RESULTS.md), over global memory or over the
//      prologue's tiles (mma_prologue_steps); without a prologue and with
//      overlap_previous_kernel each warp requests its first step before the wait.
//   4. At the end the warps' (m, l, o) are merged through shared memory. A sequence that
//      uses one split writes its output directly; otherwise each split writes its partial
//      (m, l, unnormalized o) to the workspace (held in L2: store_partial), and the last
//      block to arrive on an atomic counter (acquire-release) merges them; with 40 splits or
//      more, in two levels: per group of 8 consecutive splits, then over the groups. The merge
//      loads the partials into registers, or for ring plans with many or long splits
//      (plan.staged_merge) copies them all at once into the ring's shared memory. Each last
//      block resets its counter to zero, so the next launch (or graph replay) starts from
//      zero without a memset.
#include "kernels/cuda/decode_attention.h"

#include <cuda/atomic>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/cuda/bulk_copy.cuh"
#include "kernels/cuda/check.h"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/exp2.cuh"
#include "kernels/cuda/load.cuh"
#include "kernels/cuda/mma_sync.cuh"
#include "kernels/cuda/pdl.h"
#include "kernels/paged_kv.h"

namespace arbor::cuda {

namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kMaxSplits = 1024;
// A split covers at least this many tokens when the plan has a choice: below it the merge
// (one more pass over the partials) costs more than the extra parallelism buys.
constexpr int kMinTokensPerSplit = 128;
// Partials in flight per thread in the last block's merge (independent L2 loads): 8 instead
// of 4 took 4-5% off batch-1 decode attention (H100: 8.61 -> 8.27 us at 1k, 57.5 -> 55.8 at
// 32k); 16 helped batch 1 as much but cost batch 8 up to 6% (bench/RESULTS.md).
constexpr int kMergeUnroll = 8;
// Splits merged together first, by the last of them to finish (a two-level merge, see the
// end of the kernel): as many as one round of the merge loop has in flight; and the fewest
// used splits that take the two levels (below, one merge of all partials is faster: it
// saves an atomic round trip that costs about as much as 3 rounds of merge loads, H200).
constexpr int kMergeGroup = kMergeUnroll;
constexpr int kTwoLevelMinSplits = 5 * kMergeUnroll;
// The short-context rule of the plan (plan_decode_attention): contexts past the prologue's
// reach, up to this long, take splits of this many tokens (at least kMergeUnroll splits, at
// most kShortRingMaxSplits) through 3-stage rings.
constexpr int kShortRingMaxContext = 7168;
constexpr int kShortRingSplitTokens = 256;
// Batch 2's 16 (sequence, kv head) pairs times 16 splits fill one wave of 3-stage ring blocks
// (2 per SM on 132 SMs); 24 took two (H100, batch 2 x 5120: 17.78 us with 16 splits, 23.30
// with 24).
constexpr int kShortRingMaxSplits = 16;
// At GQA 4, where the (sequence, kv head) pairs times kShortRingWideSplits take at most three
// quarters of the ring blocks' slots (batch 1 at 8 kv heads: 192 of 264), contexts from
// kShortRingWideFrom up to kShortRingWideMaxContext take that many splits instead (H100, per
// layer in a graph, 16 -> 24 splits: batch 1 x 5.5k 11.33 -> 11.03 us, x 6k 11.84 -> 10.29,
// x 7k 14.18 -> 13.23, x 8k 16.0 -> 13.66; 33 -> 24 as mid-sized: x 8k 14.8 -> 13.7, x 9k
// 16.67 -> 15.05; but x 5k 9.65 -> 10.9, x 4k 7.8 -> 9.9, and x 10k 17.35 -> 19.0). GQA 8
// gains at some of these lengths and loses at others (x 5.5k 12.5 -> 13.9, x 6k 12.8 ->
// 12.5, x 7k 15.1 -> 16.3, x 8k 17.3 -> 15.7) and keeps the other rules.
constexpr int kShortRingWideSplits = 24;
constexpr int kShortRingWideFrom = 5632;
constexpr int kShortRingWideMaxContext = 9216;
// Batch-1 ring plans with this many splits or more keep the register steps (ring_ldmatrix).
constexpr int kLdmatrixMaxSplitsBatch1 = 16;

// The plan's mid-sized rule: batches whose sequences hold this many tokens in all (max
// context x sequences), from kRingMinBatchTokens to kRingMaxBatchTokens, take 3-stage rings
// (plan_decode_attention); at GQA 4, below kRingSmallBatchTokens, only contexts longer than
// kRingSmallMaxShortContext do.
constexpr int64_t kRingMinBatchTokens = 8192;
constexpr int64_t kRingSmallBatchTokens = 16384;
constexpr int64_t kRingSmallMaxShortContext = 1024;
constexpr int64_t kRingMaxBatchTokens = 65536;
constexpr int64_t kRingMaxBatchTokensGqa8 = 131072;  // GQA 8 gains up to twice as many
// Splits short enough for the prologue take 3-stage rings instead (same splits) when all their
// blocks fit one wave of ring blocks, except the shortest contexts: up to this many tokens at
// batch 1, and below kPrologueMinRingContextBatched at larger batches (plan_decode_attention).
constexpr int64_t kPrologueMaxContext = 512;
constexpr int64_t kPrologueMinRingContextBatched = 256;
// The ring plans whose merge goes through shared memory (staged_merge): more than two
// rounds of the register merge's loads (2 kMergeUnroll splits), or at batch 2 and more, at
// least this many splits of at least this many tokens.
constexpr int kStagedMergeMinSplits = 4;
constexpr int64_t kStagedMergeMinSplitTokens = 256;
// Batches whose sequences hold this many tokens in all (max context x sequences) launch the
// blocks of one split's KV heads next to each other (plan.kv_heads_adjacent). A cache block
// holds all KV heads' K rows (and V rows) contiguously, so the blocks launched together read
// 32 KiB runs instead of scattered 4 KiB pages (the paged-read probe of bench/bandwidth.cu:
// 4 KiB pages in shuffled order 3152-3164 GB/s, grouped by 8 3171-3184, H100). In-run, same
// build, one KV head's splits -> one split's KV heads, per layer in a graph: batch 1 x 16k
// 23.13 -> 23.06 us, x 32k 44.05 -> 43.78, x 128k 174.18 -> 173.88, batch 2 x 16k 43.35 ->
// 43.24, GQA 8 batch 1 x 32k 47.16 -> 46.96; level at batch 8-32 from 4k; but batch 1 x 8k
// 13.09 -> 13.23, GQA 8 batch 1 x 1k 5.33 -> 5.40 (bench/RESULTS.md).
constexpr int64_t kKvHeadsAdjacentMinBatchTokens = 16384;
// Merge counters per (sequence, kv head) in the workspace, for any plan: one for the groups,
// one per group of kMergeGroup splits. A fixed stride keeps each pair's counters in the same
// place whatever the plan, so that plans can share a workspace (workspace_num_seqs).
constexpr int kCountersPerPair = 1 + (kMaxSplits + kMergeGroup - 1) / kMergeGroup;
// Shared memory for a split streamed whole into the prologue (plan_decode_attention).
constexpr int kMaxPrologueBytes = 64 * 1024;
// Shared memory of one Hopper SM, and what a resident block costs beyond its dynamic part
// (1 KiB reserved by the hardware, under 1 KiB of static variables).
constexpr int kSmemPerSm = 228 * 1024;
constexpr int kSmemPerBlockExtra = 2 * 1024;
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Compile-time shape of one kernel variant (head dim D, query heads per KV head G).
template <int D, int G>
struct Tile {
  static constexpr int kLanesPerRow = D / 8;              // 16 bytes = 8 bf16 per lane
  static constexpr int kRowsPerWarp = 32 / kLanesPerRow;  // token rows per warp-wide read
  // K and V rows per lane per step (register loads in flight: 2 · kRowGroups · 16 bytes).
  static constexpr int kRowGroups = G <= 2 ? 8 : 4;
  static constexpr int kTokensPerWarpIter = kRowsPerWarp * kRowGroups;
  static constexpr int kTileTokens = kTokensPerWarpIter * kWarps;  // one step of the block
  static constexpr int kTileBytes = kTileTokens * D * 2;           // K or V of a tile
  // Most tiles a prologue holds (bulk copies into shared memory).
  static constexpr int kMaxPrologueTiles = kMaxPrologueBytes / (2 * kTileBytes);
  static_assert(kMaxPrologueTiles >= 1, "a prologue holds at least one tile");
  // The warps' partials (o, m, l) at the end, in the same dynamic shared memory.
  static constexpr int kMergeBytes = kWarps * G * (D + 2) * 4;
  // Resident blocks per SM the CUDA-core steps' register budget is set for (__launch_bounds__:
  // 128 registers at 4 blocks, 255 at 2); the plan sizes one wave with it (with
  // kMmaBlocksPerSm for the tensor-core steps). G = 8 holds 64 query and 64 accumulator
  // registers per lane, so it gets the larger budget. Shared memory allows more.
  static constexpr int kBlocksPerSm = G == 8 ? 2 : 4;
};

// Resident blocks per SM of the tensor-core steps (kMma) at any GQA ratio: they fit in 128
// registers at GQA 8 too.
constexpr int kMmaBlocksPerSm = 4;

// Runtime view of Tile<D, G>, for the host-side plan.
struct TileInfo {
  int tile_tokens;
  int tile_kv_bytes;  // K and V of one tile
  int max_prologue_tiles;
  int merge_bytes;
  int blocks_per_sm;
};

template <int D, int G>
constexpr TileInfo tile_info() {
  using T = Tile<D, G>;
  return {T::kTileTokens, 2 * T::kTileBytes, T::kMaxPrologueTiles, T::kMergeBytes, T::kBlocksPerSm};
}

TileInfo tile_info(int head_dim, int group) {
  if (head_dim == 64) {
    return group == 1   ? tile_info<64, 1>()
           : group == 2 ? tile_info<64, 2>()
           : group == 4 ? tile_info<64, 4>()
                        : tile_info<64, 8>();
  }
  return group == 1   ? tile_info<128, 1>()
         : group == 2 ? tile_info<128, 2>()
         : group == 4 ? tile_info<128, 4>()
                      : tile_info<128, 8>();
}

struct KernelArgs {
  const bf16* q;
  const bf16* k_cache;
  const bf16* v_cache;
  const int32_t* block_tables;
  const int32_t* context_lens;
  bf16* out;
  float* out_f32;  // may be null
  float* lse;      // may be null
  // Workspace (used only when num_splits > 1), indexed by pair = seq * num_kv_heads + kvh;
  // a pair's parts are its splits' partials, then its groups' (see the merge):
  float* ws_o;         // [pair][parts_per_pair][G][D], unnormalized partial outputs
  float* ws_m;         // [pair][parts_per_pair][G], running max (base 2, scaled scores)
  float* ws_l;         // [pair][parts_per_pair][G], sum of exp2(score - m)
  int* counters;       // [pair][kCountersPerPair], arrivals (see the merge); zero between launches
  int parts_per_pair;  // num_splits + groups: partials per pair in ws_o, ws_m, ws_l
  int num_kv_heads;
  int max_blocks_per_seq;
  int block_shift;  // log2(block_size)
  int cp_size;      // context parallelism: attend to this rank's share (kernels/paged_kv.h)
  int cp_rank;
  int num_splits;      // plan.num_splits = gridDim.x (gridDim.y with kv_heads_adjacent)
  int prologue_tiles;  // plan.prologue_tiles: a split's tiles streamed into shared memory
  float scale_log2;    // scale * log2(e): scores are kept in base 2
  bool overlap_previous_kernel;
  bool kv_heads_adjacent;  // plan.kv_heads_adjacent: grid (kv head, split, sequence)
#if ARBOR_DECODE_TRACE
  uint64_t* trace;  // DecodeAttentionParams::trace
#endif
};

// The block's timeline (DecodeAttentionTracePhase in the header), kept by thread 0 in a traced
// build; elsewhere every call compiles to nothing, so the kernels are those of a build
// without tracing.
#if ARBOR_DECODE_TRACE
constexpr int kTraceWords = kDecodeAttentionTraceHeader + kTracePhases;

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__device__ __forceinline__ uint32_t sm_id() {
  uint32_t id;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
  return id;
}

class BlockTrace {
 public:
  __device__ explicit BlockTrace(const KernelArgs& a) {
    if (a.trace && threadIdx.x == 0) {
      const size_t block = (size_t(blockIdx.z) * gridDim.y + blockIdx.y) * gridDim.x + blockIdx.x;
      rec_ = a.trace + block * kTraceWords;
      rec_[kDecodeAttentionTraceHeader + kTraceStart] = clock64();
      rec_[1] = global_timer_ns();
    }
  }
  __device__ void at(int phase) {
    if (rec_) rec_[kDecodeAttentionTraceHeader + phase] = clock64();
  }
  __device__ void role(uint32_t flag) { role_ |= flag; }
  __device__ void end() {
    if (!rec_) return;
    rec_[kDecodeAttentionTraceHeader + kTraceEnd] = clock64();
    rec_[2] = global_timer_ns();
    rec_[0] = sm_id() | uint64_t(role_) << 32;
  }

 private:
  uint64_t* rec_ = nullptr;
  uint32_t role_ = 0;
};
#else
class BlockTrace {
 public:
  __device__ explicit BlockTrace(const KernelArgs&) {}
  __device__ void at(int) {}
  __device__ void role(uint32_t) {}
  __device__ void end() {}
};
#endif

__device__ __forceinline__ int ceil_div(int a, int b) {
  return (a + b - 1) / b;
}

// Splits sequence of length `len` uses, and the tokens each covers (a multiple of `gran`).
// Every block of a (sequence, kv head) computes this from the same device-side length, so
// they agree on the count the merge waits for.
__device__ __forceinline__ int splits_used(int len, int num_splits, int gran, int* chunk) {
  if (len <= 0) return 0;
  *chunk = ceil_div(ceil_div(len, num_splits), gran) * gran;
  return ceil_div(len, *chunk);
}

// Eight bf16 (one uint4) to fp32: a bf16 is the high half of the fp32 with the same value.
__device__ __forceinline__ void unpack8(const uint4& u, float (&f)[8]) {
  const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    f[2 * i] = __uint_as_float(w[i] << 16);
    f[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u);
  }
}

__device__ __forceinline__ float4 scale_add(float4 acc, float a, float4 x, float b) {
  return make_float4(acc.x * a + x.x * b, acc.y * a + x.y * b, acc.z * a + x.z * b,
                     acc.w * a + x.w * b);
}

// Final output of query head `hq`, dims [d, d + 4), from the merged (m, l, o). l >= 1 here:
// the top-scoring token contributes exp2(0).
template <int D>
__device__ __forceinline__ void write_final(const KernelArgs& a, size_t row, int d, float4 o,
                                            float l, float m) {
  const float inv = 1.0f / l;
  o = make_float4(o.x * inv, o.y * inv, o.z * inv, o.w * inv);
  const __nv_bfloat162 lo = __floats2bfloat162_rn(o.x, o.y);
  const __nv_bfloat162 hi = __floats2bfloat162_rn(o.z, o.w);
  uint2 packed;
  packed.x = *reinterpret_cast<const uint32_t*>(&lo);
  packed.y = *reinterpret_cast<const uint32_t*>(&hi);
  *reinterpret_cast<uint2*>(a.out + row * D + d) = packed;
  if (a.out_f32) *reinterpret_cast<float4*>(a.out_f32 + row * D + d) = o;
  if (a.lse && d == 0) a.lse[row] = (m + log2f(l)) * kLn2;
}

// Element offset of the first head-dim value of token `tok`'s K (or V) row of KV head kvh
// (kernels/paged_kv.h). The hot loop (register_steps) computes it from hoisted parts.
__device__ __forceinline__ int64_t kv_row_offset(const KernelArgs& a, const int32_t* table, int kvh,
                                                 int tok, int head_dim) {
  const int64_t block = __ldg(table + (tok >> a.block_shift));
  return (((block * a.num_kv_heads + kvh) << a.block_shift) + (tok & ((1 << a.block_shift) - 1))) *
         head_dim;
}

// Requests the split's first `tiles` tiles (tokens from `begin`, up to `end`) into tile
// buffers 0, 1, ..., each completing on its own barrier; run by all lanes of one warp. Tile
// boundaries are multiples of kTileTokens and block sizes are powers of two, so a tile is
// whole pages or lies inside one page: one copy per (page, K or V), of the rows that hold
// tokens.
template <int D, int G>
__device__ __forceinline__ void request_tiles(const KernelArgs& a, const int32_t* table, int kvh,
                                              int begin, int end, int tiles, bf16* buffers,
                                              uint64_t* full, int lane) {
  using T = Tile<D, G>;
  const int to = min(end, begin + tiles * T::kTileTokens);
  if (lane < tiles) {
    const int t0 = begin + lane * T::kTileTokens;
    const int rows = min(end, t0 + T::kTileTokens) - t0;
    mbar_arrive_expect_tx(&full[lane], uint32_t(rows) * D * 2 * 2);
  }
  __syncwarp();
  const int seg = min(1 << a.block_shift, T::kTileTokens);  // rows per copy at most
  for (int tok = begin + lane * seg; tok < to; tok += 32 * seg) {
    const int rows = min(seg, to - tok);
    const int tile = (tok - begin) / T::kTileTokens;
    const int row_in_tile = tok - begin - tile * T::kTileTokens;
    const int64_t elem = kv_row_offset(a, table, kvh, tok, D);
    bf16* k_dst = buffers + size_t(tile) * 2 * T::kTileTokens * D + size_t(row_in_tile) * D;
    bf16* v_dst = k_dst + T::kTileTokens * D;
    const uint32_t bytes = uint32_t(rows) * D * 2;
    bulk_copy_to_shared(k_dst, a.k_cache + elem, bytes, &full[tile]);
    bulk_copy_to_shared(v_dst, a.v_cache + elem, bytes, &full[tile]);
  }
}

// One step of a warp: kRowGroups rows of K and V per lane (rows past the split's end are
// zero with valid = false) folded into the warp's online softmax (m, l, o).
template <int D, int G>
__device__ __forceinline__ void accumulate(const float (&q)[G][8],
                                           const uint4 (&kr)[Tile<D, G>::kRowGroups],
                                           const uint4 (&vr)[Tile<D, G>::kRowGroups],
                                           const bool (&valid)[Tile<D, G>::kRowGroups],
                                           float (&m)[G], float (&l)[G], float (&o)[G][8]) {
  using T = Tile<D, G>;
  constexpr int kLanes = T::kLanesPerRow;
  // Scores s = q·k (base 2) of every row and head, summed across the row's lanes.
  float s[T::kRowGroups][G];
#pragma unroll
  for (int g = 0; g < T::kRowGroups; ++g) {
    float kf[8];
    unpack8(kr[g], kf);
#pragma unroll
    for (int h = 0; h < G; ++h) {
      float acc = 0.0f;
#pragma unroll
      for (int i = 0; i < 8; ++i) acc = fmaf(q[h][i], kf[i], acc);
      s[g][h] = acc;
    }
  }
#pragma unroll
  for (int off = kLanes / 2; off >= 1; off /= 2) {
#pragma unroll
    for (int g = 0; g < T::kRowGroups; ++g) {
#pragma unroll
      for (int h = 0; h < G; ++h) s[g][h] += __shfl_xor_sync(0xffffffffu, s[g][h], off);
    }
  }

  // Online softmax: new max over this step's rows (across the warp), rescale, accumulate.
#pragma unroll
  for (int h = 0; h < G; ++h) {
    float mx = -INFINITY;
#pragma unroll
    for (int g = 0; g < T::kRowGroups; ++g) {
      if (!valid[g]) s[g][h] = -INFINITY;
      mx = fmaxf(mx, s[g][h]);
    }
#pragma unroll
    for (int off = kLanes; off < 32; off *= 2) {
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    }
    const float m_new = fmaxf(m[h], mx);
    // Reference point for exp2; 0 when nothing was seen yet, so -inf - ref stays -inf.
    const float ref = m_new == -INFINITY ? 0.0f : m_new;
    const float alpha = fast_exp2(m[h] - ref);
    m[h] = m_new;
    l[h] *= alpha;
#pragma unroll
    for (int i = 0; i < 8; ++i) o[h][i] *= alpha;
#pragma unroll
    for (int g = 0; g < T::kRowGroups; ++g) s[g][h] = fast_exp2(s[g][h] - ref);  // p
  }
#pragma unroll
  for (int g = 0; g < T::kRowGroups; ++g) {
    float vf[8];
    unpack8(vr[g], vf);
#pragma unroll
    for (int h = 0; h < G; ++h) {
      l[h] += s[g][h];
#pragma unroll
      for (int i = 0; i < 8; ++i) o[h][i] = fmaf(s[g][h], vf[i], o[h][i]);
    }
  }
}

// Tokens [from, end) of a split with register loads, kRowGroups K and V rows per lane issued
// before any is used. Within a tile (a step of the block) warp w takes rows
// [w, w + 1) · kTokensPerWarpIter. Called after griddepcontrol.wait: it reads every row as
// the previous kernel left it. kOneBlock: a warp's step (kTokensPerWarpIter rows from a
// multiple of that) lies in one cache block (block_size >= kTokensPerWarpIter, the usual
// case), so one block-table read and one 64-bit multiply serve all its rows.
template <int D, int G, bool kOneBlock>
__device__ __forceinline__ void register_steps(const KernelArgs& a, const int32_t* table, int kvh,
                                               int warp, int row, int col, int from, int end,
                                               const float (&q)[G][8], float (&m)[G], float (&l)[G],
                                               float (&o)[G][8]) {
  using T = Tile<D, G>;
  // Element offset of a row: block · block_stride + (tok mod block size) · D + head_offset,
  // the loop-invariant parts computed once (the loop is close to issue-bound on an H200).
  // Both fit in 32 bits (check_shape: num_kv_heads <= 65535, block size <= 128, D <= 128),
  // so a row costs one 32 x 32 -> 64-bit multiply-add.
  const int shift = a.block_shift;
  const int offset_mask = (1 << shift) - 1;
  const int block_stride = (a.num_kv_heads * D) << shift;
  const int head_offset = ((kvh * D) << shift) + col * 8;
  // The loop condition depends only on the warp, so all lanes run every shuffle.
  for (int t0 = from + warp * T::kTokensPerWarpIter; t0 < end; t0 += T::kTileTokens) {
    uint4 kr[T::kRowGroups], vr[T::kRowGroups];
    bool valid[T::kRowGroups];
    [[maybe_unused]] int64_t step_base = 0;
    if constexpr (kOneBlock) {
      step_base = int64_t(__ldg(table + (t0 >> shift))) * block_stride +
                  ((t0 & offset_mask) + row) * D + head_offset;
    }
#pragma unroll
    for (int g = 0; g < T::kRowGroups; ++g) {
      // A row group's rows are consecutive and start at a multiple of kRowsPerWarp
      // (<= block_size), so they share one cache block.
      const int tok = t0 + g * T::kRowsPerWarp + row;
      valid[g] = tok < end;
      kr[g] = vr[g] = make_uint4(0, 0, 0, 0);  // rows past the end: p = 0 times finite V
      if (valid[g]) {
        int64_t elem;
        if constexpr (kOneBlock) {
          elem = step_base + g * T::kRowsPerWarp * D;
        } else {
          elem = int64_t(__ldg(table + (tok >> shift))) * block_stride +
                 ((tok & offset_mask) * D + head_offset);
        }
        kr[g] = load_stream16_prefetch256(a.k_cache + elem);
        vr[g] = load_stream16_prefetch256(a.v_cache + elem);
      }
    }
    accumulate<D, G>(q, kr, vr, valid, m, l, o);
  }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core steps (kMma: head dim 128, GQA 4 or 8, cache blocks of 16 tokens or more).
//
// The CUDA-core step above spends about 600 instructions per lane on 8 tokens (dot products
// over 16 lanes, their xor-shuffle sums, the exps of every score in every lane), which keeps
// the H200 issue-bound below its read bandwidth. Here a warp takes 16 tokens per step and
// both products run on mma.sync m16n8k16 (bf16 in, fp32 accumulate), with the query heads
// as the n = 8 dimension (half of it padding at GQA 4):
//   S^T (16 tokens x 8 heads) = K (16 x 128) · Q^T, 8 k-steps, and
//   O^T (128 dims x 8 heads) += V^T (128 x 16 tokens) · P^T, 8 m-tiles.
// A sum over head dims or tokens may run in any order as long as both operands agree, so the
// fragments are filled straight from 16-byte loads of global memory, no shared memory:
//  - K: lane (g, t) = (lane / 4, lane % 4) loads dims [32p + 8t, +8) of tokens g and g + 8;
//    words x, y of chunk p are k-step 2p's (a0, a2) for token g and (a1, a3) for token g + 8,
//    words z, w those of k-step 2p + 1.
//    Q, as the B operand, is loaded the same way for head g (a B column).
//  - V: lane (g, t) loads dims [64h + 8g, +8) of tokens 2t, 2t + 1, 2t + 8, 2t + 9; m-tile
//    4h + j takes rows g and g + 8 to be dims 64h + 8g + 2j and + 1, and one byte_perm per
//    register pairs two tokens' values of one dim, as the A fragment wants.
//  - P leaves the S^T accumulators as (tokens x heads) and is wanted as (heads x tokens) in
//    the B fragment: one movmatrix.trans per 8 x 8 half. P is split into bf16 hi + lo parts,
//    two products each, so O is as accurate as with fp32 P (error ~2^-17 instead of 2^-9).
// The online softmax runs on the 4 scores a lane holds (tokens g, g + 8 of heads 2t, 2t + 1):
// a max over the 8 lanes of a column (3 shuffles per head) instead of sums over 16 lanes.
__device__ __forceinline__ uint32_t word(const uint4& u, int i) {
  return i == 0 ? u.x : i == 1 ? u.y : i == 2 ? u.z : u.w;
}

// K and V of one warp step in registers: lane (g, t)'s rows, as described above.
struct MmaStep {
  uint4 k[2][4];  // tokens g and g + 8, dims 32p + 8t .. + 8
  uint4 v[2][4];  // dims 64h + 8g .. + 8 of tokens 2t + {0, 1, 8, 9}
};

// Loads the warp step of 16 tokens from t0, whose K and V rows are consecutive (D apart)
// from k_rows and v_rows, in global memory or (kShared) in a prologue tile or ring stage; rows
// past `end` are zero (for V, p = 0 multiplies them; in a tile they hold whatever was there
// before). kRowsZeroed: the copies that filled the stage zeroed those rows, so every row is
// loaded as it is, without a select per load.
template <bool kShared, bool kRowsZeroed = false>
__device__ __forceinline__ void mma_load_rows(const bf16* k_rows, const bf16* v_rows, int lane,
                                              int t0, int end, MmaStep& st) {
  constexpr int D = 128;
  const int g = lane / 4, t = lane % 4;
  const auto load = [](const bf16* p) {
    if constexpr (kShared) {
      return *reinterpret_cast<const uint4*>(p);
    } else {
      return load_stream16_prefetch256(p);
    }
  };
  const bf16* kp = k_rows + g * D + 8 * t;
  const bf16* vp = v_rows + 2 * t * D + 8 * g;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool valid = kRowsZeroed || t0 + g + 8 * r < end;
#pragma unroll
    for (int p = 0; p < 4; ++p)
      st.k[r][p] = valid ? load(kp + r * 8 * D + 32 * p) : make_uint4(0, 0, 0, 0);
  }
  constexpr int kVRow[4] = {0, 1, 8, 9};  // tokens 2t + kVRow[i]
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const bool valid = kRowsZeroed || t0 + 2 * t + kVRow[i] < end;
#pragma unroll
    for (int h = 0; h < 2; ++h)
      st.v[h][i] = valid ? load(vp + kVRow[i] * D + 64 * h) : make_uint4(0, 0, 0, 0);
  }
}

// Loads the warp step of 16 tokens from t0 (a multiple of 16: 16 tokens lie in one cache
// block of 16 or more) from the paged cache.
__device__ __forceinline__ void mma_load_step(const KernelArgs& a, const int32_t* table, int kvh,
                                              int lane, int t0, int end, MmaStep& st) {
  constexpr int D = 128;
  const int shift = a.block_shift;
  const int64_t base = int64_t(__ldg(table + (t0 >> shift))) * ((a.num_kv_heads * D) << shift) +
                       (t0 & ((1 << shift) - 1)) * D + ((kvh * D) << shift);
  mma_load_rows<false>(a.k_cache + base, a.v_cache + base, lane, t0, end, st);
}

// The online softmax of a warp's 16-token step, shared by mma_step and ring_mma_step. `s` holds
// the scores S[token g or g + 8][head 2t or 2t + 1] (rows past the split's end masked by
// k_valid); folds them into the lane's m and l, rescales o (either layout: o[mt][e] and
// o[mt][e + 2] belong to head 2t + e), and returns P as hi + lo bf16 pairs (heads 2t, 2t + 1)
// of tokens g and g + 8, transposed into the B fragments of the P·V MMAs (tokens 2t, 2t + 1
// and 2t + 8, 2t + 9 of head g).
__device__ __forceinline__ void softmax_step(const float (&s)[4], const bool (&k_valid)[2],
                                             float scale_log2, float (&m)[2], float (&l)[2],
                                             float (&o)[8][4], uint32_t& bh0, uint32_t& bh1,
                                             uint32_t& bl0, uint32_t& bl1) {
  float pr[4];
#pragma unroll
  for (int e = 0; e < 2; ++e) {  // head 2t + e: s[e] (token g), s[e + 2] (token g + 8)
    const float s0 = k_valid[0] ? s[e] * scale_log2 : -INFINITY;
    const float s1 = k_valid[1] ? s[e + 2] * scale_log2 : -INFINITY;
    float mx = fmaxf(s0, s1);
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
    const float m_new = fmaxf(m[e], mx);  // finite: the step's first token is in range
    const float alpha = fast_exp2(m[e] - m_new);
    m[e] = m_new;
    pr[e] = fast_exp2(s0 - m_new);
    pr[e + 2] = fast_exp2(s1 - m_new);
    l[e] = l[e] * alpha + pr[e] + pr[e + 2];
#pragma unroll
    for (int mt = 0; mt < 8; ++mt) {
      o[mt][e] *= alpha;
      o[mt][e + 2] *= alpha;
    }
  }
  const uint32_t hi0 = pack_bf16x2(pr[0], pr[1]), hi1 = pack_bf16x2(pr[2], pr[3]);
  const uint32_t lo0 =
      pack_bf16x2(pr[0] - __uint_as_float(hi0 << 16), pr[1] - __uint_as_float(hi0 & 0xffff0000u));
  const uint32_t lo1 =
      pack_bf16x2(pr[2] - __uint_as_float(hi1 << 16), pr[3] - __uint_as_float(hi1 & 0xffff0000u));
  bh0 = movmatrix_trans(hi0);
  bh1 = movmatrix_trans(hi1);
  bl0 = movmatrix_trans(lo0);
  bl1 = movmatrix_trans(lo1);
}

// Folds the step from t0 into lane (g, t)'s share of the warp's state for heads 2t and
// 2t + 1: m (the same in the 8 lanes of a t), l summed over its tokens,
// o[4h + j][e + 2i] = O[head 2t + e][dim 64h + 8g + 2j + i].
// kTwoChains: S = q·k as two chains of 4 dependent MMAs (dims 0-31 and 64-95, 32-63 and
// 96-127) summed at the end, instead of one chain of 8: shorter latency per step, which the
// rings' short splits at batch 1 wait on (H100, per layer in a graph: batch 1 x 2k 6.28 ->
// 6.13 us, x 4k 7.77 -> 7.67, GQA 8 x 4k 9.11 -> 9.01). The prologue and global-memory steps
// keep one chain: there it cost batch 8 x 1k 2.5% (and GQA 8 spills).
template <bool kTwoChains = false>
__device__ __forceinline__ void mma_step(const MmaStep& st, const uint4 (&qb)[4], int t0, int end,
                                         int lane, float scale_log2, float (&m)[2], float (&l)[2],
                                         float (&o)[8][4]) {
  const int g = lane / 4;
  const bool k_valid[2] = {t0 + g < end, t0 + g + 8 < end};
  float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};      // S[token g or g + 8][head 2t or 2t + 1]
  float s_odd[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // kTwoChains: dims 32p .. + 32 of odd p
#pragma unroll
  for (int p = 0; p < 4; ++p) {
    float(&acc)[4] = kTwoChains && p % 2 == 1 ? s_odd : s;
    mma_bf16_16816(acc, {st.k[0][p].x, st.k[1][p].x, st.k[0][p].y, st.k[1][p].y}, qb[p].x, qb[p].y);
    mma_bf16_16816(acc, {st.k[0][p].z, st.k[1][p].z, st.k[0][p].w, st.k[1][p].w}, qb[p].z, qb[p].w);
  }
  if constexpr (kTwoChains) {
#pragma unroll
    for (int i = 0; i < 4; ++i) s[i] += s_odd[i];
  }
  uint32_t bh0, bh1, bl0, bl1;
  softmax_step(s, k_valid, scale_log2, m, l, o, bh0, bh1, bl0, bl1);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      const uint32_t x0 = word(st.v[h][0], j), x1 = word(st.v[h][1], j);
      const uint32_t x2 = word(st.v[h][2], j), x3 = word(st.v[h][3], j);
      const uint32_t a0 = __byte_perm(x0, x1, 0x5410), a1 = __byte_perm(x0, x1, 0x7632);
      const uint32_t a2 = __byte_perm(x2, x3, 0x5410), a3 = __byte_perm(x2, x3, 0x7632);
      mma_bf16_16816(o[4 * h + j], {a0, a1, a2, a3}, bh0, bh1);
      mma_bf16_16816(o[4 * h + j], {a0, a1, a2, a3}, bl0, bl1);
    }
  }
}

// The B fragments of Q for mma_step: lane (g, t) holds head g's dims 32p + 8t .. + 8 in
// qb[p] (zero for the padding heads g >= G).
template <int G>
__device__ __forceinline__ void load_q_fragments(const KernelArgs& a, size_t q_row0, int lane,
                                                 uint4 (&qb)[4]) {
  constexpr int D = 128;
  const int g = lane / 4, t = lane % 4;
#pragma unroll
  for (int p = 0; p < 4; ++p) {
    qb[p] = g < G ? __ldcg(reinterpret_cast<const uint4*>(a.q + (q_row0 + g) * D + 32 * p + 8 * t))
                  : make_uint4(0, 0, 0, 0);
  }
}

// Tokens [from, end) of a split (from a multiple of 16) for one warp: 16-token steps at
// from + 16 · warp, every kWarps · 16 tokens, the first one already in `first` when
// `preloaded` (requested before griddepcontrol.wait). Leaves the lane's state as mma_step.
__device__ __forceinline__ void mma_steps(const KernelArgs& a, const int32_t* table, int kvh,
                                          int warp, int lane, int from, int end,
                                          const uint4 (&qb)[4], bool preloaded, MmaStep& first,
                                          float (&m)[2], float (&l)[2], float (&o)[8][4]) {
  const int t_first = from + warp * 16;
  if (t_first >= end) return;
  if (!preloaded) mma_load_step(a, table, kvh, lane, t_first, end, first);
  mma_step(first, qb, t_first, end, lane, a.scale_log2, m, l, o);
  for (int t0 = t_first + kWarps * 16; t0 < end; t0 += kWarps * 16) {
    MmaStep st;
    mma_load_step(a, table, kvh, lane, t0, end, st);
    mma_step(st, qb, t0, end, lane, a.scale_log2, m, l, o);
  }
}

// The tensor-core steps over a split streamed into the prologue's tiles (kMma with
// kPrologue): tokens past the prologue first, from global memory (none when the split fits,
// as the plan arranges), while the tiles land; then the tiles' 16-token steps, warp w taking
// steps w, w + kWarps, ... (so warps 0-1 wait for tile 0 and 2-3 for tile 1 first). A tile
// holds the rows in cache order, as mma_load_rows reads them: the step that the register
// steps take 600 instructions a lane for (8 tokens, bench/RESULTS.md) costs about a sixth
// here, which at batch 1 and 1k-4k tokens is on the critical path once the bytes are in.
// `fresh_tok` (or -1): the sequence's last row, which the previous kernel may have written
// while the prologue's copy read it; the warp whose step holds it reads it again from global
// memory (after griddepcontrol.wait) over the tile's copy, once that copy has landed.
template <int G>
__device__ __forceinline__ void mma_prologue_steps(const KernelArgs& a, const int32_t* table,
                                                   int kvh, int warp, int lane, int begin, int end,
                                                   int prologue_tiles, int fresh_tok, bf16* tiles,
                                                   uint64_t* full, const uint4 (&qb)[4],
                                                   float (&m)[2], float (&l)[2], float (&o)[8][4],
                                                   BlockTrace& trace) {
  constexpr int D = 128;
  constexpr int kTileTokens = Tile<D, G>::kTileTokens;
  static_assert(kTileTokens % 16 == 0, "a tile holds whole 16-token steps");
  const int prologue_end = begin + prologue_tiles * kTileTokens;
  MmaStep st;
  mma_steps(a, table, kvh, warp, lane, prologue_end, end, qb, false, st, m, l, o);
  for (int t0 = begin + warp * 16; t0 < min(end, prologue_end); t0 += kWarps * 16) {
    const int tile = (t0 - begin) / kTileTokens;
    mbar_wait(&full[tile], 0);
    trace.at(kTraceLoaded);  // thread 0's last wait stays
    bf16* k_tile = tiles + size_t(tile) * 2 * kTileTokens * D;
    bf16* v_tile = k_tile + kTileTokens * D;
    const int first_row = t0 - begin - tile * kTileTokens;
    if (fresh_tok >= t0 && fresh_tok < t0 + 16) {  // lanes 0-15: its K row, 16-31: its V row
      const int r = fresh_tok - (t0 - first_row), col = lane % 16;
      const int64_t elem = kv_row_offset(a, table, kvh, fresh_tok, D) + col * 8;
      const bf16* src = (lane < 16 ? a.k_cache : a.v_cache) + elem;
      *reinterpret_cast<uint4*>((lane < 16 ? k_tile : v_tile) + r * D + col * 8) =
          __ldcg(reinterpret_cast<const uint4*>(src));
      __syncwarp();
    }
    mma_load_rows<true>(k_tile + first_row * D, v_tile + first_row * D, lane, t0, end, st);
    mma_step(st, qb, t0, end, lane, a.scale_log2, m, l, o);
  }
}

// ---------------------------------------------------------------------------------------------
// Ring variant (plan.ring_stages: the plan's rules take 3 stages, for short contexts at batch
// 1-2, for most splits that fit the prologue and for mid-sized batches; with ARBOR_DECODE_RING=2 or
// 3 every plan without a prologue takes it): the tensor-core steps over global memory (mma_steps)
// keep one 8 KiB step of K and V per warp in flight, in registers, and wait for it before each
// step's math. Here each warp owns a ring of kStages steps in shared memory, filled by cp.async:
// every lane copies 16 bytes at a time, 8 of the step's 256 chunks of K and of V (the 16 rows of a
// step are consecutive in one cache page, so a warp instruction covers two whole rows, 512
// contiguous bytes), and each lane's copies of a step are one cp.async group, so that waiting for a
// step is cp.async.wait_group (groups complete in order) and a __syncwarp. A stage is refilled with
// the warp's step kStages ahead as soon as its rows are in registers, so while a step's math runs
// the next kStages - 1 are in flight without holding registers. 2 stages: 64 KiB a block, 3 blocks
// per SM; 3 stages: 96 KiB, 2 blocks. Steps whose rows hold each sequence's last (which the
// previous kernel may still be writing) are requested after griddepcontrol.wait, the others before
// it. Bulk copies (one per K and V of a step, completing on an mbarrier) filled the rings before:
// cp.async is faster almost everywhere (H100, per layer in a graph: batch 1 x 4k 8.91 -> 7.95
// us, batch 2 x 2k 8.47 -> 7.51, with 3 stages at batch 8 x 32k 360.8 -> 350.0;
// bench/RESULTS.md).
// kLdmatrix (plan.ring_ldmatrix): the steps read their stage with ldmatrix (ring_load_step),
// and the stage's 16-byte chunk j of row r is stored at chunk j ^ (r % 8), so that the 8 rows
// each ldmatrix reads lie in 8 different groups of 4 banks while a row's copies still fill
// whole 128-byte lines (rows padded to 272 bytes instead made the streaming splits up to 21%
// slower: H100, batch 1 x 6k, bench/RESULTS.md). The swizzle XORs address bits 4-7, so these
// rings start 256-byte aligned: hence kBytes' slack.
template <int kStages, bool kLdmatrix = false>
struct Ring {
  static constexpr int kStepTokens = 16;
  static constexpr int kStageElems = 2 * kStepTokens * 128;  // K then V, head dim 128
  static constexpr int kBytes = kWarps * kStages * kStageElems * 2 + (kLdmatrix ? 256 : 0);
  static constexpr int kBlocksPerSm = kSmemPerSm / (kBytes + kSmemPerBlockExtra);
  static_assert(kBlocksPerSm >= 1, "a block's ring fits an SM");
};

// Requests the step of 16 tokens from t0 (rows up to `end`) into `stage`; every lane of the
// warp, one cp.async per 16 bytes (the caller commits the group).
// With kLdmatrix, chunks land swizzled (Ring). With kZeroFill (always with kLdmatrix), rows
// past `end` are zero-filled (nothing is read): p = 0 multiplies their V, where what an
// earlier step left could be NaN. Without it they are not written, and the steps zero them
// (mma_load_rows).
template <bool kLdmatrix, bool kZeroFill>
__device__ __forceinline__ void ring_request(const KernelArgs& a, const int32_t* table, int kvh,
                                             int t0, int end, bf16* stage, int lane) {
  static_assert(kZeroFill || !kLdmatrix, "ldmatrix reads whole stages: rows must be zeroed");
  constexpr int D = 128;
  const int rows = min(16, end - t0);
  const int64_t elem = kv_row_offset(a, table, kvh, t0, D);
  const bf16* k = a.k_cache + elem;
  const bf16* v = a.v_cache + elem;
  const uint32_t dst = shared_address(stage);
#pragma unroll
  for (int i = 0; i < 8; ++i) {
    const int c = lane + 32 * i;  // chunk c: row c / 16, dims 8 (c % 16) .. + 8
    if constexpr (kLdmatrix) {
      const uint32_t at = dst + (c / 16) * D * 2 + ((c % 16) ^ (c / 16 % 8)) * 16;
      cp_async_16(at, k + c * 8, c / 16 < rows);
      cp_async_16(at + 16 * D * 2, v + c * 8, c / 16 < rows);
    } else if constexpr (kZeroFill) {
      cp_async_16(dst + c * 16, k + c * 8, c / 16 < rows);
      cp_async_16(dst + 16 * D * 2 + c * 16, v + c * 8, c / 16 < rows);
    } else if (c / 16 < rows) {
      cp_async_16(dst + c * 16, k + c * 8, true);
      cp_async_16(dst + 16 * D * 2 + c * 16, v + c * 8, true);
    }
  }
}

// A kLdmatrix ring step's operands, as mma.m16n8k16 A fragments (mma_sync.cuh): k[c] = K rows
// (the 16 tokens) by dims 16c .. + 16, v[mt] = V^T rows (dims 16mt .. + 16) by the 16 tokens.
struct RingStep {
  uint32_t k[8][4];
  uint32_t v[8][4];
};

// The swizzled step at shared address `stage` (256-byte aligned) into fragments, V transposed
// on the way: 16 ldmatrix where the register steps' layout (mma_load_rows, mma_step) takes 16
// loads, 32 byte permutes and the moves that gather A fragments from two loads (a launch at
// batch 1 x 2k executes 25% fewer instructions: H100, Nsight Compute, bench/RESULTS.md).
// Lane l gives the address of row l % 8 of matrix l / 8 (a0 .. a3 of the fragment). Chunk
// 2c + h of row r is at (2c + h) ^ r = 2c ^ (h ^ r) (h < 2), so chunk 2c's address is chunk
// 0's XOR 32c.
__device__ __forceinline__ void ring_load_step(uint32_t stage, int lane, RingStep& st) {
  constexpr int kRowBytes = 128 * 2;
  const int i = lane / 8, r = lane % 8;
  // K: matrices (tokens 0-7, dims +0), (tokens 8-15, +0), (tokens 0-7, +8), (tokens 8-15, +8).
  const uint32_t k = stage + ((i % 2) * 8 + r) * kRowBytes + ((i / 2) ^ r) * 16;
  // V: (tokens 0-7, dims +0), (tokens 0-7, +8), (tokens 8-15, +0), (tokens 8-15, +8), each
  // transposed.
  const uint32_t v = stage + (16 + (i / 2) * 8 + r) * kRowBytes + ((i % 2) ^ r) * 16;
#pragma unroll
  for (int c = 0; c < 8; ++c) ldmatrix_x4(st.k[c], k ^ (32 * c));
#pragma unroll
  for (int mt = 0; mt < 8; ++mt) ldmatrix_x4_trans(st.v[mt], v ^ (32 * mt));
}

// The query heads of the KV group as B fragments of S^T = K·q^T for ring_mma_step:
// qs[c] = q[head g][16c + 2t .. + 2] and [16c + 8 + 2t .. + 2] (zero for the padding heads).
template <int G>
__device__ __forceinline__ void load_q_ring(const KernelArgs& a, size_t q_row0, int lane,
                                            uint32_t (&qs)[8][2]) {
  constexpr int D = 128;
  const int g = lane / 4, t = lane % 4;
  const uint32_t* q = reinterpret_cast<const uint32_t*>(a.q + (q_row0 + g) * D) + t;
#pragma unroll
  for (int c = 0; c < 8; ++c) {
    qs[c][0] = g < G ? __ldcg(q + 8 * c) : 0u;
    qs[c][1] = g < G ? __ldcg(q + 8 * c + 4) : 0u;
  }
}

// mma_step<true> for a kLdmatrix ring step (ring_load_step's fragments, load_q_ring's q): the
// same math, with S = q·k as two chains of 4 MMAs (even and odd 16-dim chunks) and o in the
// standard fragment layout: o[mt][e + 2i] = O[head 2t + e][dim 16mt + g + 8i].
__device__ __forceinline__ void ring_mma_step(const RingStep& st, const uint32_t (&qs)[8][2],
                                              int t0, int end, int lane, float scale_log2,
                                              float (&m)[2], float (&l)[2], float (&o)[8][4]) {
  const int g = lane / 4;
  const bool k_valid[2] = {t0 + g < end, t0 + g + 8 < end};
  float s[4] = {0.0f, 0.0f, 0.0f, 0.0f};      // S[token g or g + 8][head 2t or 2t + 1]
  float s_odd[4] = {0.0f, 0.0f, 0.0f, 0.0f};  // odd chunks
#pragma unroll
  for (int c = 0; c < 8; ++c) mma_bf16_16816(c % 2 ? s_odd : s, st.k[c], qs[c][0], qs[c][1]);
#pragma unroll
  for (int i = 0; i < 4; ++i) s[i] += s_odd[i];
  uint32_t bh0, bh1, bl0, bl1;
  softmax_step(s, k_valid, scale_log2, m, l, o, bh0, bh1, bl0, bl1);
#pragma unroll
  for (int mt = 0; mt < 8; ++mt) {
    mma_bf16_16816(o[mt], st.v[mt], bh0, bh1);
    mma_bf16_16816(o[mt], st.v[mt], bl0, bl1);
  }
}

// The warp's first kStages steps (from begin + 16 warp, every kWarps * 16 tokens): before the
// wait (before_wait) the leading ones without the sequence's last row `len - 1` (once a step
// holds it, or does not exist, so do all after it), after the wait the others (all of them
// without overlap_previous_kernel). One group per step, empty for steps past the split, so
// that each lane has committed exactly kStages groups when ring_steps starts.
// Before the wait a warp keeps one step in flight: it requests the next early step once the
// previous one has landed. The previous kernel (the layer before, in a graph) is then still
// computing and merging, and the steps that every block of a short launch requested at once
// (12 MiB at batch 1 x 4k) queued ahead of its loads and its arrival. One at a time costs
// nothing measured and gains where the rings serve short splits (H100, per layer in a
// graph: batch 1 x 4k 7.96 -> 7.74 us, x 5k 10.35 -> 9.47, x 6k 12.57 -> 11.63, x 16k 25.8
// -> 25.2, batch 2 x 4k 14.8 -> 14.2, batch 4 x 4k 24.1 -> 23.7; level at batch 1 x 2k-3k,
// batch 8 x 4k, 16 x 2k and 32 x 1k; bench/RESULTS.md). Two in flight measured as all three.
// Bulk copies of the prologue throttled the same way were slower.
template <int kStages, bool kLdmatrix, bool kZeroFill>
__device__ __forceinline__ void ring_request_first(const KernelArgs& a, const int32_t* table,
                                                   int kvh, int warp, int lane, int begin, int end,
                                                   int len, bool before_wait, bf16* ring) {
#pragma unroll
  for (int s = 0; s < kStages; ++s) {
    const int t0 = begin + 16 * (warp + s * kWarps);
    const bool early = t0 < end && a.overlap_previous_kernel && t0 + 16 < len;
    if (before_wait && !early) return;
    if (!before_wait && early) continue;           // requested before the wait
    if (before_wait && s > 0) cp_async_wait<0>();  // the previous early step has landed
    bf16* stage = ring + (size_t(warp) * kStages + s) * Ring<kStages>::kStageElems;
    if (t0 < end) ring_request<kLdmatrix, kZeroFill>(a, table, kvh, t0, end, stage, lane);
    cp_async_commit();
  }
}

// Tokens [begin, end) of a split for one warp through its ring (requested by
// ring_request_first): the step's group has landed (and every lane's: __syncwarp); its rows
// into registers; once every lane has read the stage, its refill with the step kStages ahead
// (a group, empty past the split, to keep one per step); then the step's math. Leaves the
// lane's state as mma_step.
// kLdmatrix: `q` is load_q_ring's, and the steps are ring_load_step's and ring_mma_step's;
// otherwise `q` is load_q_fragments', read as uint4[4].
template <int kStages, bool kLdmatrix, bool kZeroFill, typename Q>
__device__ __forceinline__ void ring_steps(const KernelArgs& a, const int32_t* table, int kvh,
                                           int warp, int lane, int begin, int end, bf16* ring,
                                           const Q& q, float (&m)[2], float (&l)[2],
                                           float (&o)[8][4], BlockTrace& trace) {
  constexpr int D = 128;
  for (int i = 0;; ++i) {
    const int t0 = begin + 16 * (warp + i * kWarps);
    if (t0 >= end) break;
    bf16* stage = ring + (size_t(warp) * kStages + i % kStages) * Ring<kStages>::kStageElems;
    cp_async_wait<kStages - 1>();
    __syncwarp();
    if (i < kStages) trace.at(kTraceLoaded);  // the steps requested first
    std::conditional_t<kLdmatrix, RingStep, MmaStep> st;
    if constexpr (kLdmatrix) {
      ring_load_step(shared_address(stage), lane, st);
    } else {
      mma_load_rows<true, kZeroFill>(stage, stage + 16 * D, lane, t0, end, st);
    }
    __syncwarp();
    const int t_next = t0 + kStages * kWarps * 16;
    if (t_next < end) ring_request<kLdmatrix, kZeroFill>(a, table, kvh, t_next, end, stage, lane);
    cp_async_commit();
    if constexpr (kLdmatrix) {
      ring_mma_step(st, q, t0, end, lane, a.scale_log2, m, l, o);
    } else {
      mma_step<true>(st, q, t0, end, lane, a.scale_log2, m, l, o);
    }
  }
  cp_async_wait<0>();  // only empty groups are left; none may outlive the ring's memory
}

// Counts this block's arrival on `counter` and tells whether it is the last of `expected`,
// resetting the counter to zero then (so the next launch or graph replay starts from zero
// without a memset). Called by every thread of the block after its writes to the workspace.
// One acquire-release atomic by thread 0 between two barriers (which carry the ordering to
// the block's other threads) orders the block's writes before its count and, in the last
// block, the other blocks' writes before its loads. It replaces a sequentially consistent
// fence by every thread on each side, each of which waited for a round trip through a memory
// system the other blocks keep saturated (H200, per layer in a graph, with the first-step
// preload of the tensor-core steps: batch 1 x 1k 6.2 -> 5.9 us, x 4k 11.7 -> 11.4, batch 8 x
// 1k 13.5 -> 12.0).
__device__ __forceinline__ bool arrive_last(int* counter, int expected) {
  __shared__ int s_is_last;
  __syncthreads();
  if (threadIdx.x == 0) {
    ::cuda::atomic_ref<int, ::cuda::thread_scope_device> c(*counter);
    const int arrived = c.fetch_add(1, ::cuda::memory_order_acq_rel) + 1;
    s_is_last = arrived == expected;
    // Everyone has arrived, so nobody else touches the counter in this launch.
    if (arrived == expected) c.store(0, ::cuda::memory_order_relaxed);
  }
  __syncthreads();
  return s_is_last;
}

// The cluster merge (plan.cluster_merge): the splits of a (sequence, kv head) launch as one
// thread-block cluster; every split but the last used pushes its partial into the last one's
// shared memory with st.async, counted on that block's mbarrier, and the last split merges
// from its own shared memory. No workspace, no atomic and no L2 round trip: the last split,
// which reads the sequence's last row after the wait, finishes last in ~95% of batch 1 x 1k
// layers (the block timelines), so it usually finds the others' partials there.
__device__ __forceinline__ void cluster_arrive_release() {
  asm volatile("barrier.cluster.arrive.release.aligned;" ::: "memory");
}
__device__ __forceinline__ void cluster_wait_acquire() {
  asm volatile("barrier.cluster.wait.acquire.aligned;" ::: "memory");
}
// The shared::cluster address of `addr` (a shared::cta address) in the block of rank `rank`.
__device__ __forceinline__ uint32_t cluster_map(uint32_t addr, uint32_t rank) {
  uint32_t r;
  asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(r) : "r"(addr), "r"(rank));
  return r;
}
// Stores into another block's shared memory (a shared::cluster address), counting the bytes
// on that block's mbarrier.
__device__ __forceinline__ void st_async(uint32_t dst, float4 v, uint32_t bar) {
  asm volatile(
      "st.async.shared::cluster.mbarrier::complete_tx::bytes.v4.f32 [%0], {%1, %2, %3, %4}, "
      "[%5];" ::"r"(dst),
      "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w), "r"(bar)
      : "memory");
}
__device__ __forceinline__ void st_async(uint32_t dst, float v, uint32_t bar) {
  asm volatile(
      "st.async.shared::cluster.mbarrier::complete_tx::bytes.f32 [%0], %1, [%2];" ::"r"(dst),
      "f"(v), "r"(bar)
      : "memory");
}
// A cluster merge's most splits (the portable cluster size), and the shared memory after the
// ring in which the last split receives the others' partials: [slot][G][D] o, then [slot][G]
// m and l. With 3 stages and GQA 4, two blocks still fit an SM.
constexpr int kClusterMaxSplits = 8;
template <int D, int G>
constexpr int cluster_part_bytes() {
  return (G * D + 2 * G) * 4;
}
template <int D, int G>
constexpr int cluster_recv_bytes() {
  return (kClusterMaxSplits - 1) * cluster_part_bytes<D, G>();
}

// Stores of partials for the merge, with an L2 evict_last policy. A pair's first partials are
// written up to ~11 us before its merge reads them (the spread of a long layer's blocks), while
// the other splits stream tens of MB through the 50 MB L2; the partials' lines, at the same
// addresses in every launch, then stay on chip (H100, per layer in a graph: batch 1 x 16k
// 24.32 -> 23.62 us, x 32k 46.33 -> 45.49, batch 4 x 4k 24.01 -> 23.31, batch 8 x 4k 45.31 ->
// 44.69, GQA 8 batch 1 x 16k 27.02 -> 26.19; level at batch 1-2 x 1k-4k; bench/RESULTS.md).
__device__ __forceinline__ uint64_t l2_evict_last_policy() {
  uint64_t policy;
  asm("createpolicy.fractional.L2::evict_last.b64 %0, 1.0;" : "=l"(policy));
  return policy;
}
__device__ __forceinline__ void store_partial(float4* dst, float4 v, uint64_t policy) {
  asm volatile("st.global.L2::cache_hint.v4.f32 [%0], {%1, %2, %3, %4}, %5;" ::"l"(dst), "f"(v.x),
               "f"(v.y), "f"(v.z), "f"(v.w), "l"(policy)
               : "memory");
}
__device__ __forceinline__ void store_partial(float* dst, float v, uint64_t policy) {
  asm volatile("st.global.L2::cache_hint.f32 [%0], %1, %2;" ::"l"(dst), "f"(v), "l"(policy)
               : "memory");
}
// Part `part`'s dims [d, d + 4) of query head h (of the pair's G): o, and with d = 0 its m, l.
template <int D, int G>
__device__ __forceinline__ void store_part(const KernelArgs& a, size_t part, int h, int d, float4 o,
                                           float m, float l) {
  const uint64_t policy = l2_evict_last_policy();
  store_partial(reinterpret_cast<float4*>(a.ws_o + (part * G + h) * D + d), o, policy);
  if (d == 0) {
    store_partial(a.ws_m + part * G + h, m, policy);
    store_partial(a.ws_l + part * G + h, l, policy);
  }
}

// Merges the `count` partials of the workspace from part `first` into the output (final) or
// into part `dst`. .cg loads: read from L2, where the other SMs wrote them.
template <int D, int G>
__device__ __forceinline__ void merge_partials(const KernelArgs& a, size_t first, int count,
                                               bool final, size_t out_row0, size_t dst) {
  constexpr int kChunks = G * D / 4;
  for (int e = threadIdx.x; e < kChunks; e += kThreads) {
    const int h = e / (D / 4), d = e % (D / 4) * 4;
    float mm = -INFINITY, lm = 0.0f;
    float4 om = make_float4(0, 0, 0, 0);
#pragma unroll kMergeUnroll
    for (int i = 0; i < count; ++i) {
      const size_t part = first + i;
      const float ms = __ldcg(a.ws_m + part * G + h);  // finite: every part has tokens
      const float ls = __ldcg(a.ws_l + part * G + h);
      const float4 os = __ldcg(reinterpret_cast<const float4*>(a.ws_o + (part * G + h) * D + d));
      const float m_new = fmaxf(mm, ms);
      const float c_old = fast_exp2(mm - m_new), c_new = fast_exp2(ms - m_new);
      lm = lm * c_old + ls * c_new;
      om = scale_add(om, c_old, os, c_new);
      mm = m_new;
    }
    if (final) {
      write_final<D>(a, out_row0 + h, d, om, lm, mm);
    } else {
      store_part<D, G>(a, dst, h, d, om, mm, lm);
    }
  }
}

// merge_partials through shared memory, for the ring variants, whose rings (64 or 96 KiB) are
// free by then: every thread's share of the partials is requested at once with cp.async, in
// as few batches as the `smem_bytes` at `smem` allow, and then merged from shared memory in the
// same order and with the same formulas as merge_partials. The two agree to fp32 rounding, not
// bit for bit: the compiler contracts their products and sums into FMAs differently. The
// plan's choice between them depends on the shape alone, and plans with forced splits take no
// ring, so a forced split count still gives batch-invariant bits. The merger's
// loads compete with the DRAM traffic of the blocks still streaming and of the next launch, and
// its time grows with the partials it reads (H100, batch 1: 0.8 us for 8 splits, 1.6 for 16,
// 4.7 for 33). merge_partials keeps kMergeUnroll partials in flight per thread; copies hold no
// registers, so all of a batch's are in flight at once (33 partials: 3.5-4.2 us;
// bench/RESULTS.md). The merge step (five lines) repeats merge_partials' on purpose: moved into
// a shared helper it changed the PTX of every kernel variant, the register-loop ones too, and
// these kernels have moved by 2% on such changes (see kStagedMerge). The stores are shared
// (write_final, store_part).
template <int D, int G>
__device__ __forceinline__ void merge_partials_staged(const KernelArgs& a, size_t first, int count,
                                                      bool final, size_t out_row0, size_t dst,
                                                      unsigned char* smem, int smem_bytes) {
  constexpr int kChunks = G * D / 4;  // float4 chunks of a partial's o
  static_assert(kChunks % kThreads == 0, "every thread merges the same number of chunks");
  static_assert(G % 4 == 0, "a partial's m and l are whole 16-byte chunks");
  constexpr int kPerThread = kChunks / kThreads;
  constexpr int kMlChunks = G / 4;                            // 16-byte chunks of m (and of l)
  constexpr int kPartBytes = (kChunks + 2 * kMlChunks) * 16;  // o, m, l of one partial
  float* s_o = reinterpret_cast<float*>(smem);  // [batch][G][D], then m [batch][G], l [batch][G]
  const int batch_max = smem_bytes / kPartBytes;
  float mm[kPerThread], lm[kPerThread];
  float4 om[kPerThread];
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    mm[k] = -INFINITY;
    lm[k] = 0.0f;
    om[k] = make_float4(0, 0, 0, 0);
  }
  for (int from = 0; from < count; from += batch_max) {
    const int n = min(batch_max, count - from);
    float* s_m = s_o + size_t(n) * G * D;
    float* s_l = s_m + n * G;
    const uint32_t o_dst = shared_address(s_o), m_dst = shared_address(s_m);
    const uint32_t l_dst = shared_address(s_l);
    for (int c = threadIdx.x; c < n * (kChunks + 2 * kMlChunks); c += kThreads) {
      if (c < n * kChunks) {
        cp_async_16(o_dst + c * 16, a.ws_o + (first + from) * G * D + size_t(c) * 4, true);
      } else {
        const int r = c - n * kChunks;  // m chunks, then l chunks
        const bool is_m = r < n * kMlChunks;
        const int i = is_m ? r : r - n * kMlChunks;
        cp_async_16((is_m ? m_dst : l_dst) + i * 16,
                    (is_m ? a.ws_m : a.ws_l) + (first + from) * G + size_t(i) * 4, true);
      }
    }
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kPerThread; ++k) {
      const int e = threadIdx.x + k * kThreads;
      const int h = e / (D / 4), d = e % (D / 4) * 4;
      for (int i = 0; i < n; ++i) {
        const float ms = s_m[i * G + h], ls = s_l[i * G + h];
        const float4 os = *reinterpret_cast<const float4*>(s_o + (size_t(i) * G + h) * D + d);
        const float m_new = fmaxf(mm[k], ms);
        const float c_old = fast_exp2(mm[k] - m_new), c_new = fast_exp2(ms - m_new);
        lm[k] = lm[k] * c_old + ls * c_new;
        om[k] = scale_add(om[k], c_old, os, c_new);
        mm[k] = m_new;
      }
    }
    __syncthreads();  // the next batch overwrites the buffers
  }
#pragma unroll
  for (int k = 0; k < kPerThread; ++k) {
    const int e = threadIdx.x + k * kThreads;
    const int h = e / (D / 4), d = e % (D / 4) * 4;
    if (final) {
      write_final<D>(a, out_row0 + h, d, om[k], lm[k], mm[k]);
    } else {
      store_part<D, G>(a, dst, h, d, om[k], mm[k], lm[k]);
    }
  }
}

// The merge a variant takes: through its ring's shared memory (kStagedMerge, see
// merge_partials_staged) or with register loads.
template <int D, int G, int kRing, bool kStagedMerge>
__device__ __forceinline__ void merge(const KernelArgs& a, size_t first, int count, bool final,
                                      size_t out_row0, size_t dst, unsigned char* smem) {
  if constexpr (kStagedMerge) {
    static_assert(kRing > 0, "the staged merge uses the ring's shared memory");
    merge_partials_staged<D, G>(a, first, count, final, out_row0, dst, smem, Ring<kRing>::kBytes);
  } else {
    merge_partials<D, G>(a, first, count, final, out_row0, dst);
  }
}

// The block's partial of chunk (h, d): its warps' (m, l, o) from shared memory, rescaled to
// their largest m. Warp 0 always has the split's first token, so m is finite; guarded anyway.
struct BlockPart {
  float m, l;
  float4 o;
};
template <int D, int G>
__device__ __forceinline__ BlockPart reduce_warps(const float (*s_o)[G][D], const float (*s_m)[G],
                                                  const float (*s_l)[G], int h, int d) {
  BlockPart b{-INFINITY, 0.0f, make_float4(0, 0, 0, 0)};
#pragma unroll
  for (int w = 0; w < kWarps; ++w) b.m = fmaxf(b.m, s_m[w][h]);
  const float ref = b.m == -INFINITY ? 0.0f : b.m;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) {
    const float c = fast_exp2(s_m[w][h] - ref);
    b.l += c * s_l[w][h];
    b.o = scale_add(b.o, 1.0f, *reinterpret_cast<const float4*>(&s_o[w][h][d]), c);
  }
  return b;
}

// The end of a cluster merge's block (plan.cluster_merge, n_used > 1): the warps' partials
// in s_o, s_m, s_l merge into the block's (one chunk a thread, as in the kernel's loop); every
// split but the last used pushes it into the last one's receiving slots and leaves; the last
// split waits for their bytes and merges them, then its own, in split order with
// merge_partials' formulas, into the output.
template <int D, int G, int kRing, bool kLdmatrix>
__device__ __forceinline__ void cluster_merge_block(const KernelArgs& a, unsigned char* smem,
                                                    uint64_t* recv_full, int split, int n_used,
                                                    size_t out_row0, const float (*s_o)[G][D],
                                                    const float (*s_m)[G], const float (*s_l)[G],
                                                    BlockTrace& trace) {
  const int e = threadIdx.x;  // the kernel's static_assert: one chunk a thread
  const int h = e / (D / 4), d = e % (D / 4) * 4;
  const auto [mb, lb, ob] = reduce_warps<D, G>(s_o, s_m, s_l, h, d);
  // The receiving slots lie after the ring, which the last split may still be reading when
  // the others push.
  float* recv_o = reinterpret_cast<float*>(smem + Ring<kRing, kLdmatrix>::kBytes);
  float* recv_m = recv_o + (kClusterMaxSplits - 1) * G * D;
  float* recv_l = recv_m + (kClusterMaxSplits - 1) * G;
  const int last = n_used - 1;  // its rank in the cluster: the cluster's x is the split
  if (split != last) {
    cluster_wait_acquire();  // every block of the cluster has initialized its barrier
    const uint32_t bar = cluster_map(shared_address(recv_full), last);
    st_async(cluster_map(shared_address(recv_o + (split * G + h) * D + d), last), ob, bar);
    if (d == 0) {
      st_async(cluster_map(shared_address(recv_m + split * G + h), last), mb, bar);
      st_async(cluster_map(shared_address(recv_l + split * G + h), last), lb, bar);
    }
    trace.at(kTraceWritten);
    trace.end();
    return;
  }
  if (threadIdx.x == 0)
    mbar_arrive_expect_tx(recv_full, uint32_t(last * cluster_part_bytes<D, G>()));
  trace.at(kTraceWritten);
  mbar_wait<true>(recv_full, 0);
  trace.at(kTraceArrived);
  float mm = -INFINITY, lm = 0.0f;
  float4 om = make_float4(0, 0, 0, 0);
#pragma unroll kClusterMaxSplits
  for (int i = 0; i < last; ++i) {
    const float ms = recv_m[i * G + h], ls = recv_l[i * G + h];
    const float4 os = *reinterpret_cast<const float4*>(recv_o + (i * G + h) * D + d);
    const float m_new = fmaxf(mm, ms);
    const float c_old = fast_exp2(mm - m_new), c_new = fast_exp2(ms - m_new);
    lm = lm * c_old + ls * c_new;
    om = scale_add(om, c_old, os, c_new);
    mm = m_new;
  }
  const float m_new = fmaxf(mm, mb);
  const float c_old = fast_exp2(mm - m_new), c_new = fast_exp2(mb - m_new);
  write_final<D>(a, out_row0 + h, d, scale_add(om, c_old, ob, c_new), lm * c_old + lb * c_new,
                 m_new);
  trace.role(kTraceFinalMerger);
  trace.at(kTraceMerged);
  trace.end();
}

// kPrologue: the variant for plans with a prologue; without, the kernel is the register
// loop alone, with the register budget to itself (one kernel with both paths cost the
// H200 2% at long contexts: the loop recomputed indices it could no longer keep).
// kMma: the tensor-core steps; they fit in 128 registers at GQA 8 too, for 4 resident blocks
// per SM (their loads in flight: with 3, as 134 registers allowed, batch 8 x 32k took 22%
// longer).
// kRing: the ring variant's stages (0: none; with kMma, without kPrologue).
// kStagedMerge: plan.staged_merge (ring variants only). The other variants keep the register
// merge's code: compiled with both paths, the ring variant took 168 registers instead of 186
// and batch 1 x 1k took 2% longer with the same merge (H100, bench/RESULTS.md).
// kLdmatrix: plan.ring_ldmatrix (ring variants only): the steps read their stages with
// ldmatrix (Ring, ring_load_step, ring_mma_step).
template <int D, int G, bool kPrologue, bool kOneBlock, bool kMma, int kRing = 0,
          bool kStagedMerge = false, bool kLdmatrix = false, bool kClusterMerge = false>
__global__ void __launch_bounds__(kThreads,
                                  kRing > 0 ? Ring<(kRing > 0 ? kRing : 1), kLdmatrix>::kBlocksPerSm
                                  : kMma    ? kMmaBlocksPerSm
                                            : Tile<D, G>::kBlocksPerSm)
    decode_attention_kernel(const KernelArgs a) {
  static_assert(!kMma || (D == 128 && G >= 4), "mma_steps: D 128, G 4 or 8");
  static_assert(kRing == 0 || (kMma && !kPrologue), "the ring feeds the tensor-core steps");
  static_assert(!kStagedMerge || kRing > 0, "the staged merge uses the ring's shared memory");
  static_assert(!kLdmatrix || kRing > 0, "ldmatrix reads the ring's stages");
  static_assert(!kClusterMerge || (kRing > 0 && !kStagedMerge && G * D / 4 == kThreads),
                "the cluster merge: ring variants with the register merge, one chunk a thread");
  using T = Tile<D, G>;
  constexpr int kLanes = T::kLanesPerRow;
  constexpr int kChunks = G * D / 4;  // float4 chunks of one (seq, kv head) output
  extern __shared__ __align__(128) unsigned char smem[];
  BlockTrace trace(a);
  // Whose ring copies zero-fill the rows past a split's end (ring_request): the ldmatrix
  // rings, which read whole stages, and the register rings without the staged merge, whose
  // steps then load every row unconditionally, without a zero-fill and a select per load (172
  // registers instead of 188; H100, per layer in a graph, faster of two or three passes in two
  // calls: batch 1 x 4k 7.65 -> 7.50 us and 7.72 -> 7.53, x 5k 9.48 -> 9.43 and 9.62 -> 9.53,
  // GQA 8 x 4k 7.86 -> 7.74 and 7.83 -> 7.75; the one loss measured: GQA 8 x 7k 11.33 ->
  // 11.46). The staged-merge register rings keep the selects: zero-filled, they were slower
  // (batch 1 x 6k 9.93 -> 10.15, x 32k 43.78 -> 44.08, GQA 8 x 8k 11.35 -> 11.52;
  // bench/RESULTS.md).
  constexpr bool kRingZeroFill = kLdmatrix || !kStagedMerge;

  // The cluster merge's receiving barrier, initialized in every block before the cluster
  // arrival that the senders wait for before their first store into another block.
  [[maybe_unused]] __shared__ uint64_t recv_full;
  if constexpr (kClusterMerge) {
    if (threadIdx.x == 0) {
      mbar_init(&recv_full, 1);
      fence_mbar_init();
    }
    cluster_arrive_release();
  }

  // Without the overlap guarantee nothing is read before the previous kernel completes.
  if (!a.overlap_previous_kernel) {
    pdl_wait();
    pdl_launch_dependents();
    trace.at(kTraceReleased);
  }

  const int split = a.kv_heads_adjacent ? blockIdx.y : blockIdx.x;
  const int kvh = a.kv_heads_adjacent ? blockIdx.x : blockIdx.y;
  const int seq = blockIdx.z;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int row = lane / kLanes, col = lane % kLanes;
  const int num_q_heads = a.num_kv_heads * G;
  const size_t out_row0 = size_t(seq) * num_q_heads + size_t(kvh) * G;  // first q head row

  // Lengths beyond the block table are clamped so that a bad length cannot read outside it.
  const int local_len = local_kv_len(a.context_lens[seq], a.cp_size, a.cp_rank, 1 << a.block_shift);
  const int len = max(0, min(local_len, a.max_blocks_per_seq << a.block_shift));
  int chunk = 0;
  const int n_used = splits_used(len, a.num_splits, T::kTileTokens, &chunk);
  if (n_used == 0) {  // empty context: o = 0, lse = -inf, written by split 0 alone
    if (split == 0) {
      pdl_wait();
      for (int e = threadIdx.x; e < kChunks; e += kThreads) {
        const size_t r = out_row0 + e / (D / 4);
        const int d = e % (D / 4) * 4;
        *reinterpret_cast<uint2*>(a.out + r * D + d) = make_uint2(0, 0);
        if (a.out_f32) *reinterpret_cast<float4*>(a.out_f32 + r * D + d) = float4{0, 0, 0, 0};
        if (a.lse && d == 0) a.lse[r] = -INFINITY;
      }
    }
    trace.role(kTraceIdle);
    trace.end();
    return;
  }
  if (split >= n_used) {  // not counted by the merge: it waits for n_used arrivals
    trace.role(kTraceIdle);
    trace.end();
    return;
  }
  const int begin = split * chunk;
  const int end = min(len, begin + chunk);
  if (end == len) trace.role(kTraceLastRow);
  const int32_t* table = a.block_tables + size_t(seq) * a.max_blocks_per_seq;

  // Prologue: the split's first tiles, normally all of them, stream into shared memory as
  // bulk copies, requested (with overlap_previous_kernel) while the previous kernel runs.
  [[maybe_unused]] bf16* tiles = reinterpret_cast<bf16*>(smem);  // [tile][K, V][token][D]
  [[maybe_unused]] __shared__ uint64_t full[T::kMaxPrologueTiles];
  [[maybe_unused]] __shared__ __align__(16) bf16 s_fresh[2][D];  // re-read last row: K, V
  [[maybe_unused]] int prologue_tiles = 0;
  if constexpr (kPrologue) {
    prologue_tiles = min(a.prologue_tiles, ceil_div(end - begin, T::kTileTokens));
    if (threadIdx.x == 0) {
      for (int t = 0; t < prologue_tiles; ++t) mbar_init(&full[t], 1);
      fence_mbar_init();
    }
    __syncthreads();
    if (warp == 0)
      request_tiles<D, G>(a, table, kvh, begin, end, prologue_tiles, tiles, full, lane);
  }

  // With the overlap guarantee every row but each sequence's last is final before the wait:
  // a warp whose first step does not hold that row requests it now, so that its loads are in
  // flight while the previous kernel finishes (H200, per layer in a graph, with the
  // acquire-release arrival in arrive_last: batch 1 x 32k 40.1 -> 38.4 us, batch 32 x 4k
  // 130.6 -> 128.3; bench/RESULTS.md).
  [[maybe_unused]] MmaStep mma_first;
  [[maybe_unused]] bool mma_preloaded = false;
  // [warp][stage][K, V][16][D], 256-byte aligned with kLdmatrix (Ring)
  [[maybe_unused]] bf16* ring =
      reinterpret_cast<bf16*>(smem + (kLdmatrix ? (256 - shared_address(smem) % 256) % 256 : 0));
  if constexpr (kRing > 0) {
    ring_request_first<kRing, kLdmatrix, kRingZeroFill>(a, table, kvh, warp, lane, begin, end, len,
                                                        true, ring);
  } else if constexpr (kMma && !kPrologue) {
    const int t_first = begin + warp * 16;
    if (a.overlap_previous_kernel && t_first < end && t_first + 16 < len) {
      mma_load_step(a, table, kvh, lane, t_first, end, mma_first);
      mma_preloaded = true;
    }
  }

  trace.at(kTraceIssued);
  if (a.overlap_previous_kernel) {
    pdl_wait();
    pdl_launch_dependents();
    trace.at(kTraceReleased);
  }

  float(*s_o)[G][D] = reinterpret_cast<float(*)[G][D]>(smem);
  float(*s_m)[G] = reinterpret_cast<float(*)[G]>(smem + kWarps * G * D * 4);
  float(*s_l)[G] = reinterpret_cast<float(*)[G]>(smem + kWarps * G * D * 4 + kWarps * G * 4);
  // The sequence's last row when the prologue holds it, the previous kernel may have written
  // it while the copies read it, and it is read again (below, per path).
  [[maybe_unused]] int fresh_tok = -1;
  if constexpr (kPrologue) {
    const int prologue_end = begin + prologue_tiles * T::kTileTokens;
    if (a.overlap_previous_kernel && end == len && len <= prologue_end) fresh_tok = len - 1;
  }
  if constexpr (kMma) {
    float mm[2] = {-INFINITY, -INFINITY}, lm[2] = {0.0f, 0.0f}, om[8][4] = {};
    if constexpr (kRing > 0) {
      // q as the B fragments of the ring's kind of step (ring_steps).
      std::conditional_t<kLdmatrix, uint32_t[8][2], uint4[4]> q;
      if constexpr (kLdmatrix) {
        load_q_ring<G>(a, out_row0, lane, q);
      } else {
        load_q_fragments<G>(a, out_row0, lane, q);
      }
      ring_request_first<kRing, kLdmatrix, kRingZeroFill>(a, table, kvh, warp, lane, begin, end,
                                                          len, false, ring);
      ring_steps<kRing, kLdmatrix, kRingZeroFill>(a, table, kvh, warp, lane, begin, end, ring, q,
                                                  mm, lm, om, trace);
      __syncthreads();  // the warps' partials below overwrite the rings
    } else {
      uint4 qb[4];
      load_q_fragments<G>(a, out_row0, lane, qb);
      if constexpr (kPrologue) {
        mma_prologue_steps<G>(a, table, kvh, warp, lane, begin, end, prologue_tiles, fresh_tok,
                              tiles, full, qb, mm, lm, om, trace);
        __syncthreads();  // the warps' partials below overwrite the tiles
      } else {
        mma_steps(a, table, kvh, warp, lane, begin, end, qb, mma_preloaded, mma_first, mm, lm, om);
      }
    }
    // l over the warp's tokens; then the warp's (m, l, o) of heads 2t, 2t + 1 to shared memory.
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      lm[e] += __shfl_xor_sync(0xffffffffu, lm[e], 4);
      lm[e] += __shfl_xor_sync(0xffffffffu, lm[e], 8);
      lm[e] += __shfl_xor_sync(0xffffffffu, lm[e], 16);
      const int h = 2 * t + e;
      if (h < G) {
        if constexpr (kLdmatrix) {  // ring_mma_step's layout: dims 16mt + g and + 8
#pragma unroll
          for (int mt = 0; mt < 8; ++mt) {
            s_o[warp][h][16 * mt + g] = om[mt][e];
            s_o[warp][h][16 * mt + 8 + g] = om[mt][e + 2];
          }
        } else {
#pragma unroll
          for (int half = 0; half < 2; ++half) {
            const float(*x)[4] = om + 4 * half;  // m-tiles 4 half + j: dims 64 half + 8g + 2j, + 1
            float4* dst = reinterpret_cast<float4*>(&s_o[warp][h][64 * half + 8 * g]);
            dst[0] = make_float4(x[0][e], x[0][e + 2], x[1][e], x[1][e + 2]);
            dst[1] = make_float4(x[2][e], x[2][e + 2], x[3][e], x[3][e + 2]);
          }
        }
        if (g == 0) {
          s_m[warp][h] = mm[e];
          s_l[warp][h] = lm[e];
        }
      }
    }
  } else {
    // This lane's 8 dims of each query head of the group, scaled so that q·k is in base 2.
    float q[G][8];
#pragma unroll
    for (int h = 0; h < G; ++h) {
      unpack8(__ldcg(reinterpret_cast<const uint4*>(a.q + (out_row0 + h) * D + col * 8)), q[h]);
#pragma unroll
      for (int i = 0; i < 8; ++i) q[h][i] *= a.scale_log2;
    }
    // Per warp: running max m (the same in every lane), and per lane the sums over its rows.
    float m[G], l[G], o[G][8];
#pragma unroll
    for (int h = 0; h < G; ++h) {
      m[h] = -INFINITY;
      l[h] = 0.0f;
#pragma unroll
      for (int i = 0; i < 8; ++i) o[h][i] = 0.0f;
    }

    if constexpr (!kPrologue) {
      register_steps<D, G, kOneBlock>(a, table, kvh, warp, row, col, begin, end, q, m, l, o);
    } else {
      // The last row, when fresh_tok says so, is read again, now, into s_fresh. Exactly the
      // threads that will use each 16 bytes load them (no barrier).
      const int prologue_end = begin + prologue_tiles * T::kTileTokens;
      if (fresh_tok >= 0) {
        const int r = (fresh_tok - begin) % T::kTileTokens;
        if (warp == r / T::kTokensPerWarpIter && row == r % T::kRowsPerWarp) {
          const int64_t elem = kv_row_offset(a, table, kvh, fresh_tok, D) + col * 8;
          *reinterpret_cast<uint4*>(&s_fresh[0][col * 8]) =
              __ldcg(reinterpret_cast<const uint4*>(a.k_cache + elem));
          *reinterpret_cast<uint4*>(&s_fresh[1][col * 8]) =
              __ldcg(reinterpret_cast<const uint4*>(a.v_cache + elem));
        }
      }
      // Tokens past the prologue first (none when the split fits, as the plan arranges),
      // while its tiles land; then the tiles from shared memory. The softmax state does not
      // depend on the order in which tokens arrive, up to fp32 rounding.
      register_steps<D, G, kOneBlock>(a, table, kvh, warp, row, col, prologue_end, end, q, m, l, o);
      for (int tile = 0; tile < prologue_tiles; ++tile) {
        mbar_wait(&full[tile], 0);
        trace.at(kTraceLoaded);  // thread 0's last wait stays
        const bf16* k_tile = tiles + size_t(tile) * 2 * T::kTileTokens * D;
        const bf16* v_tile = k_tile + T::kTileTokens * D;
        const int t0 = begin + tile * T::kTileTokens;
        uint4 kr[T::kRowGroups], vr[T::kRowGroups];
        bool valid[T::kRowGroups];
#pragma unroll
        for (int g = 0; g < T::kRowGroups; ++g) {
          const int r = warp * T::kTokensPerWarpIter + g * T::kRowsPerWarp + row;
          const int tok = t0 + r;
          valid[g] = tok < end;
          kr[g] = vr[g] = make_uint4(0, 0, 0, 0);  // rows past the end: p = 0 times finite V
          if (valid[g]) {
            const bool fresh = tok == fresh_tok;
            kr[g] =
                *reinterpret_cast<const uint4*>((fresh ? s_fresh[0] : k_tile + r * D) + col * 8);
            vr[g] =
                *reinterpret_cast<const uint4*>((fresh ? s_fresh[1] : v_tile + r * D) + col * 8);
          }
        }
        accumulate<D, G>(q, kr, vr, valid, m, l, o);
      }
    }

    // Sum l and o over the warp's rows (all rows of a warp share m).
#pragma unroll
    for (int off = kLanes; off < 32; off *= 2) {
#pragma unroll
      for (int h = 0; h < G; ++h) {
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], off);
#pragma unroll
        for (int i = 0; i < 8; ++i) o[h][i] += __shfl_xor_sync(0xffffffffu, o[h][i], off);
      }
    }

    // Merge the warps through shared memory (in the prologue variant the tile buffers, once
    // every warp is done reading them). A warp with no tokens has m = -inf, l = o = 0.
    if constexpr (kPrologue) __syncthreads();
    if (row == 0) {
#pragma unroll
      for (int h = 0; h < G; ++h) {
        float4* dst = reinterpret_cast<float4*>(&s_o[warp][h][col * 8]);
        dst[0] = make_float4(o[h][0], o[h][1], o[h][2], o[h][3]);
        dst[1] = make_float4(o[h][4], o[h][5], o[h][6], o[h][7]);
      }
    }
    if (lane == 0) {
#pragma unroll
      for (int h = 0; h < G; ++h) {
        s_m[warp][h] = m[h];
        s_l[warp][h] = l[h];
      }
    }
  }  // !kMma
  __syncthreads();
  trace.at(kTraceComputed);
  const size_t pair = size_t(seq) * a.num_kv_heads + kvh;
  if constexpr (kClusterMerge) {
    if (n_used > 1) {
      cluster_merge_block<D, G, kRing, kLdmatrix>(a, smem, &recv_full, split, n_used, out_row0, s_o,
                                                  s_m, s_l, trace);
      return;
    }
  }
  for (int e = threadIdx.x; e < kChunks; e += kThreads) {
    const int h = e / (D / 4), d = e % (D / 4) * 4;
    const auto [mb, lb, ob] = reduce_warps<D, G>(s_o, s_m, s_l, h, d);
    if (n_used == 1) {
      write_final<D>(a, out_row0 + h, d, ob, lb, mb);
    } else {
      store_part<D, G>(a, pair * a.parts_per_pair + split, h, d, ob, mb, lb);
    }
  }
  trace.at(kTraceWritten);
  if (n_used == 1) {
    trace.role(kTraceSingleSplit);
    trace.end();
    return;
  }

  // Publish this split's partial and count it. With few splits the last block to arrive
  // merges them all. With many, in two levels: the last block to arrive of each group of
  // kMergeGroup consecutive splits merges the group's partials into a group partial, and
  // the last group to finish merges the group partials into the output. After the last
  // split ends, the critical path is then one more arrival (an atomic round trip between
  // two barriers) and two rounds of L2 loads, instead of one round per kMergeUnroll splits
  // (H200, per layer in a graph: batch 1 x 16k, 66 splits, 23.6 -> 21.0 us; x 32k 38.4 ->
  // 36.4; but with two levels at 17 and 32 splits, batch 1 x 1k 5.9 -> 6.7 and x 4k 11.4 ->
  // 12.0: hence kTwoLevelMinSplits).
  int* pair_counters = a.counters + pair * kCountersPerPair;  // [0] all, [1 + g] group g
  const size_t parts = pair * a.parts_per_pair;  // the splits' partials, then the groups'
  if (n_used < kTwoLevelMinSplits) {
    const bool last = arrive_last(pair_counters, n_used);
    trace.at(kTraceArrived);
    if (last) {
      merge<D, G, kRing, kStagedMerge>(a, parts, n_used, true, out_row0, 0, smem);
      trace.role(kTraceFinalMerger);
      trace.at(kTraceMerged);
    }
    trace.end();
    return;
  }
  const int group = split / kMergeGroup, group_first = group * kMergeGroup;
  const int group_size = min(kMergeGroup, n_used - group_first);
  const int n_groups = ceil_div(n_used, kMergeGroup);
  const bool group_last = arrive_last(pair_counters + 1 + group, group_size);
  trace.at(kTraceArrived);
  if (!group_last) {
    trace.end();
    return;
  }
  merge<D, G, kRing, kStagedMerge>(a, parts + group_first, group_size, false, out_row0,
                                   parts + a.num_splits + group, smem);
  trace.role(kTraceGroupMerger);
  trace.at(kTraceMerged);
  const bool last = arrive_last(pair_counters, n_groups);
  trace.at(kTraceArrived2);
  if (last) {
    merge<D, G, kRing, kStagedMerge>(a, parts + a.num_splits, n_groups, true, out_row0, 0, smem);
    trace.role(kTraceFinalMerger);
    trace.at(kTraceMerged2);
  }
  trace.end();
}

// Groups of kMergeGroup splits (the merge's first level).
int merge_groups(int num_splits) {
  return (num_splits + kMergeGroup - 1) / kMergeGroup;
}

// Partials per (sequence, kv head) in the workspace: one per split, then one per group.
int parts_per_pair(int num_splits) {
  return num_splits + merge_groups(num_splits);
}

// Byte offsets of the workspace regions, each 256-byte aligned: the merge counters first, for
// workspace_num_seqs sequences at a fixed stride (the same bytes for every plan made with
// that count), then this plan's partials. Another plan's partials may overwrite this one's
// (they are written before they are read, in every launch), never its counters.
struct WorkspaceLayout {
  size_t counters = 0, o = 0, m = 0, l = 0, total = 0;
};

size_t align256(size_t x) {
  return (x + 255) / 256 * 256;
}

WorkspaceLayout workspace_layout(const DecodeAttentionParams& p, int num_splits) {
  WorkspaceLayout w;
  if (num_splits <= 1) return w;  // one split: no partials, no counters
  const size_t seqs = size_t(std::max(p.num_seqs, p.workspace_num_seqs));
  const size_t parts = size_t(p.num_seqs) * p.num_q_heads * parts_per_pair(num_splits);
  w.counters = 0;
  w.o = align256(seqs * p.num_kv_heads * kCountersPerPair * sizeof(int));
  w.m = w.o + align256(parts * p.head_dim * sizeof(float));
  w.l = w.m + align256(parts * sizeof(float));
  w.total = w.l + align256(parts * sizeof(float));
  return w;
}

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("decode_attention: " + what);
}

// Shape checks shared by the plan and the launch.
void check_shape(const DecodeAttentionParams& p) {
  if (p.num_seqs < 0) fail("num_seqs is negative (" + std::to_string(p.num_seqs) + ")");
  if (p.num_seqs > 65535) fail("num_seqs " + std::to_string(p.num_seqs) + " exceeds 65535");
  if (p.head_dim != 64 && p.head_dim != 128) {
    fail("head_dim " + std::to_string(p.head_dim) + " is not supported (64 or 128)");
  }
  if (p.num_kv_heads <= 0 || p.num_kv_heads > 65535) {
    fail("num_kv_heads " + std::to_string(p.num_kv_heads) + " is not in [1, 65535]");
  }
  if (p.num_q_heads <= 0 || p.num_q_heads % p.num_kv_heads != 0) {
    fail("num_q_heads (" + std::to_string(p.num_q_heads) +
         ") is not a positive multiple of num_kv_heads (" + std::to_string(p.num_kv_heads) + ")");
  }
  const int group = p.num_q_heads / p.num_kv_heads;
  if (group != 1 && group != 2 && group != 4 && group != 8) {
    fail("GQA ratio " + std::to_string(group) + " (num_q_heads / num_kv_heads) is not supported" +
         " (1, 2, 4 or 8)");
  }
  const int bs = p.block_size;
  if (bs != 8 && bs != 16 && bs != 32 && bs != 64 && bs != 128) {
    fail("block_size " + std::to_string(bs) + " is not supported (8, 16, 32, 64 or 128)");
  }
  if (p.max_blocks_per_seq <= 0 && p.num_seqs > 0) {
    fail("max_blocks_per_seq must be positive, got " + std::to_string(p.max_blocks_per_seq));
  }
  if (int64_t(p.max_blocks_per_seq) * bs > INT32_MAX) fail("block table spans over 2^31 tokens");
  if (p.max_context_len < 0 || int64_t(p.max_context_len) > int64_t(p.max_blocks_per_seq) * bs) {
    fail("max_context_len " + std::to_string(p.max_context_len) + " is outside [0, " +
         std::to_string(int64_t(p.max_blocks_per_seq) * bs) + "] (block table capacity)");
  }
  if (p.workspace_num_seqs < 0 || (p.workspace_num_seqs > 0 && p.workspace_num_seqs < p.num_seqs)) {
    fail("workspace_num_seqs " + std::to_string(p.workspace_num_seqs) +
         " is neither 0 nor >= num_seqs (" + std::to_string(p.num_seqs) + ")");
  }
  if (!std::isfinite(p.scale)) fail("scale is not finite");
  if (p.cp_size < 1 || p.cp_rank < 0 || p.cp_rank >= p.cp_size) {
    fail("context-parallel rank " + std::to_string(p.cp_rank) + " of " + std::to_string(p.cp_size) +
         " is invalid");
  }
}

bool aligned(const void* ptr, size_t bytes) {
  return reinterpret_cast<uintptr_t>(ptr) % bytes == 0;
}

template <int D, int G, bool kPrologue, bool kOneBlock, bool kMma = false, int kRing = 0,
          bool kStagedMerge = false, bool kLdmatrix = false, bool kClusterMerge = false>
void launch_variant(const KernelArgs& args, dim3 grid, cudaStream_t stream) {
  // Above 48 KiB of shared memory (static, under 8 KiB here, plus dynamic) a kernel must opt
  // in, per device: set it on every launch (cheap, and not on the path of graph replays).
  using T = Tile<D, G>;
  int smem = std::max(args.prologue_tiles * 2 * T::kTileBytes, T::kMergeBytes);
  if constexpr (kRing > 0) smem = std::max(smem, Ring<kRing, kLdmatrix>::kBytes);
  if constexpr (kClusterMerge) smem = Ring<kRing, kLdmatrix>::kBytes + cluster_recv_bytes<D, G>();
  const auto kernel = decode_attention_kernel<D, G, kPrologue, kOneBlock, kMma, kRing, kStagedMerge,
                                              kLdmatrix, kClusterMerge>;
  if (smem > 48 * 1024 - kSmemPerBlockExtra) {
    CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  }
  // The cluster merge: a sequence's splits for one kv head are one cluster (grid x is the
  // split: decode_attention allows it with the split-major grid only).
  if constexpr (kClusterMerge) {
    launch_pdl_cluster(kernel, grid, dim3(kThreads), smem, stream, grid.x, args);
  } else {
    launch_pdl(kernel, grid, dim3(kThreads), smem, stream, args);
  }
  CUDA_CHECK_LAUNCH();
}

// Where the tensor-core steps run (head dim 128, GQA 4 or 8, blocks of 16 tokens or more):
// by default both over global memory (mma_steps) and over the prologue's tiles
// (mma_prologue_steps). For before/after measurements, ARBOR_DECODE_MMA=0 picks the
// CUDA-core steps everywhere, ARBOR_DECODE_MMA=steps keeps them for the prologue only.
enum class MmaUse { kNone, kSteps, kAll };

MmaUse mma_use() {
  static const MmaUse use = [] {
    const char* v = std::getenv("ARBOR_DECODE_MMA");
    const std::string s = v ? v : "";
    return s == "0" ? MmaUse::kNone : s == "steps" ? MmaUse::kSteps : MmaUse::kAll;
  }();
  return use;
}

// The ring variant's stages plans take (ARBOR_DECODE_RING=2 or 3), 0 when off (the
// default): an experiment, selected for before/after measurements.
int ring_stages_setting() {
  static const int stages = [] {
    const char* v = std::getenv("ARBOR_DECODE_RING");
    const std::string s = v ? v : "";
    return s == "2" ? 2 : s == "3" ? 3 : 0;
  }();
  return stages;
}

// Whether launches of these params take the tensor-core steps (as launch() decides: with a
// prologue or over global memory): the shapes the ring variant (which replaces the steps over
// global memory) serves.
bool tensor_core_shape(const DecodeAttentionParams& p) {
  return p.head_dim == 128 && p.num_q_heads / p.num_kv_heads >= 4 && p.block_size >= 16 &&
         mma_use() != MmaUse::kNone;
}

// A ring plan's variant (plan.ring_stages 2 or 3, as decode_attention checks): its stages, its
// merge and its steps.
template <int D, int G, bool kLdmatrix>
void launch_ring(const KernelArgs& args, const DecodeAttentionPlan& plan, dim3 grid,
                 cudaStream_t stream) {
  if constexpr (G * D / 4 == kThreads) {  // GQA 4 (decode_attention checks the plan)
    if (plan.cluster_merge) {
      return plan.ring_stages == 2
                 ? launch_variant<D, G, false, true, true, 2, false, kLdmatrix, true>(args, grid,
                                                                                      stream)
                 : launch_variant<D, G, false, true, true, 3, false, kLdmatrix, true>(args, grid,
                                                                                      stream);
    }
  }
  if (plan.ring_stages == 2) {
    return plan.staged_merge
               ? launch_variant<D, G, false, true, true, 2, true, kLdmatrix>(args, grid, stream)
               : launch_variant<D, G, false, true, true, 2, false, kLdmatrix>(args, grid, stream);
  }
  return plan.staged_merge
             ? launch_variant<D, G, false, true, true, 3, true, kLdmatrix>(args, grid, stream)
             : launch_variant<D, G, false, true, true, 3, false, kLdmatrix>(args, grid, stream);
}

template <int D, int G>
void launch(const KernelArgs& args, const DecodeAttentionPlan& plan, dim3 grid,
            cudaStream_t stream) {
  const bool one_block = (1 << args.block_shift) >= Tile<D, G>::kTokensPerWarpIter;
  const bool prologue = args.prologue_tiles > 0;
  if constexpr (D == 128 && G >= 4) {
    const MmaUse use = mma_use();
    if (args.block_shift >= 4 && (use == MmaUse::kAll || (use == MmaUse::kSteps && !prologue))) {
      if (prologue) return launch_variant<D, G, true, true, true>(args, grid, stream);
      if (plan.ring_stages > 0) {
        return plan.ring_ldmatrix ? launch_ring<D, G, true>(args, plan, grid, stream)
                                  : launch_ring<D, G, false>(args, plan, grid, stream);
      }
      return launch_variant<D, G, false, true, true>(args, grid, stream);
    }
  }
  if (prologue) {
    one_block ? launch_variant<D, G, true, true>(args, grid, stream)
              : launch_variant<D, G, true, false>(args, grid, stream);
  } else {
    one_block ? launch_variant<D, G, false, true>(args, grid, stream)
              : launch_variant<D, G, false, false>(args, grid, stream);
  }
}

}  // namespace

// Whether a ring plan's merge goes through shared memory (plan.staged_merge). The merger's
// loads compete with the DRAM traffic of the blocks still streaming and of the next launch,
// and come back in rounds; requested all at once as copies they take less time wherever
// there are many partials or the launch streams long splits, but cost a block barrier and a
// pass through shared memory, which loses at batch 1 with up to 16 splits and with splits of
// 128 tokens. H100, per layer in a graph, register -> staged merge (bench/RESULTS.md): batch
// 1 x 6k (24 splits) 10.29 -> 10.04 us, x 12k (33) 19.84 -> 18.70, x 16k 25.19 -> 23.94, x 32k
// 46.06 -> 45.05; GQA 8 batch 1 x 16k 27.79 -> 26.79; batch 2 x 4k (16 splits of 256
// tokens) 14.06 -> 13.83, batch 8 x 4k (4 of 1024) 44.70 -> 43.97, GQA 8 batch 2 x 4k 15.38 ->
// 14.59; but batch 1 x 1k (8 splits) 4.51 -> 4.79, x 2k 6.15 -> 6.48, x 4k (16) 7.67 -> 7.76,
// batch 2 x 1k (8 of 128) 5.44 -> 5.70. Two-split plans were not measured and keep the
// register merge. With this rule, in-run against the register merge everywhere: batch 1 x 1k-4k
// within 0.3%, x 12k -5.9%, x 32k -2.5%, batch 8 x 4k -1.6%, GQA 8 batch 8 x 1k -6.0%.
bool staged_merge(const DecodeAttentionParams& p, const DecodeAttentionPlan& plan) {
  if (plan.ring_stages == 0 || plan.num_splits < kStagedMergeMinSplits) return false;
  if (plan.num_splits > 2 * kMergeUnroll) return true;
  const int64_t split_tokens = (int64_t(p.max_context_len) + plan.num_splits - 1) / plan.num_splits;
  return p.num_seqs > 1 && split_tokens >= kStagedMergeMinSplitTokens;
}

// Whether a ring plan's steps read their stages with ldmatrix (plan.ring_ldmatrix: Ring,
// ring_load_step). A quarter fewer instructions per step shortens the chain after the wait
// where the splits are short, and batches of two and more gain too. H100, in-run against the
// register steps, per layer in a graph (bench/RESULTS.md): batch 1 x 1k 4.50 -> 4.42 us, x 1.5k
// 5.37 -> 4.85, x 2k 6.17 -> 5.25, x 3k 7.40 -> 6.74; batch 2 x 1k 5.44 -> 5.16, x 4k 13.61 ->
// 12.61; batch 4 x 2k 13.38 -> 12.48; batch 8 x 512 9.19 -> 8.38; batch 16-32 up to 2.2%
// faster; GQA 8 batch 1 x 2k 6.95 -> 6.07, batch 2 x 4k 14.56 -> 13.48. But forced at batch 1
// with kLdmatrixMaxSplitsBatch1 splits or more it loses (x 4k 7.65 -> 7.82, x 6k 9.98 -> 10.55,
// x 8k 13.12 -> 13.92, x 32k 43.74 -> 44.41; GQA 8 x 4k 8.80 -> 9.80), although alone, under
// Nsight Compute, batch 1 x 6k runs 3.5% faster with it; the cause was not found, and those
// plans keep the register steps.
bool ring_ldmatrix(const DecodeAttentionParams& p, const DecodeAttentionPlan& plan) {
  return plan.ring_stages > 0 && (p.num_seqs > 1 || plan.num_splits < kLdmatrixMaxSplitsBatch1);
}

// Whether a plan can take the cluster merge (plan.cluster_merge): what the kernel supports.
bool cluster_merge_supported(const DecodeAttentionParams& p, const DecodeAttentionPlan& plan) {
  return plan.ring_stages > 0 && !plan.staged_merge && !plan.kv_heads_adjacent &&
         plan.num_splits >= 2 && plan.num_splits <= kClusterMaxSplits && p.head_dim == 128 &&
         p.num_q_heads == 4 * p.num_kv_heads;
}

// Whether a plan takes the cluster merge: at batch 1, wherever it can. After the last split's
// steps it leaves one push into shared memory and a merge from it, instead of the partial's
// store and release, the atomic's round trip and the merge's loads through an L2 that the
// next layer's early loads keep busy (H100, in-run against the register merge, per layer in a
// graph, bench/RESULTS.md): batch 1 x 768 4.29 -> 3.52 us, x 1k 4.40 -> 3.64, x 1.5k 4.86 ->
// 4.53, x 2k 5.25 -> 4.74. Batches of 2 and more lose: batch 2 x 1k 5.20 -> 5.27, batch 4 x
// 1k 8.12 -> 10.52, batch 8 x 512 8.45 -> 10.37 (why was not traced).
bool cluster_merge(const DecodeAttentionParams& p, const DecodeAttentionPlan& plan) {
  return p.num_seqs == 1 && cluster_merge_supported(p, plan);
}

// A split streamed whole into shared memory takes the latency of its loads off the
// critical path (they start before the previous kernel ends) but costs occupancy, which
// long splits need to keep loads in flight: so the prologue is used only with
// overlap_previous_kernel, when every split of the longest planned context fits in it and the
// grid still fits one wave of blocks with that shared memory (bench/RESULTS.md: batch 1 at 1k
// 8.2 -> 6.4 us on an H100). The plan's rules then take 3-stage rings for most of these
// splits (kPrologueMaxContext); the prologue keeps the shortest contexts and the grids too
// large for one wave of ring blocks. 0: no prologue.
int prologue_tiles(const DecodeAttentionParams& p, int num_splits, int num_sms) {
  // Without the overlap there is nothing to hide the prologue behind, and it only costs
  // (H100, batch 1 at 4k: 17.2 us with it, 14.3 without).
  if (!p.overlap_previous_kernel || p.num_seqs <= 0 || p.max_context_len <= 0) return 0;
  const TileInfo t = tile_info(p.head_dim, p.num_q_heads / p.num_kv_heads);
  const int64_t len = p.max_context_len;
  const int64_t per_split = (len + num_splits - 1) / num_splits;
  const int64_t tiles = (per_split + t.tile_tokens - 1) / t.tile_tokens;
  if (tiles > t.max_prologue_tiles) return 0;
  const int64_t smem = std::max<int64_t>(tiles * t.tile_kv_bytes, t.merge_bytes);
  const int64_t per_sm =
      std::min<int64_t>(t.blocks_per_sm, kSmemPerSm / (smem + kSmemPerBlockExtra));
  const int64_t splits_used = (len + tiles * t.tile_tokens - 1) / (tiles * t.tile_tokens);
  const int64_t blocks = int64_t(p.num_seqs) * p.num_kv_heads * splits_used;
  return blocks <= int64_t(num_sms) * per_sm ? int(tiles) : 0;
}

DecodeAttentionPlan plan_decode_attention(const DecodeAttentionParams& p, int num_sms,
                                          int force_splits) {
  check_shape(p);
  if (num_sms <= 0) fail("num_sms must be positive, got " + std::to_string(num_sms));
  if (force_splits < 0 || force_splits > kMaxSplits) {
    fail("force_splits " + std::to_string(force_splits) + " is outside [0, " +
         std::to_string(kMaxSplits) + "]");
  }
  DecodeAttentionPlan plan;
  int rule_ring = 0;                // ring stages the rules below ask for
  bool ring_over_prologue = false;  // the rules take a ring where the prologue fits
  const bool tensor_cores = tensor_core_shape(p);
  if (force_splits > 0) {
    plan.num_splits = force_splits;
  } else if (p.num_seqs > 0 && p.max_context_len > 0) {
    TileInfo t = tile_info(p.head_dim, p.num_q_heads / p.num_kv_heads);
    const int64_t pairs = int64_t(p.num_seqs) * p.num_kv_heads;
    const int64_t len = p.max_context_len;
    // The rules below are for the tensor-core shapes with the overlap, as measured; a ring
    // setting (ARBOR_DECODE_RING) replaces them.
    const bool rules = p.overlap_previous_kernel && tensor_cores && ring_stages_setting() == 0;
    // The tensor-core steps over global memory are planned for the blocks per SM they run
    // with; Tile's count is the CUDA-core steps' (2 at GQA 8: H100, GQA 8 per layer in a
    // graph, batch 1 x 16k 32.9 -> 28.9 us, batch 8 x 1k 17.5 -> 15.3, x 4k 50.8 -> 47.9;
    // level from batch 8 x 32k on, bench/RESULTS.md).
    if (tensor_cores) t.blocks_per_sm = kMmaBlocksPerSm;
    // Mid-sized batches (kRingMinBatchTokens to kRingMaxBatchTokens tokens in all) stream
    // faster through 3-stage rings, with the split count of their 2 blocks per SM (H100, per
    // layer in a graph, bench/RESULTS.md: batch 1 x 32k 47.7 -> 46.5 us, batch 2 x 8k 26.9 ->
    // 24.2, batch 4 x 4k 25.8 -> 23.9, batch 8 x 4k 46.2 -> 44.7, batch 16 x 2k 46.2 -> 44.5,
    // batch 32 x 1k 45.9 -> 42.7), more are level or up to 0.7% slower. At GQA 8 up to twice
    // as many gain (batch 32 x 4k 178.9 -> 175.3, batch 1 x 16k 28.9 -> 28.2). Since the
    // rings keep one early step in flight, from 8192 tokens (batch 1 x 12k 20.9 -> 19.8,
    // batch 2 x 7.5k 26.9 -> 23.1, batch 4 x 2.5k 17.8 -> 15.6, batch 8 x 1.5k 19.4 -> 18.7;
    // GQA 8 batch 16 x 512 16.2 -> 14.4), but not GQA 4's 1k contexts (batch 8 x 1k 13.6 ->
    // 14.1).
    const int64_t batch_tokens = int64_t(p.num_seqs) * len;
    const bool gqa8 = p.num_q_heads / p.num_kv_heads == 8;
    const int64_t ring_max = gqa8 ? kRingMaxBatchTokensGqa8 : kRingMaxBatchTokens;
    const bool ring_sized =
        batch_tokens >= kRingMinBatchTokens && batch_tokens <= ring_max &&
        (gqa8 || batch_tokens >= kRingSmallBatchTokens || len > kRingSmallMaxShortContext);
    if (rules && ring_sized) rule_ring = 3;
    // A prologue requests its whole split at once, and the next layer's prologues then queue
    // ahead of this layer's last loads, partials and arrival; a ring keeps one early step in
    // flight per warp. With two q·k chains in the ring steps the ring is faster for splits
    // that fit the prologue too, where its 2 blocks per SM hold the grid (H100, per layer in a
    // graph, prologue -> ring: batch 1 x 768 4.62 -> 4.35 us, x 1k 4.66 -> 4.52; batch 2 x
    // 256 4.43 -> 4.15, x 512 5.13 -> 4.44, x 1k 6.69 -> 5.38; batch 4 x 512 7.21 -> 6.43;
    // batch 8 x 256 6.94 -> 5.98; batch 16 x 256 9.13 -> 8.41; GQA 8 batch 2 x 1k 7.39 ->
    // 6.12), but not for the shortest (batch 1 x 512 3.83 -> 4.10, x 256 3.64 -> 3.84; batch
    // 2 x 128 4.09 -> 4.30) or where the ring's blocks would take two waves (batch 8 x 1k
    // 13.2 -> 16.6; bench/RESULTS.md).
    ring_over_prologue = rules && (len > kPrologueMaxContext ||
                                   (p.num_seqs > 1 && len >= kPrologueMinRingContextBatched));
    const int ring = ring_stages_setting() > 0 ? ring_stages_setting() : rule_ring;
    if (ring > 0 && tensor_cores) {
      t.blocks_per_sm = ring == 2 ? Ring<2>::kBlocksPerSm : Ring<3>::kBlocksPerSm;
    }
    // Splits that still get at least one block-iteration of tokens each.
    const int64_t most = (len + t.tile_tokens - 1) / t.tile_tokens;
    // One wave of resident blocks (no partial second wave), but not below
    // kMinTokensPerSplit tokens per split...
    const int64_t wave = std::max<int64_t>(1, int64_t(num_sms) * t.blocks_per_sm / pairs);
    const int64_t by_len = (len + kMinTokensPerSplit - 1) / kMinTokensPerSplit;
    // ...unless that would leave SMs idle: short contexts still get one block per SM.
    const int64_t fill = (num_sms + pairs - 1) / pairs;
    int64_t s = std::max(std::min(wave, by_len), std::min(fill, most));
    // Short contexts with few (sequence, kv head) pairs (batch 1-2 at 8 kv heads; tensor-core
    // shapes, with the overlap): what matters there is the chain after the wait, not filling
    // every SM. Up to kMergeUnroll splits that each fit the prologue (through rings from 513
    // tokens: ring_over_prologue above), merged in one round of loads; longer contexts, up to
    // kShortRingMaxContext, splits of kShortRingSplitTokens (8 to kShortRingMaxSplits of them)
    // through 3-stage rings (H100, per layer in a graph, the split sweeps in bench/RESULTS.md:
    // batch 1 x 512 4.92 -> 3.87 us, x 1k 5.64 -> 4.69, x 2k 7.15 -> 6.49, x 4k 10.77 -> 8.91, x
    // 5k 13.26 -> 10.14, x 6k 15.53 -> 12.50, x 7k 14.87 -> 14.61; batch 2 x 2k 9.36 -> 8.50, x
    // 4k 15.67 -> 15.17, x 5k 18.63 -> 17.78, x 6k 21.39 -> 20.04, x 7k 24.19 -> 22.85; at 8k the
    // rule's best, 15.61, loses to 64 splits over global memory, 14.79).
    if (rules && pairs * kMergeUnroll <= num_sms) {
      if (len <= int64_t(kMergeUnroll) * t.max_prologue_tiles * t.tile_tokens) {
        s = std::min<int64_t>(s, kMergeUnroll);
      } else if (!gqa8 && len >= kShortRingWideFrom && len <= kShortRingWideMaxContext &&
                 4 * pairs * kShortRingWideSplits <= 3 * int64_t(num_sms) * Ring<3>::kBlocksPerSm) {
        s = kShortRingWideSplits;
        rule_ring = 3;
      } else if (len <= kShortRingMaxContext) {
        s = std::clamp<int64_t>((len + kShortRingSplitTokens - 1) / kShortRingSplitTokens,
                                kMergeUnroll, kShortRingMaxSplits);
        rule_ring = 3;
      }
    }
    s = std::clamp<int64_t>(s, 1, std::min<int64_t>(most, kMaxSplits));
    plan.num_splits = int(s);
  }
  plan.prologue_tiles = prologue_tiles(p, plan.num_splits, num_sms);
  if (ring_over_prologue && plan.prologue_tiles > 0) {
    // Below the mid-sized rule's batch tokens, a grid too large for one wave of ring blocks
    // takes as many (longer) splits as that wave holds (H100, per layer in a graph, prologue
    // -> ring: batch 8 x 768, 6 -> 4 splits, 13.38 -> 12.09 us; batch 16 x 384, 3 -> 2, 12.71
    // -> 11.43; batch 7 x 768 12.22 -> 10.25, batch 6 x 1k 12.43 -> 11.26, batch 3 x 2k 13.17
    // -> 12.80; but batch 5 x 1k, 8 -> 6, 10.36 -> 10.73; at 8192 tokens batch 8 x 1k, 8
    // splits over global memory -> 4 through rings, loses: 13.33 -> 14.12).
    const int64_t pairs = int64_t(p.num_seqs) * p.num_kv_heads;
    const int64_t ring_wave = int64_t(num_sms) * Ring<3>::kBlocksPerSm;
    if (pairs * plan.num_splits > ring_wave && pairs <= ring_wave &&
        int64_t(p.num_seqs) * p.max_context_len < kRingMinBatchTokens) {
      plan.num_splits = int(ring_wave / pairs);
    }
    if (pairs * plan.num_splits <= ring_wave) {
      plan.prologue_tiles = 0;
      rule_ring = 3;
    }
  }
  if (plan.prologue_tiles == 0 && tensor_cores) {
    plan.ring_stages = ring_stages_setting() > 0 ? ring_stages_setting() : rule_ring;
  }
  plan.staged_merge = staged_merge(p, plan);
  plan.ring_ldmatrix = ring_ldmatrix(p, plan);
  plan.kv_heads_adjacent =
      int64_t(p.num_seqs) * p.max_context_len >= kKvHeadsAdjacentMinBatchTokens;
  plan.cluster_merge = cluster_merge(p, plan);
  plan.workspace_bytes = workspace_layout(p, plan.num_splits).total;
  return plan;
}

int decode_attention_trace_words() {
#if ARBOR_DECODE_TRACE
  return kTraceWords;
#else
  return 0;
#endif
}

DecodeAttentionWorkspaceUse decode_attention_workspace_use(const DecodeAttentionParams& p,
                                                           const DecodeAttentionPlan& plan) {
  check_shape(p);
  DecodeAttentionWorkspaceUse use;
  const WorkspaceLayout w = workspace_layout(p, plan.num_splits);
  if (w.total == 0) return use;
  use.counters_begin = w.counters;
  use.counters_end =
      w.counters + size_t(p.num_seqs) * p.num_kv_heads * kCountersPerPair * sizeof(int);
  use.partials_begin = w.o;
  use.partials_end = w.total;
  return use;
}

void decode_attention(const DecodeAttentionParams& p, const DecodeAttentionPlan& plan,
                      void* workspace, cudaStream_t stream) {
  check_shape(p);
  const TileInfo tile = tile_info(p.head_dim, p.num_q_heads / p.num_kv_heads);
  if (plan.prologue_tiles < 0 || plan.prologue_tiles > tile.max_prologue_tiles) {
    fail("plan.prologue_tiles " + std::to_string(plan.prologue_tiles) + " is outside [0, " +
         std::to_string(tile.max_prologue_tiles) + "] (plan made for other params?)");
  }
  if (plan.ring_stages != 0 && plan.ring_stages != 2 && plan.ring_stages != 3) {
    fail("plan.ring_stages " + std::to_string(plan.ring_stages) + " is not 0, 2 or 3");
  }
  if (plan.ring_stages > 0 && (plan.prologue_tiles > 0 || !tensor_core_shape(p))) {
    fail(
        "plan.ring_stages needs no prologue, head_dim 128, GQA 4 or 8, block_size >= 16 and the "
        "tensor-core steps (ARBOR_DECODE_MMA not 0)");
  }
  if (plan.ring_ldmatrix && plan.ring_stages == 0) {
    fail("plan.ring_ldmatrix needs plan.ring_stages (ldmatrix reads the ring's stages)");
  }
  if (plan.staged_merge && plan.ring_stages == 0) {
    fail("plan.staged_merge needs plan.ring_stages (it merges through the ring's shared memory)");
  }
  if (plan.cluster_merge && !cluster_merge_supported(p, plan)) {
    fail("plan.cluster_merge needs plan.ring_stages, 2 to " + std::to_string(kClusterMaxSplits) +
         " splits, no staged merge, the split-major grid (kv_heads_adjacent off), head_dim 128 "
         "and GQA 4");
  }
  if (plan.num_splits < 1 || plan.num_splits > kMaxSplits) {
    fail("plan.num_splits " + std::to_string(plan.num_splits) + " is outside [1, " +
         std::to_string(kMaxSplits) + "]");
  }
  if (p.num_seqs == 0) return;
  if (!p.q || !p.k_cache || !p.v_cache || !p.block_tables || !p.context_lens || !p.out) {
    fail("null pointer among q, k_cache, v_cache, block_tables, context_lens, out");
  }
  if (!aligned(p.q, 16) || !aligned(p.k_cache, 16) || !aligned(p.v_cache, 16) ||
      !aligned(p.out, 8) || (p.out_f32 && !aligned(p.out_f32, 16)) || !aligned(p.block_tables, 4) ||
      !aligned(p.context_lens, 4) || (p.lse && !aligned(p.lse, 4))) {
    fail("misaligned pointer (q, k_cache, v_cache and out_f32 need 16 bytes, out 8)");
  }
  const WorkspaceLayout ws = workspace_layout(p, plan.num_splits);
  if (plan.workspace_bytes < ws.total) {
    fail("plan.workspace_bytes " + std::to_string(plan.workspace_bytes) + " < " +
         std::to_string(ws.total) + " needed for " + std::to_string(p.num_seqs) +
         " sequences and " + std::to_string(plan.num_splits) +
         " splits (plan made for other params?)");
  }
  if (ws.total > 0 && !workspace) fail("workspace is null but the plan uses several splits");
  if (ws.total > 0 && !aligned(workspace, 16)) fail("workspace is not 16-byte aligned");

  KernelArgs a{};
  a.q = p.q;
  a.k_cache = p.k_cache;
  a.v_cache = p.v_cache;
  a.block_tables = p.block_tables;
  a.context_lens = p.context_lens;
  a.out = p.out;
  a.out_f32 = p.out_f32;
  a.lse = p.lse;
  char* base = static_cast<char*>(workspace);
  if (ws.total > 0) {
    a.ws_o = reinterpret_cast<float*>(base + ws.o);
    a.ws_m = reinterpret_cast<float*>(base + ws.m);
    a.ws_l = reinterpret_cast<float*>(base + ws.l);
    a.counters = reinterpret_cast<int*>(base + ws.counters);
    a.parts_per_pair = parts_per_pair(plan.num_splits);
  }
  a.num_kv_heads = p.num_kv_heads;
  a.max_blocks_per_seq = p.max_blocks_per_seq;
  a.block_shift = __builtin_ctz(unsigned(p.block_size));
  a.num_splits = plan.num_splits;
  a.prologue_tiles = plan.prologue_tiles;
  a.cp_size = p.cp_size;
  a.cp_rank = p.cp_rank;
  a.scale_log2 = p.scale * kLog2e;
  a.overlap_previous_kernel = p.overlap_previous_kernel;
  a.kv_heads_adjacent = plan.kv_heads_adjacent;
#if ARBOR_DECODE_TRACE
  a.trace = p.trace;
#endif

  const dim3 grid =
      plan.kv_heads_adjacent
          ? dim3(unsigned(p.num_kv_heads), unsigned(plan.num_splits), unsigned(p.num_seqs))
          : dim3(unsigned(plan.num_splits), unsigned(p.num_kv_heads), unsigned(p.num_seqs));
  const int group = p.num_q_heads / p.num_kv_heads;
  // The one dispatch switch: runtime head dim and GQA ratio to template constants.
  switch (p.head_dim * 16 + group) {
    case 64 * 16 + 1:
      return launch<64, 1>(a, plan, grid, stream);
    case 64 * 16 + 2:
      return launch<64, 2>(a, plan, grid, stream);
    case 64 * 16 + 4:
      return launch<64, 4>(a, plan, grid, stream);
    case 64 * 16 + 8:
      return launch<64, 8>(a, plan, grid, stream);
    case 128 * 16 + 1:
      return launch<128, 1>(a, plan, grid, stream);
    case 128 * 16 + 2:
      return launch<128, 2>(a, plan, grid, stream);
    case 128 * 16 + 4:
      return launch<128, 4>(a, plan, grid, stream);
    case 128 * 16 + 8:
      return launch<128, 8>(a, plan, grid, stream);
    default:
      fail("unsupported head_dim / GQA ratio");  // check_shape rejected these already
  }
}

}  // namespace arbor::cuda
