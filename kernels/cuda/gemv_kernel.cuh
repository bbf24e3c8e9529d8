// The gemv kernel (kernels/cuda/gemv.h) as a template, shared by gemv.cu and the tuning
// benchmark (bench/gemv.cu): M rows of x, kLoads 16-byte weight loads in flight per lane,
// kWarps output columns per block, the input either x itself or the norm that produced
// x in the decoder (RMSNorm, residual add + RMSNorm), computed by every block while it
// stages its input in shared memory (GemvInput), and the output either stored or handed,
// in column pairs, to the op that follows the product (SiLU·mul, RoPE + KV-cache write:
// GemvOutput).
#pragma once

#include <cstdint>

#include "kernels/cuda/bf16.h"
#include "kernels/cuda/load.cuh"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/pdl.h"
#include "kernels/cuda/row_math.cuh"

namespace arbor::cuda {

// The configuration gemv() uses: on an H100 (bench/gemv.cu, bench/RESULTS.md) 16 warps
// per block were best or within 1% for every Llama-3.1-8B shape at m = 1 and 2; the loads in
// flight matter little from 2 on. (On the H200 the widest two-row products run best with 8
// warps of 8 loads: gemv.cu's kWideTwoRowN.)
constexpr int kGemvLoadsInFlight = 4;
constexpr int kGemvWarps = 16;
// Weight strides (32 lanes × kLoads 16-byte loads) a warp loads after its pdl_wait and
// before staging the input, on top of the one it loads before: H100, 8B decode, 0 → 1 took
// batch 1 × 1k from 184.3 to 187.8 tok/s, and 2 (71–84 registers, one 16-warp block per SM)
// fell to 182.0 (bench/RESULTS.md).
constexpr int kGemvEarlyStrides = 1;

namespace detail {

// Σ over 8 bf16 pairs of a·b, accumulated into acc (fp32).
__device__ __forceinline__ float gemv_dot8(const uint4& a, const uint4& b, float acc) {
  const uint32_t wa[4] = {a.x, a.y, a.z, a.w}, wb[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    acc = fmaf(__uint_as_float(wa[i] << 16), __uint_as_float(wb[i] << 16), acc);
    acc = fmaf(__uint_as_float(wa[i] & 0xffff0000u), __uint_as_float(wb[i] & 0xffff0000u), acc);
  }
  return acc;
}

// What a block stages in shared memory as the M input rows of k values.
enum class GemvInput {
  kPlain,       // x
  kRmsNorm,     // cuda::rmsnorm(x, norm_weight)
  kAddRmsNorm,  // h = x + residual_in (written to residual_out), then cuda::rmsnorm(h, norm_weight)
};

// The operands of the fused norms (unused by kPlain).
struct GemvNorm {
  const bf16* residual_in = nullptr;  // kAddRmsNorm: [M][k], not written
  bf16* residual_out = nullptr;       // kAddRmsNorm: [M][k], written by block 0 only
  const bf16* weight = nullptr;       // [k]
  float eps = 0.0f;
  // cuda::rmsnorm's layout for k (rmsnorm_layout): threads [0, threads) sum the squares in
  // its order, so the norm has its bits; threads <= the gemv block.
  int threads = 0;
  int vecs_per_thread = 0;
};

// What a block does with its product columns.
enum class GemvOutput {
  kStore,  // out[m][n]
  // The columns come in pairs (lo, hi) computed by the two halves of the block's warps, and
  // one thread per pair writes what the op after the product would, with its bits:
  kSiluMul,  // out[m][n / 2] = silu(col j) * col (j + n / 2): cuda::silu_mul
  // The columns are a fused qkv row: cuda::rope_kv_write with these RopeKvWriteParams
  // (kernels/cuda/ops.h; input row m is token m, q goes to `out`, qkv and q_out unused).
  kRopeKvWrite,
};

// Pair p of a paired output: its lo column (hi = lo + gemv_pair_offset). SiLU·mul pairs gate
// column p with up column p + n / 2; RoPE pairs column i of a head with column i + head_dim
// / 2 (Hugging Face's rotate_half), and the v heads, copied, the same way.
template <GemvOutput kOut>
__device__ __forceinline__ int gemv_pair_lo(int pair, int head_dim) {
  if constexpr (kOut == GemvOutput::kRopeKvWrite) {
    const int half = head_dim / 2;
    return (pair / half) * head_dim + pair % half;
  } else {
    return pair;
  }
}
template <GemvOutput kOut>
__device__ __forceinline__ int gemv_pair_offset(int n, int head_dim) {
  return kOut == GemvOutput::kRopeKvWrite ? head_dim / 2 : n / 2;
}

// Writes pair `pair` of input row m: lo and hi are the product's two columns, rounded to
// bf16 as a stored product would be.
template <GemvOutput kOut>
__device__ __forceinline__ void gemv_store_pair(int m, int pair, float lo, float hi, int n,
                                                bf16* __restrict__ out,
                                                const RopeKvWriteParams& rope) {
  if constexpr (kOut == GemvOutput::kSiluMul) {
    out[size_t(m) * (n / 2) + pair] = __float2bfloat16_rn(silu_mul_value(lo, hi));
  } else {
    const int hd = rope.head_dim, half = hd / 2;
    const int hq = rope.num_q_heads, hkv = rope.num_kv_heads;
    const int head = pair / half, i = pair % half;
    bf16* dst;
    if (head < hq) {
      dst = out + (size_t(m) * hq + head) * hd;
    } else {
      const int slot = rope.slot_mapping[m];
      if (!rope_slot_stored(slot, rope.num_blocks, rope.block_size)) return;  // padding
      const size_t base = rope_cache_base(slot, hkv, rope.block_size, hd);
      const size_t tile = size_t(rope.block_size) * hd;
      if (head >= hq + hkv) {  // v: copied
        dst = rope.v_cache + base + size_t(head - hq - hkv) * tile;
        dst[i] = __float2bfloat16_rn(lo);
        dst[i + half] = __float2bfloat16_rn(hi);
        return;
      }
      dst = rope.k_cache + base + size_t(head - hq) * tile;
    }
    const RopeAngle a = rope_angle(float(rope.positions[m]), rope.inv_freq[i]);
    dst[i] = __float2bfloat16_rn(rope_lo(lo, hi, a));
    dst[i + half] = __float2bfloat16_rn(rope_hi(lo, hi, a));
  }
}

// Shared memory a block needs: the input rows, then for the norms the per-row partial sums
// of block_sum (dynamic, so that the launch's opt-in above 48 KiB counts them).
template <int M, GemvInput kIn>
constexpr size_t gemv_smem_bytes(int k) {
  const bool norm = kIn == GemvInput::kRmsNorm || kIn == GemvInput::kAddRmsNorm;
  return size_t(M) * size_t(k) * sizeof(bf16) + (norm ? size_t(M) * 32 * sizeof(float) : 0);
}

// Stages the block's input rows into sx ([M][k / 8] vectors of 8 bf16, followed by the
// norms' scratch), each row computed exactly as the separate op computes it
// (kernels/cuda/row_math.cuh). Ends with a barrier.
template <int M, GemvInput kIn>
__device__ __forceinline__ void gemv_stage_input(const bf16* __restrict__ x, const GemvNorm& norm,
                                                 int k, uint4* sx) {
  const int chunks = k / 8;
  if constexpr (kIn == GemvInput::kPlain) {
    const uint4* xg = reinterpret_cast<const uint4*>(x);
    for (int i = threadIdx.x; i < M * chunks; i += blockDim.x) sx[i] = xg[i];
  } else {
    // 1. h (x, or x + residual rounded) into sx, and each row's sum of squares with the
    // threads and vector order of cuda::rmsnorm's kernel (threads beyond its count add 0).
    float* scratch = reinterpret_cast<float*>(sx + M * chunks);  // [M][32]
    float inv_rms[M];
#pragma unroll
    for (int m = 0; m < M; ++m) {
      float sum_sq = 0.0f;
      if (int(threadIdx.x) < norm.threads) {
        for (int j = 0; j < norm.vecs_per_thread; ++j) {
          const int c = threadIdx.x + j * norm.threads;
          if (c >= chunks) break;
          const size_t at = size_t(m) * k + size_t(c) * 8;
          float h[8];
          unpack8(load16(x + at), h);
          if constexpr (kIn == GemvInput::kAddRmsNorm) {
            float r[8];
            unpack8(load16(norm.residual_in + at), r);
#pragma unroll
            for (int e = 0; e < 8; ++e) h[e] = residual_add(r[e], h[e]);
          }
          const uint4 packed = pack8(h);  // exact: h holds bf16 values
          sx[m * chunks + c] = packed;
          if (kIn == GemvInput::kAddRmsNorm && blockIdx.x == 0)
            store16(norm.residual_out + at, packed);
          add_squares8(sum_sq, h);
        }
      }
      inv_rms[m] = rms_inverse(block_sum(sum_sq, scratch + 32 * m), k, norm.eps);
    }
    // 2. sx = weight · bf16(h · inv_rms), in place (block_sum's barrier ordered step 1's
    // writes before these reads; each vector is read and written by one thread).
    for (int i = threadIdx.x; i < M * chunks; i += blockDim.x) {
      const int c = i % chunks;
      float h[8], w[8], o[8];
      unpack8(sx[i], h);
      unpack8(load16(norm.weight + size_t(c) * 8), w);
      float r = inv_rms[0];
#pragma unroll
      for (int m = 1; m < M; ++m) r = i / chunks == m ? inv_rms[m] : r;
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = rmsnorm_value(h[e], r, w[e]);
      sx[i] = pack8(o);
    }
  }
  __syncthreads();
}

// acc[m] += Σ over the weight row wr of w · x[m] (this lane's share; the caller reduces
// over the warp). first holds the row's first stride when prefetched.
template <int M, int kLoads, int kEarly>
__device__ __forceinline__ void gemv_dot_rows(const uint4* __restrict__ wr, const uint4* sx,
                                              int chunks, int lane, const uint4 (&first)[kLoads],
                                              bool prefetched,
                                              const uint4 (&early_loads)[kEarly + 1][kLoads],
                                              int early, float (&acc)[M]) {
  constexpr int kStride = 32 * kLoads;
  // The first stride (loaded before pdl_wait) is peeled off the loop: choosing between it
  // and fresh loads inside the loop cost the 8B decode step 7% on an H100 (bench/RESULTS.md).
  int c = lane;
  if (prefetched) {
#pragma unroll
    for (int j = 0; j < kLoads; ++j)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] = gemv_dot8(first[j], sx[m * chunks + c + j * 32], acc[m]);
    c += kStride;
#pragma unroll
    for (int e = 0; e < kEarly; ++e) {
      if (e < early) {
#pragma unroll
        for (int j = 0; j < kLoads; ++j)
#pragma unroll
          for (int m = 0; m < M; ++m)
            acc[m] = gemv_dot8(early_loads[e][j], sx[m * chunks + c + j * 32], acc[m]);
        c += kStride;
      }
    }
  }
  for (; c + (kLoads - 1) * 32 < chunks; c += kStride) {
    uint4 wv[kLoads];
#pragma unroll
    for (int j = 0; j < kLoads; ++j) wv[j] = load_stream16(wr + c + j * 32);
#pragma unroll
    for (int j = 0; j < kLoads; ++j)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] = gemv_dot8(wv[j], sx[m * chunks + c + j * 32], acc[m]);
  }
  for (; c < chunks; c += 32) {
    const uint4 wv = load_stream16(wr + c);
#pragma unroll
    for (int m = 0; m < M; ++m) acc[m] = gemv_dot8(wv, sx[m * chunks + c], acc[m]);
  }
}

