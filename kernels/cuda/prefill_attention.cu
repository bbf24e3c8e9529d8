// Prefill attention on tensor cores (see prefill_attention.h for the contract), two kernels:
// on Hopper (sm_90a) the wgmma kernel further below; elsewhere, and for comparisons, this
// one, FlashAttention-2 style on mma.sync.
//
// One thread block computes one tile of kBlockM = 16·kWarps query rows of one sequence for
// one query head; each warp owns 16 consecutive rows. The block walks the sequence's keys
// in tiles of kBlockN = 64 rows, gathered from the paged cache through the block table
// (a tile may span several cache blocks, or be part of one), double-buffered in shared
// memory with cp.async. Per key tile each warp computes S = Q·Kᵀ (16 × 64, fp32) with
// mma.sync m16n8k16 bf16, applies the causal mask, updates the online softmax in fp32
// (base 2, scale folded into one FFMA before ex2), and accumulates O += P·V with P rounded to
// bf16. Key tiles entirely past the tile's last query position are never visited, so the
// new-tokens square costs about half of a full one.
//
// Grid: x = query head (heads sharing a KV head are neighbours, so they share K/V in L2),
// y = sequence, z = query tile of the sequence, heaviest (last) tiles first. Tiles past a
// sequence's query length exit at once.
//
// Shared memory rows are head_dim bf16 (128 or 256 bytes) split into 16-byte chunks; chunk c
// of row r is stored at chunk c ^ (r & 7), so the 8 row addresses of every ldmatrix 8×8
// matrix (8 consecutive rows, one logical chunk) hit 8 different bank groups.
#include "kernels/cuda/prefill_attention.h"

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include "kernels/cuda/bulk_copy.cuh"
#include "kernels/cuda/check.h"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/exp2.cuh"
#include "kernels/cuda/mma_sync.cuh"
#include "kernels/cuda/wgmma.cuh"
#include "kernels/paged_kv.h"

namespace arbor::cuda {

namespace {

constexpr int kBlockN = 64;  // keys per K/V tile

// ---------------------------------------------------------------------------------------------
// The kernel.

template <int kHeadDim, int kWarps>
struct Tile {
  static constexpr int kThreads = 32 * kWarps;
  static constexpr int kBlockM = 16 * kWarps;
  static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  static constexpr int kQElems = kBlockM * kHeadDim;
  static constexpr int kKvElems = kBlockN * kHeadDim;
  // Q, then two stages of (K, V).
  static constexpr size_t kSmemBytes = sizeof(bf16) * (size_t(kQElems) + 4 * size_t(kKvElems));
};

// Element offset of (row, chunk) in a swizzled tile.
template <int kHeadDim>
__device__ __forceinline__ int swizzled(int row, int chunk) {
  return row * kHeadDim + ((chunk ^ (row & 7)) << 3);
}

struct KernelArgs {
  const bf16* q;
  const bf16* k_cache;
  const bf16* v_cache;
  const int32_t* block_tables;
  const int32_t* context_lens;
  const int32_t* query_start;
  int num_q_heads;
  int num_kv_heads;
  int group;  // num_q_heads / num_kv_heads
  int block_size;
  int block_shift;  // log2(block_size) when it is a power of two (the usual case), else -1
  int max_blocks_per_seq;
  float scale;
  int cp_size;  // context parallelism (kernels/paged_kv.h)
  int cp_rank;
  bf16* out;
  float* lse;
  float* out_f32;
};

// ---------------------------------------------------------------------------------------------
// Shared by both kernels.

// Query row i of a sequence sits at position ctx - n_query + i and sees positions [0, pos],
// which are local keys [0, visible_keys(pos)) of this rank (all of them, pos + 1, without
// context parallelism).
__device__ __forceinline__ int visible_keys(const KernelArgs& a, int pos) {
  return local_kv_len(max(0, pos + 1), a.cp_size, a.cp_rank, a.block_size);
}

// One block's query tile: rows [m_start, m_start + rows) of a sequence's new tokens and the
// keys they need, in tiles of block_n.
struct QueryTile {
  int q_begin;       // the sequence's first query token in the batch
  int m_start;       // the tile's first row among the sequence's queries
  int rows;          // real rows (a sequence's last tile may be partial)
  int pos_first;     // position of the tile's first row
  int kv_len;        // local keys the tile needs
  int n_kv_tiles;    // key tiles covering them
  int first_masked;  // key tiles [0, first_masked) are visible to every row: no mask needed
};

// False when the tile lies past the sequence's queries (the grid is sized for the longest).
__device__ __forceinline__ bool query_tile(const KernelArgs& a, int seq, int m_tile, int block_m,
                                           int block_n, QueryTile& t) {
  t.q_begin = a.query_start[seq];
  const int n_query = a.query_start[seq + 1] - t.q_begin;
  t.m_start = m_tile * block_m;
  if (t.m_start >= n_query) return false;
  t.pos_first = a.context_lens[seq] - n_query + t.m_start;
  t.rows = min(block_m, n_query - t.m_start);
  t.kv_len = visible_keys(a, t.pos_first + t.rows - 1);
  t.n_kv_tiles = (t.kv_len + block_n - 1) / block_n;
  t.first_masked = visible_keys(a, t.pos_first) / block_n;
  return true;
}

// Copies a tile's kRows query rows of `head` (16-byte chunks, thread `thread` of kThreadCount)
// to shared-memory byte addresses dst(row, chunk); rows past the query are zero-filled.
// Completes with the calling thread's next cp.async commit or mbarrier arrival.
template <int kHeadDim, int kRows, int kThreadCount, typename Dst>
__device__ __forceinline__ void copy_q_tile(const KernelArgs& a, const QueryTile& t, int head,
                                            int thread, Dst dst) {
  constexpr int kChunks = kHeadDim / 8;
  const size_t q_row_stride = size_t(a.num_q_heads) * kHeadDim;
  const bf16* q_base = a.q + size_t(t.q_begin + t.m_start) * q_row_stride + size_t(head) * kHeadDim;
#pragma unroll
  for (int i = 0; i < kRows * kChunks / kThreadCount; ++i) {
    const int c = thread + i * kThreadCount;
    const int r = c / kChunks, ch = c % kChunks;
    const bool valid = r < t.rows;
    cp_async_16(dst(r, ch), valid ? q_base + size_t(r) * q_row_stride + ch * 8 : a.q, valid);
  }
}

// Epilogue of one query row held by a quad of lanes (lane t4 of 4 holds dims 8d + 2·t4 and
// 8d + 2·t4 + 1 of each 8-dim group d, given by o(d) as a float2, and a partial sum of the
// row's exps): finish the sum across the quad, normalize, store bf16 (and fp32) pairs and
// the LSE. Every lane calls it (the shuffles); only lanes with `write` store.
template <int kHeadDim, typename Values>
__device__ __forceinline__ void store_row(const KernelArgs& a, bool write, size_t token, int head,
                                          int t4, float row_max, float partial_sum, Values o) {
  float sum = partial_sum;
  sum += __shfl_xor_sync(0xffffffffu, sum, 1);
  sum += __shfl_xor_sync(0xffffffffu, sum, 2);
  if (!write) return;
  const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
  const size_t out_row_stride = size_t(a.num_q_heads) * kHeadDim;
  const size_t first = token * out_row_stride + size_t(head) * kHeadDim + 2 * t4;
#pragma unroll
  for (int d = 0; d < kHeadDim / 8; ++d) {
    const float2 v = o(d);
    *reinterpret_cast<__nv_bfloat162*>(a.out + first + d * 8) =
        __floats2bfloat162_rn(v.x * inv, v.y * inv);
  }
  if (a.out_f32) {
#pragma unroll
    for (int d = 0; d < kHeadDim / 8; ++d) {
      const float2 v = o(d);
      *reinterpret_cast<float2*>(a.out_f32 + first + d * 8) = make_float2(v.x * inv, v.y * inv);
    }
  }
  if (a.lse && t4 == 0) {
    // Natural-log LSE of the scaled scores: max·scale + ln(sum of exp(scaled - max·scale)).
    a.lse[token * a.num_q_heads + head] = sum > 0.0f ? row_max * a.scale + logf(sum) : -INFINITY;
  }
}

template <int kHeadDim, int kWarps>
__global__ void __launch_bounds__(Tile<kHeadDim, kWarps>::kThreads, kWarps >= 8 ? 1 : 2)
    prefill_attention_kernel(const KernelArgs a) {
  using T = Tile<kHeadDim, kWarps>;
  constexpr int kBlockM = T::kBlockM;
  constexpr int kKSteps = kHeadDim / 16;  // k16 steps of Q·Kᵀ
  constexpr int kNTiles = kBlockN / 8;    // n8 tiles of S
  constexpr int kDTiles = kHeadDim / 8;   // n8 tiles of O
  constexpr int kChunks = T::kChunks;

  const int head = blockIdx.x;
  const int seq = blockIdx.y;
  const int m_tile = gridDim.z - 1 - blockIdx.z;  // heaviest tiles launch first
  QueryTile t;
  if (!query_tile(a, seq, m_tile, kBlockM, kBlockN, t)) return;
  const int n_kv_tiles = t.n_kv_tiles;

  const int kv_head = head / a.group;
  const int32_t* table = a.block_tables + size_t(seq) * a.max_blocks_per_seq;

  extern __shared__ __align__(128) unsigned char smem_raw[];
  bf16* const sq = reinterpret_cast<bf16*>(smem_raw);
  bf16* const skv = sq + T::kQElems;  // stage s: K at skv + 2s·kKvElems, V right after
  const uint32_t sq_addr = shared_address(sq);
  const uint32_t skv_addr = shared_address(skv);

  const int tid = threadIdx.x;
  const int warp = tid / 32;
  const int lane = tid % 32;

  // ---- Q tile → shared (rows past the query are zero-filled).
  copy_q_tile<kHeadDim, kBlockM, T::kThreads>(
      a, t, head, tid, [&](int r, int ch) { return sq_addr + 2 * swizzled<kHeadDim>(r, ch); });
  cp_async_commit();

  // ---- K/V tile j → stage `stage`, gathered row by row through the block table. Rows past
  // kv_len are zero-filled (never read: the cache there may hold anything, even NaN, and a
  // NaN V row would poison P·V even with P = 0).
  const int kv_len = t.kv_len;
  const size_t head_offset = size_t(kv_head) * a.block_size * kHeadDim;
  const size_t block_stride = size_t(a.num_kv_heads) * a.block_size * kHeadDim;
  auto load_kv = [&](int j, int stage) {
    const uint32_t k_dst = skv_addr + 2 * (2 * stage) * T::kKvElems;
    const uint32_t v_dst = k_dst + 2 * T::kKvElems;
#pragma unroll
    for (int i = 0; i < kBlockN * kChunks / T::kThreads; ++i) {
      const int c = tid + i * T::kThreads;
      const int r = c / kChunks, ch = c % kChunks;
      const int key = j * kBlockN + r;
      const int blk = a.block_shift >= 0 ? key >> a.block_shift : key / a.block_size;
      const bool valid = key < kv_len && blk < a.max_blocks_per_seq;
      size_t off = 0;
      if (valid) {
        off = size_t(table[blk]) * block_stride + head_offset +
              size_t(key - blk * a.block_size) * kHeadDim + ch * 8;
      }
      const uint32_t o = 2 * swizzled<kHeadDim>(r, ch);
      cp_async_16(k_dst + o, a.k_cache + off, valid);
      cp_async_16(v_dst + o, a.v_cache + off, valid);
    }
    cp_async_commit();
  };

  if (n_kv_tiles > 0) load_kv(0, 0);

  // ---- Q fragments → registers (A operand of S = Q·Kᵀ), kept for the whole key loop.
  // ldmatrix.x4 for k-step kk: matrices (rows 0-7, chunk 2kk), (rows 8-15, chunk 2kk),
  // (rows 0-7, chunk 2kk+1), (rows 8-15, chunk 2kk+1) = a[0..3] of the mma A layout.
  // Lane l addresses row warp·16 + (l & 15), chunk 2kk + (l >> 4).
  if (n_kv_tiles > 0) {
    cp_async_wait<1>();  // the Q group (the K/V group may still be in flight)
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
  uint32_t qf[kKSteps][4];
  {
    const int r = warp * 16 + (lane & 15);
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
      ldmatrix_x4(qf[kk], sq_addr + 2 * swizzled<kHeadDim>(r, 2 * kk + (lane >> 4)));
    }
  }

  // Each lane holds rows g = lane/4 and g+8 of its warp's 16, columns 2t, 2t+1 (t = lane%4)
  // of every n8 tile: o[d][0..1] row g, o[d][2..3] row g+8.
  const int g = lane >> 2, t4 = lane & 3;
  const int pos_row0 = t.pos_first + warp * 16 + g;  // position of row g (row g+8: +8)
  const int visible_row[2] = {visible_keys(a, pos_row0),
                              visible_keys(a, pos_row0 + 8)};  // keys each row sees
  float o[kDTiles][4];
#pragma unroll
  for (int d = 0; d < kDTiles; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};  // raw (unscaled) running max of q·k
  float row_sum[2] = {0.0f, 0.0f};            // this lane's partial sum of exp, see the end
  const float scale_log2 = a.scale * 1.4426950408889634f;

  for (int j = 0; j < n_kv_tiles; ++j) {
    const int stage = j & 1;
    if (j + 1 < n_kv_tiles) {
      load_kv(j + 1, stage ^ 1);  // that stage was released by the barrier ending j - 1
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint32_t k_tile = skv_addr + 2 * (2 * stage) * T::kKvElems;
    const uint32_t v_tile = k_tile + 2 * T::kKvElems;

    // ---- S = Q·Kᵀ. B[k][n] = K[n][k]: b0 for key n = g is K[n][2t..2t+1], which is what a
    // plain ldmatrix of the 8×8 block K[n0..n0+7][k0..k0+7] gives. One ldmatrix.x4 covers two
    // n8 tiles (keys nb..nb+15) for one k-step: matrices (keys nb+0-7, chunk 2kk),
    // (nb+0-7, 2kk+1), (nb+8-15, 2kk), (nb+8-15, 2kk+1) → b0,b1 of tile nb/8, b0,b1 of the next.
    // Lane l addresses key nb + (l & 7) + ((l >> 4) << 3), chunk 2kk + ((l >> 3) & 1).
    float s[kNTiles][4];
#pragma unroll
    for (int n = 0; n < kNTiles; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
#pragma unroll
    for (int kk = 0; kk < kKSteps; ++kk) {
#pragma unroll
      for (int np = 0; np < kNTiles / 2; ++np) {
        uint32_t b[4];
        const int r = np * 16 + (lane & 7) + ((lane >> 4) << 3);
        ldmatrix_x4(b, k_tile + 2 * swizzled<kHeadDim>(r, 2 * kk + ((lane >> 3) & 1)));
        mma_bf16_16816(s[2 * np], qf[kk], b[0], b[1]);
        mma_bf16_16816(s[2 * np + 1], qf[kk], b[2], b[3]);
      }
    }

    // ---- Causal mask: keys the row does not see → -inf. s[n][e] is key
    // j·64 + 8n + 2t + (e & 1) for row g (e < 2) or g+8 (e ≥ 2).
    if (j >= t.first_masked) {
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = j * kBlockN + n * 8 + 2 * t4 + (e & 1);
          if (key >= visible_row[e >> 1]) s[n][e] = -INFINITY;
        }
      }
    }

    // ---- Online softmax. A row is spread over the 4 lanes of a quad (same g): reduce the
    // max with xor-shuffles 1 and 2. The running sum stays per lane until the end.
    float scaled_max[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = row_max[h];
#pragma unroll
      for (int n = 0; n < kNTiles; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      // A row that has seen only masked keys keeps max -inf; use 0 so that exp2(-inf - 0) = 0
      // instead of exp2(-inf + inf) = NaN.
      scaled_max[h] = mx == -INFINITY ? 0.0f : mx * scale_log2;
      const float alpha = fast_exp2(row_max[h] * scale_log2 - scaled_max[h]);  // 0 at first
      row_max[h] = mx;
      row_sum[h] *= alpha;
#pragma unroll
      for (int d = 0; d < kDTiles; ++d) {
        o[d][2 * h] *= alpha;
        o[d][2 * h + 1] *= alpha;
      }
    }
#pragma unroll
    for (int n = 0; n < kNTiles; ++n) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const float p = fast_exp2(fmaf(s[n][e], scale_log2, -scaled_max[e >> 1]));
        s[n][e] = p;
        row_sum[e >> 1] += p;
      }
    }

    // ---- O += P·V. The S accumulators of n8 tiles 2kk, 2kk+1 are exactly the A fragment of
    // k-step kk (keys 16kk..16kk+15): a[0] = S[g][2t..], a[1] = S[g+8][2t..] from tile 2kk,
    // a[2], a[3] the same from tile 2kk+1. B[k][n] = V[key k][dim n]: b0 = V[2t..2t+1][g] is
    // a transposed ldmatrix of V[k0..k0+7][d0..d0+7]. One ldmatrix.x4.trans covers two d8 tiles
    // for one k-step: matrices (keys 0-7, chunk 2dp), (keys 8-15, chunk 2dp), (keys 0-7,
    // chunk 2dp+1), (keys 8-15, chunk 2dp+1) → b0,b1 of d-tile 2dp, then of 2dp+1.
    // Lane l addresses key 16kk + (l & 15), chunk 2dp + (l >> 4).
#pragma unroll
    for (int kk = 0; kk < kBlockN / 16; ++kk) {
      const uint32_t pa[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]),
                              pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                              pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                              pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
      const int r = kk * 16 + (lane & 15);
#pragma unroll
      for (int dp = 0; dp < kDTiles / 2; ++dp) {
        uint32_t b[4];
        ldmatrix_x4_trans(b, v_tile + 2 * swizzled<kHeadDim>(r, 2 * dp + (lane >> 4)));
        mma_bf16_16816(o[2 * dp], pa, b[0], b[1]);
        mma_bf16_16816(o[2 * dp + 1], pa, b[2], b[3]);
      }
    }
    __syncthreads();  // everyone is done with this stage before it is refilled
  }