// kStore: block b computes columns [b · kWarps, (b + 1) · kWarps). Paired outputs: block b
// computes pairs [b · kWarps / 2, (b + 1) · kWarps / 2), warp w the lo column of pair w and
// warp w + kWarps / 2 its hi column; there are n / 2 pairs.
template <int M, int kLoads, int kWarps, GemvInput kIn = GemvInput::kPlain,
          GemvOutput kOut = GemvOutput::kStore, int kEarly = kGemvEarlyStrides>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, int n, int k,
                bf16* __restrict__ out, GemvNorm norm, RopeKvWriteParams rope) {
  extern __shared__ uint4 sx[];  // gemv_smem_bytes: the input as [M][k / 8] chunks of 8 bf16
  constexpr bool kPaired = kOut != GemvOutput::kStore;
  constexpr int kPairs = kWarps / 2;  // pairs per block (paired outputs)
  static_assert(!kPaired || kWarps % 2 == 0, "paired outputs take an even warp count");
  const int chunks = k / 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  int col;
  bool active;
  if constexpr (kPaired) {
    const int pair = blockIdx.x * kPairs + warp % kPairs;
    active = pair < n / 2;
    col = gemv_pair_lo<kOut>(pair, rope.head_dim) +
          (warp >= kPairs ? gemv_pair_offset<kOut>(n, rope.head_dim) : 0);
  } else {
    col = blockIdx.x * kWarps + warp;
    active = col < n;
  }
  const uint4* wr = reinterpret_cast<const uint4*>(w + size_t(active ? col : 0) * k);

  // Weights are constant: the first loads go out before waiting for the previous kernel
  // (programmatic dependent launch, kernels/cuda/pdl.h), overlapping its tail.
  uint4 first[kLoads];
  const bool prefetched = active && lane + (kLoads - 1) * 32 < chunks;
  if (prefetched) {
#pragma unroll
    for (int j = 0; j < kLoads; ++j) first[j] = load_stream16(wr + lane + j * 32);
  }
  pdl_wait();
  pdl_launch_dependents();
  // The next kEarly strides' loads go out before the input is staged, so that this block's
  // weight reads continue while it stages (and normalizes) x — which every block of the
  // first wave does at once, at the product's start (H100, 8B batch 1: +1.9% tok/s,
  // bench/RESULTS.md).
  uint4 early_loads[kEarly + 1][kLoads];  // (+ 1: no zero-sized array at kEarly = 0)
  int early = 0;                          // strides loaded
#pragma unroll
  for (int e = 0; e < kEarly; ++e) {
    const int c0 = lane + (e + 1) * 32 * kLoads;
    if (prefetched && early == e && c0 + (kLoads - 1) * 32 < chunks) {
#pragma unroll
      for (int j = 0; j < kLoads; ++j) early_loads[e][j] = load_stream16(wr + c0 + j * 32);
      early = e + 1;
    }
  }

  gemv_stage_input<M, kIn>(x, norm, k, sx);
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;
  // Paired outputs: an idle warp of the last block still meets the block's barrier below
  // (skipping the loop).
  if (!active) {
    if constexpr (!kPaired) return;
  } else {
    gemv_dot_rows<M, kLoads, kEarly>(wr, sx, chunks, lane, first, prefetched, early_loads, early,
                                     acc);
  }

#pragma unroll
  for (int m = 0; m < M; ++m) {
#pragma unroll
    for (int off = 16; off > 0; off /= 2) acc[m] += __shfl_xor_sync(0xffffffffu, acc[m], off);
  }
  if constexpr (!kPaired) {
    if (lane == 0) {
#pragma unroll
      for (int m = 0; m < M; ++m) out[size_t(m) * n + col] = __float2bfloat16_rn(acc[m]);
    }
  } else {
    __shared__ float cols[M][kWarps];  // each warp's columns, rounded as stored products
    if (lane == 0) {
#pragma unroll
      for (int m = 0; m < M; ++m) cols[m][warp] = round_bf16(acc[m]);
    }
    __syncthreads();
    const int t = threadIdx.x;  // one thread per (row, pair): M · kPairs <= 32, warp 0
    if (t < M * kPairs) {
      const int m = t / kPairs, p = t % kPairs;
      const int pair = blockIdx.x * kPairs + p;
      if (pair < n / 2)
        gemv_store_pair<kOut>(m, pair, cols[m][p], cols[m][p + kPairs], n, out, rope);
    }
  }
}

}  // namespace detail
}  // namespace arbor::cuda