  // ---- Epilogue.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = warp * 16 + g + 8 * h;  // row within the tile
    store_row<kHeadDim>(a, r < t.rows, size_t(t.q_begin + t.m_start + r), head, t4, row_max[h],
                        row_sum[h],
                        [&](int d) { return make_float2(o[d][2 * h], o[d][2 * h + 1]); });
  }
}

// ---------------------------------------------------------------------------------------------
// The wgmma kernel (Hopper, sm_90a): the same algorithm on warpgroup MMAs.
//
// One block = 128 query rows of one head: two consumer warpgroups of 64 rows each, and a
// producer warpgroup that gathers the keys, in tiles of 128, through the block table with
// cp.async into three stages of 128B-swizzled shared memory (kernels/cuda/wgmma.cuh), each
// tile as soon as its stage is free; per-stage mbarriers say when a tile has landed and
// when both consumers have left a stage (no block-wide barrier per tile). Per key tile each
// warpgroup issues S = Q·Kᵀ as head_dim / 16 wgmma m64n128k16 with both operands in shared memory,
// applies the mask and the online softmax to S in registers (each thread holds 2 rows × 32 keys,
// the same fragment as mma.sync: rows g and g + 8 of its warp's 16), packs P to bf16 as the A
// operand of O += P·V (8 wgmma m64n{head_dim}k16 with V as the MN-major B, read from shared memory
// as the cache stores it). The two warpgroups take strict turns on the tensor cores (named
// barriers), so one's softmax runs while the other's products do. H200, 8k-token prompt, 32/8 heads
// (bench/RESULTS.md): mma.sync 281-285 TFLOP/s, this kernel 516-525.
//
// Each warpgroup's S of tile j is issued with its P·V of tile j-1, and the softmax of tile j
// runs under that P·V. (Tried first with a block barrier per tile and no ping-pong, that
// lost: 354 against 363 TFLOP/s at 8k; with the mbarriers and strict turns it gains 8.5%.)
// Tried and dropped (in-run A/B at 8k, TFLOP/s): 64-row blocks of one warpgroup, two per
// SM, 299 against 364; skipping the O rescale when no maximum of a warp moved, 372 against
// 376 without.

template <int kHeadDim>
struct WgTile {
  static constexpr int kConsumerGroups = 2;  // warpgroups 0 and 1: the MMAs and the softmax
  static constexpr int kConsumerThreads = 128 * kConsumerGroups;
  static constexpr int kProducerThreads = 128;  // warpgroup 2: the gathers
  static constexpr int kThreads = kConsumerThreads + kProducerThreads;
  // Registers per thread once the producer has handed its spare ones to the consumers
  // (setmaxnreg): the block holds 168 per thread from launch (384 threads in 64 Ki). The
  // producer needs more than a copy loop seems to: with 40 (consumers 232) the kernel ran at
  // 492 against 522 TFLOP/s at 8k, and with 24 slower still; the consumers use about 200.
  static constexpr int kProducerRegisters = 72;
  static constexpr int kConsumerRegisters = 216;
  static_assert(kProducerThreads * kProducerRegisters + kConsumerThreads * kConsumerRegisters <=
                kThreads * 168);
  static constexpr int kBlockM = 64 * kConsumerGroups;  // query rows per block
  static constexpr int kBlockN = 128;                   // keys per tile
  static constexpr int kChunks = kHeadDim / 8;          // 16-byte chunks per row
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kKvBytes = kBlockN * kHeadDim * 2;  // K or V of one tile
  static constexpr int kStages = 3;
  // Q, the stages of (K, V), their full and empty mbarriers, and 1 KiB to align the tiles to
  // the swizzle's 1024 bytes.
  static constexpr size_t kBarrierBytes = 2 * kStages * sizeof(uint64_t);
  static constexpr size_t kSmemBytes =
      1024 + size_t(kQBytes) + 2 * size_t(kStages) * size_t(kKvBytes) + kBarrierBytes;
};

// Warpgroup register reallocation (sm_90a): every thread of the warpgroup executes it.
template <uint32_t kRegisters>
__device__ __forceinline__ void setmaxnreg_dec() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}
template <uint32_t kRegisters>
__device__ __forceinline__ void setmaxnreg_inc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegisters));
}

// Named barriers (0 is __syncthreads) for the warpgroups' ping-pong.
__device__ __forceinline__ void named_barrier_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_barrier_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

template <int kHeadDim>
__global__ void __launch_bounds__(WgTile<kHeadDim>::kThreads, 1)
    prefill_attention_wgmma_kernel(const KernelArgs a) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using T = WgTile<kHeadDim>;
  constexpr int kStages = T::kStages;
  constexpr int kBlockM = T::kBlockM;
  constexpr int kBlockNw = T::kBlockN;
  constexpr int kSGroups = kBlockNw / 8;  // 8-key column groups of S per thread
  constexpr int kOGroups = kHeadDim / 8;  // 8-dim column groups of O per thread
  constexpr int kChunks = T::kChunks;

  const int head = blockIdx.x;
  const int seq = blockIdx.y;
  const int m_tile = gridDim.z - 1 - blockIdx.z;  // heaviest tiles launch first
  QueryTile t;
  if (!query_tile(a, seq, m_tile, kBlockM, kBlockNw, t)) return;
  const int n_kv_tiles = t.n_kv_tiles;

  const int kv_head = head / a.group;
  const int32_t* table = a.block_tables + size_t(seq) * a.max_blocks_per_seq;

  extern __shared__ unsigned char smem_raw[];
  const uint32_t sq = (shared_address(smem_raw) + 1023u) & ~1023u;
  const uint32_t skv = sq + T::kQBytes;  // stage s: K at skv + 2s·kKvBytes, V right after

  const int tid = threadIdx.x;
  const int warp = tid / 32, lane = tid % 32;
  const int wg = warp / 4;  // 0, 1: query rows [64 wg, 64 wg + 64) of the tile; 2: producer

  // Stage s holds tiles s, s + kStages, ...: full[s] completes when every producer thread's
  // copies of its tile have landed (each arrives through cp.async, without waiting), empty[s]
  // when every consumer thread is done reading it. No block-wide barrier per tile: a consumer
  // warpgroup waits only for the data it reads, and the producer, before refilling a stage,
  // for both consumer warpgroups to have left it.
  uint64_t* full = reinterpret_cast<uint64_t*>(smem_raw + (sq - shared_address(smem_raw)) +
                                               T::kQBytes + 2 * kStages * T::kKvBytes);
  uint64_t* empty = full + kStages;
  if (tid == 0) {
    for (int st = 0; st < kStages; ++st) {
      mbar_init(&full[st], T::kProducerThreads);
      mbar_init(&empty[st], T::kConsumerThreads);
    }
    fence_mbar_init();
  }
  __syncthreads();

  // ---- The producer warpgroup: Q, then every key tile as soon as its stage is free (up to
  // kStages tiles ahead of the consumers). Its registers go to the consumers.
  if (wg == T::kConsumerGroups) {
    setmaxnreg_dec<T::kProducerRegisters>();
    const int ptid = tid - T::kConsumerThreads;
    // (Q lands with the first key tile: that tile's arrival counts every earlier copy.)
    copy_q_tile<kHeadDim, kBlockM, T::kProducerThreads>(a, t, head, ptid, [&](int r, int ch) {
      return sq + wgmma::swizzled_offset(kBlockM, r, ch);
    });

    // Rows past kv_len are zero-filled, never read from the cache (see the mma.sync kernel).
    // (Both kernels' loads as one shared helper measured 4% slower, in-run, on both.)
    // Producer thread ptid copies chunk kv_chunk of rows kv_row0 + kRowStep·i of each tile, so
    // its shared-memory offsets are one swizzled offset plus a multiple of the row step (the
    // swizzle depends on row % 8, and kRowStep is a multiple of 8), and only the block-table
    // entry and the row within the block change per row. Tiles wholly inside the sequence
    // skip the per-row bounds checks.
    const int kv_len = t.kv_len;
    constexpr int kRowStep = T::kProducerThreads / kChunks;
    constexpr int kRowsPerThread = kBlockNw / kRowStep;
    static_assert(kRowStep % 8 == 0 && kBlockNw % kRowStep == 0);
    const int kv_row0 = ptid / kChunks, kv_chunk = ptid % kChunks;
    const uint32_t kv_smem0 = wgmma::swizzled_offset(kBlockNw, kv_row0, kv_chunk);
    const size_t chunk_offset = size_t(kv_head) * a.block_size * kHeadDim + kv_chunk * 8;
    const bf16* k_src0 = a.k_cache + chunk_offset;
    const bf16* v_src0 = a.v_cache + chunk_offset;
    const size_t block_stride = size_t(a.num_kv_heads) * a.block_size * kHeadDim;
    // Keys below this have a cache row: within the sequence and the block table.
    const int gather_keys = min(kv_len, a.max_blocks_per_seq * a.block_size);
    // Tile j into stage j % kStages, once every consumer has left that stage's previous tile;
    // row_offset(key, valid) gives `key`'s row offset in the cache (any value when !valid).
    auto load_kv = [&](int j, auto row_offset) {
      const int stage = j % kStages;
      if (j >= kStages) mbar_wait(&empty[stage], uint32_t(j / kStages - 1) & 1u);
      const uint32_t k_dst = skv + uint32_t(2 * stage * T::kKvBytes) + kv_smem0;
      const uint32_t v_dst = k_dst + T::kKvBytes;
      const int key0 = j * kBlockNw + kv_row0;
      const bool whole = (j + 1) * kBlockNw <= gather_keys;
#pragma unroll
      for (int i = 0; i < kRowsPerThread; ++i) {
        const int key = key0 + i * kRowStep;
        const bool valid = whole || key < gather_keys;
        const size_t off = row_offset(key, valid);
        const uint32_t o = uint32_t(i * kRowStep * 128);
        cp_async_16(k_dst + o, valid ? k_src0 + off : a.k_cache, valid);
        cp_async_16(v_dst + o, valid ? v_src0 + off : a.v_cache, valid);
      }
      cp_async_mbar_arrive_noinc(&full[stage]);
    };
    if (a.block_shift >= 3) {
      // Cache blocks of 8 or more tokens (a power of two): a tile spans at most 16 of them,
      // and lane l of each producer warp reads the tile's l-th block-table entry once, the
      // next tile's before waiting for a free stage, so the table's latency is off the path;
      // each row's entry comes by shuffle. (Read per row, 16 loads per thread per tile, the
      // producer fell behind: 396-401 TFLOP/s at 8k against 420 for the kernel before it, in
      // which the consumers gathered; by shuffle 487-492, with 40 producer registers.)
      const int shift = a.block_shift;
      const int table_len = min(a.max_blocks_per_seq, (gather_keys + a.block_size - 1) >> shift);
      auto tile_entry = [&](int j) {
        const int blk = ((j * kBlockNw) >> shift) + lane;
        return lane < 16 && blk < table_len ? table[blk] : 0;
      };
      int32_t entry = n_kv_tiles > 0 ? tile_entry(0) : 0;
      for (int j = 0; j < n_kv_tiles; ++j) {
        const int32_t next = j + 1 < n_kv_tiles ? tile_entry(j + 1) : 0;
        const int blk0 = (j * kBlockNw) >> shift;
        load_kv(j, [&](int key, bool) {
          const int32_t e = __shfl_sync(0xffffffffu, entry, (key >> shift) - blk0);
          return size_t(e) * block_stride + size_t(key & (a.block_size - 1)) * kHeadDim;
        });
        entry = next;
      }
    } else {
      for (int j = 0; j < n_kv_tiles; ++j) {
        load_kv(j, [&](int key, bool valid) {
          if (!valid) return size_t(0);
          const int blk = a.block_shift >= 0 ? key >> a.block_shift : key / a.block_size;
          return size_t(table[blk]) * block_stride + size_t(key - blk * a.block_size) * kHeadDim;
        });
      }
    }
    cp_async_commit();  // no copy of this thread in flight when it exits
    cp_async_wait<0>();
    return;
  }
  setmaxnreg_inc<T::kConsumerRegisters>();

  const int g = lane >> 2, t4 = lane & 3;
  const int row0 = wg * 64 + (warp % 4) * 16 + g;  // this thread's rows: row0 and row0 + 8
  const int visible_row[2] = {visible_keys(a, t.pos_first + row0),
                              visible_keys(a, t.pos_first + row0 + 8)};
  float o[kOGroups * 4];
#pragma unroll
  for (int i = 0; i < kOGroups * 4; ++i) o[i] = 0.0f;
  float s[kSGroups * 4];
#pragma unroll
  for (int i = 0; i < kSGroups * 4; ++i) s[i] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY};
  float row_sum[2] = {0.0f, 0.0f};
  const float scale_log2 = a.scale * 1.4426950408889634f;
  // This warpgroup's 64 Q rows in each 64-dim slab.
  const uint32_t q_rows = sq + uint32_t(wg * 64 * 128);

  auto k_stage = [&](int stage) { return skv + uint32_t(2 * stage * T::kKvBytes); };
  // S = Q·Kᵀ for the tile in `stage`: 16 head dims per step; a slab holds 4 steps, 32 bytes
  // apart. Issued, not waited for.
  auto issue_s = [&](int stage) {
#pragma unroll
    for (int kk = 0; kk < kHeadDim / 16; ++kk) {
      const uint32_t step = uint32_t((kk % 4) * 32);
      const uint64_t dq =
          wgmma::descriptor(q_rows + uint32_t((kk / 4) * kBlockM * 128) + step, 16, 1024);
      const uint64_t dk =
          wgmma::descriptor(k_stage(stage) + uint32_t((kk / 4) * kBlockNw * 128) + step, 16, 1024);
      wgmma::m64n128k16_ss(s, dq, dk, kk > 0);
    }
    wgmma::commit();
  };
  // O += P·V for the tile in `stage`: 16 keys per step, 16 rows of 128 bytes apart.
  auto issue_pv = [&](const uint32_t(&pf)[kBlockNw / 16][4], int stage) {
    const uint32_t v_tile = k_stage(stage) + T::kKvBytes;
#pragma unroll
    for (int kk = 0; kk < kBlockNw / 16; ++kk) {
      const uint64_t dv = wgmma::descriptor(v_tile + uint32_t(kk * 16 * 128), kBlockNw * 128, 1024);
      if constexpr (kHeadDim == 128) {
        wgmma::m64n128k16_rs_mn(o, pf[kk], dv);
      } else {
        wgmma::m64n64k16_rs_mn(o, pf[kk], dv);
      }
    }
    wgmma::commit();
  };
  // Mask and online softmax of tile j's S (as in the mma.sync kernel: a row lives in the 4
  // lanes of a quad); leaves P = exp2(scaled S - max) in s, in fp32. Returns, per row, the
  // factor O must be scaled by before this tile's P·V is added.
  auto softmax = [&](int j, float(&alpha)[2]) {
    // s[4n + e] is key j·128 + 8n + 2t + (e & 1) of row row0 (e < 2) or row0 + 8 (e ≥ 2).
    if (j >= t.first_masked) {
#pragma unroll
      for (int n = 0; n < kSGroups; ++n) {
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int key = j * kBlockNw + n * 8 + 2 * t4 + (e & 1);
          if (key >= visible_row[e >> 1]) s[4 * n + e] = -INFINITY;
        }
      }
    }
    float scaled_max[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = row_max[h];
#pragma unroll
      for (int n = 0; n < kSGroups; ++n) {
        mx = fmaxf(mx, fmaxf(s[4 * n + 2 * h], s[4 * n + 2 * h + 1]));
      }
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      scaled_max[h] = mx == -INFINITY ? 0.0f : mx * scale_log2;
      alpha[h] = fast_exp2(row_max[h] * scale_log2 - scaled_max[h]);
      row_max[h] = mx;
      row_sum[h] *= alpha[h];
    }
#pragma unroll
    for (int i = 0; i < kSGroups * 4; ++i) {
      s[i] = fast_exp2(fmaf(s[i], scale_log2, -scaled_max[(i >> 1) & 1]));
      row_sum[(i >> 1) & 1] += s[i];
    }
  };
  // P (in s) packed to bf16: keys 16kk..16kk+15 are S groups 2kk and 2kk+1, i.e. the A
  // fragment of step kk (wgmma.cuh).
  auto pack_p = [&](uint32_t(&pf)[kBlockNw / 16][4]) {
#pragma unroll
    for (int kk = 0; kk < kBlockNw / 16; ++kk) {
#pragma unroll
      for (int i = 0; i < 4; ++i) pf[kk][i] = pack_bf16x2(s[8 * kk + 2 * i], s[8 * kk + 2 * i + 1]);
    }
  };
  auto rescale_o = [&](const float(&alpha)[2]) {
#pragma unroll
    for (int d = 0; d < kOGroups; ++d) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        o[4 * d + 2 * h] *= alpha[h];
        o[4 * d + 2 * h + 1] *= alpha[h];
      }
    }
  };

  uint32_t pf[kBlockNw / 16][4];
  float alpha[2];
  // S of tile j is issued together with P·V of tile j-1, and the softmax of tile j runs
  // while that P·V does (FA3's intra-warpgroup overlap), so a warpgroup's tile j-1 stays in
  // use until its softmax of tile j is done.
  // Turns: warpgroup w waits on named barrier 1 + w, which the other warpgroup arrives at
  // after each of its issues; warpgroup 0 has the first turn, warpgroup 1 the last. Each
  // warpgroup has n_kv_tiles + 1 turns: S of tile 0, then S(j) with P·V(j-1), then the last
  // P·V.
  const int my_barrier = 1 + wg, other_barrier = 2 - wg;
  auto take_turn = [&] { named_barrier_sync(my_barrier, T::kConsumerThreads); };
  auto pass_turn = [&] { named_barrier_arrive(other_barrier, T::kConsumerThreads); };
  // The tile was written by the producer's cp.async (the generic proxy); the wgmmas read it
  // through the async proxy.
  auto wait_tile = [&](int j) {
    mbar_wait(&full[j % kStages], uint32_t(j / kStages) & 1u);
    wgmma::fence_shared_for_async_proxy();
  };
  if (n_kv_tiles > 0) {
    if (wg == 1) pass_turn();
    wait_tile(0);
    take_turn();
    wgmma::fence_operands(s);
    wgmma::fence();
    issue_s(0);
    pass_turn();
    wgmma::wait<0>();
    wgmma::fence_operands(s);
    softmax(0, alpha);  // O is still zero: nothing to rescale
    pack_p(pf);
  }
  for (int j = 1; j < n_kv_tiles; ++j) {
    const int stage = j % kStages, prev = (j - 1) % kStages;
    wait_tile(j);
    take_turn();
    wgmma::fence_operands(s);
    wgmma::fence_operands(o);
    wgmma::fence();
    issue_s(stage);
    issue_pv(pf, prev);
    pass_turn();
    wgmma::wait<1>();  // S of tile j is done; P·V of tile j-1 may still run
    wgmma::fence_operands(s);
    softmax(j, alpha);
    wgmma::wait<0>();
    wgmma::fence_operands(o);
    wgmma::fence_operands(pf);  // read by that P·V until here
    mbar_arrive(&empty[prev]);
    rescale_o(alpha);
    pack_p(pf);  // only now: the P·V just waited for was reading the previous P
  }
  if (n_kv_tiles > 0) {
    const int last = (n_kv_tiles - 1) % kStages;
    take_turn();
    wgmma::fence_operands(o);
    wgmma::fence();
    issue_pv(pf, last);
    if (wg == 0) pass_turn();  // every arrival is waited for
    wgmma::wait<0>();
    wgmma::fence_operands(o);
    mbar_arrive(&empty[last]);
  }

  // ---- Epilogue.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = row0 + 8 * h;
    store_row<kHeadDim>(a, r < t.rows, size_t(t.q_begin + t.m_start + r), head, t4, row_max[h],
                        row_sum[h],
                        [&](int d) { return make_float2(o[4 * d + 2 * h], o[4 * d + 2 * h + 1]); });
  }
#endif  // __CUDA_ARCH_FEAT_SM90_ALL
}

// ---------------------------------------------------------------------------------------------
// Host side.

[[noreturn]] void fail(const std::string& what) {
  throw std::invalid_argument("prefill_attention: " + what);
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

void validate(const PrefillAttentionParams& p) {
  if (p.num_seqs < 0) fail("negative num_seqs");
  if (p.num_tokens < 0) fail("negative num_tokens");
  if (p.head_dim != 64 && p.head_dim != 128) {
    fail("head_dim " + std::to_string(p.head_dim) + " is not supported (64 or 128)");
  }
  if (p.num_q_heads <= 0 || p.num_kv_heads <= 0 || p.num_q_heads % p.num_kv_heads != 0) {
    fail("num_q_heads (" + std::to_string(p.num_q_heads) + ") is not a positive multiple of " +
         "num_kv_heads (" + std::to_string(p.num_kv_heads) + ")");
  }
  if (p.num_q_heads > 65535) fail("more than 65535 query heads");
  if (p.block_size <= 0) fail("block_size must be positive");
  if (!(p.scale > 0.0f) || !std::isfinite(p.scale)) fail("scale must be positive and finite");
  if (p.cp_size < 1 || p.cp_rank < 0 || p.cp_rank >= p.cp_size) {
    fail("context-parallel rank " + std::to_string(p.cp_rank) + " of " + std::to_string(p.cp_size) +
         " is invalid");
  }
  if (p.num_seqs == 0 || p.num_tokens == 0) return;
  if (p.num_seqs > 65535) fail("more than 65535 sequences in one launch");
  if (p.max_query_len <= 0) fail("max_query_len must be positive");
  if (p.max_blocks_per_seq <= 0) fail("max_blocks_per_seq must be positive");
  if (!p.q || !p.k_cache || !p.v_cache || !p.block_tables || !p.context_lens || !p.query_start ||
      !p.out) {
    fail("null pointer");
  }
  if (!aligned16(p.q) || !aligned16(p.k_cache) || !aligned16(p.v_cache) || !aligned16(p.out)) {
    fail("q, k_cache, v_cache and out must be 16-byte aligned");
  }
  if (p.out_f32 && (reinterpret_cast<uintptr_t>(p.out_f32) & 7u) != 0) {
    fail("out_f32 must be 8-byte aligned");
  }
}

// A yes/no fact about a device, worked out on first use and remembered (devices 0-63;
// others work it out every time). Racing first uses both work it out, with the same answer.
class PerDeviceFlag {
 public:
  template <typename Compute>
  bool get(int device, Compute compute) {
    if (device < 0 || device >= kDevices) return compute();
    int state = state_[device].load(std::memory_order_relaxed);  // 0 unknown, 1 no, 2 yes
    if (state == 0) {
      state = compute() ? 2 : 1;
      state_[device].store(state, std::memory_order_relaxed);
    }
    return state == 2;
  }

 private:
  static constexpr int kDevices = 64;
  std::array<std::atomic<int>, kDevices> state_{};
};

// Raises a kernel's dynamic shared-memory limit on `device` once (the attribute belongs to
// the function on the current device). One `configured` per kernel instantiation.
template <typename Kernel>
void allow_shared_memory(Kernel kernel, size_t bytes, int device, PerDeviceFlag& configured) {
  if (bytes <= 48 * 1024) return;
  configured.get(device, [&] {
    CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(bytes)));
    return true;
  });
}

KernelArgs kernel_args(const PrefillAttentionParams& p) {
  KernelArgs a;
  a.q = p.q;
  a.k_cache = p.k_cache;
  a.v_cache = p.v_cache;
  a.block_tables = p.block_tables;
  a.context_lens = p.context_lens;
  a.query_start = p.query_start;
  a.num_q_heads = p.num_q_heads;
  a.num_kv_heads = p.num_kv_heads;
  a.group = p.num_q_heads / p.num_kv_heads;
  a.block_size = p.block_size;
  a.block_shift = -1;
  if ((p.block_size & (p.block_size - 1)) == 0) {
    a.block_shift = 0;
    while ((1 << a.block_shift) < p.block_size) ++a.block_shift;
  }
  a.max_blocks_per_seq = p.max_blocks_per_seq;
  a.scale = p.scale;
  a.out = p.out;
  a.lse = p.lse;
  a.out_f32 = p.out_f32;
  a.cp_size = p.cp_size;
  a.cp_rank = p.cp_rank;
  return a;
}

// Grid: x = query head, y = sequence, z = query tile of block_m rows.
dim3 grid_for(const PrefillAttentionParams& p, int block_m) {
  const int m_tiles = (p.max_query_len + block_m - 1) / block_m;
  if (m_tiles > 65535) fail("max_query_len " + std::to_string(p.max_query_len) + " too large");
  return dim3(unsigned(p.num_q_heads), unsigned(p.num_seqs), unsigned(m_tiles));
}

template <int kHeadDim, int kWarps>
void launch_mma(const PrefillAttentionParams& p, int device, cudaStream_t stream) {
  using T = Tile<kHeadDim, kWarps>;
  auto kernel = prefill_attention_kernel<kHeadDim, kWarps>;
  static PerDeviceFlag configured;
  allow_shared_memory(kernel, T::kSmemBytes, device, configured);
  kernel<<<grid_for(p, T::kBlockM), T::kThreads, T::kSmemBytes, stream>>>(kernel_args(p));
  CUDA_CHECK_LAUNCH();
}

template <int kHeadDim>
void launch_wgmma(const PrefillAttentionParams& p, int device, cudaStream_t stream) {
  using T = WgTile<kHeadDim>;
  auto kernel = prefill_attention_wgmma_kernel<kHeadDim>;
  static PerDeviceFlag configured;
  allow_shared_memory(kernel, T::kSmemBytes, device, configured);
  kernel<<<grid_for(p, T::kBlockM), T::kThreads, T::kSmemBytes, stream>>>(kernel_args(p));
  CUDA_CHECK_LAUNCH();
}

// The wgmma kernel runs where its sm_90a code exists: a compute capability 9.0 device and a
// build that contains sm_90a machine code for it (binaryVersion 90; a build for other
// architectures compiles the kernel empty).
bool wgmma_runs_on(int device) {
  static PerDeviceFlag runs;
  return runs.get(device, [device] {
    int major = 0, minor = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    if (major != 9 || minor != 0) return false;
    cudaFuncAttributes attr{};
    const bool ok =
        cudaFuncGetAttributes(&attr, prefill_attention_wgmma_kernel<128>) == cudaSuccess &&
        attr.binaryVersion == 90;
    (void)cudaGetLastError();  // a kernel without code for this device is not an error here
    return ok;
  });
}

int current_device() {
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  return device;
}

}  // namespace

bool prefill_attention_wgmma_available() {
  return wgmma_runs_on(current_device());
}

void prefill_attention(const PrefillAttentionParams& p, cudaStream_t stream) {
  validate(p);
  if (p.num_seqs == 0 || p.num_tokens == 0) return;
  const int device = current_device();
  PrefillKernel kernel = p.kernel;
  if (kernel == PrefillKernel::kAuto) {
    // ARBOR_PREFILL_KERNEL=mma picks the mma.sync kernel for before/after measurements.
    static const bool mma_forced = [] {
      const char* v = std::getenv("ARBOR_PREFILL_KERNEL");
      return v && std::string(v) == "mma";
    }();
    kernel = !mma_forced && wgmma_runs_on(device) ? PrefillKernel::kWgmma : PrefillKernel::kMmaSync;
  } else if (kernel == PrefillKernel::kWgmma && !wgmma_runs_on(device)) {
    fail("the wgmma kernel needs a compute capability 9.0 GPU and a build for sm_90a");
  }
  if (kernel == PrefillKernel::kWgmma) {
    if (p.head_dim == 64) return launch_wgmma<64>(p, device, stream);
    return launch_wgmma<128>(p, device, stream);
  }
  // 16 query rows per warp; ARBOR_PREFILL_WARPS=4 or 8 (64 or 128 rows per block) picks the
  // tile for measurements, default 8.
  static const int warps = [] {
    const char* v = std::getenv("ARBOR_PREFILL_WARPS");
    return v && std::string(v) == "4" ? 4 : 8;
  }();
  if (warps == 4) {
    if (p.head_dim == 64) return launch_mma<64, 4>(p, device, stream);
    return launch_mma<128, 4>(p, device, stream);
  }
  if (p.head_dim == 64) return launch_mma<64, 8>(p, device, stream);
  launch_mma<128, 8>(p, device, stream);
}

}  // namespace arbor::cuda
