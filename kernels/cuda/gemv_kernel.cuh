// The gemv kernel (kernels/cuda/gemv.h) as a template, shared by gemv.cu and the tuning
// benchmark (bench/gemv.cu): M rows of x, kLoads 16-byte weight loads in flight per lane,
// kWarps output columns per block, and the input either x itself or the norm that produced
// x in the decoder (RMSNorm, residual add + RMSNorm), computed by every block while it
// stages its input in shared memory (GemvInput).
#pragma once

#include <cstdint>

#include "kernels/cuda/bf16.h"
#include "kernels/cuda/load.cuh"
#include "kernels/cuda/pdl.h"
#include "kernels/cuda/row_math.cuh"

namespace arbor::cuda {

// The configuration gemv() uses: on an H100 (bench/gemv.cu, bench/RESULTS.md) 16 warps
// per block were best or within 1% for every Llama-3.1-8B shape at m = 1 and 2; the loads in
// flight matter little from 2 on. (On the H200 the widest two-row products run best with 8
// warps of 8 loads: gemv.cu's kWideTwoRowN.)
constexpr int kGemvLoadsInFlight = 4;
constexpr int kGemvWarps = 16;

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

template <int M, int kLoads, int kWarps, GemvInput kIn = GemvInput::kPlain>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, int n, int k,
                bf16* __restrict__ out, GemvNorm norm) {
  extern __shared__ uint4 sx[];  // gemv_smem_bytes: the input as [M][k / 8] chunks of 8 bf16
  const int chunks = k / 8;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int col = blockIdx.x * kWarps + warp;
  const bool active = col < n;
  const uint4* wr = reinterpret_cast<const uint4*>(w + size_t(active ? col : 0) * k);

  // Weights are constant: the first loads go out before waiting for the previous kernel
  // (programmatic dependent launch, kernels/cuda/pdl.h), overlapping its tail.
  constexpr int kStride = 32 * kLoads;
  uint4 first[kLoads];
  const bool prefetched = active && lane + (kLoads - 1) * 32 < chunks;
  if (prefetched) {
#pragma unroll
    for (int j = 0; j < kLoads; ++j) first[j] = load_stream16(wr + lane + j * 32);
  }
  pdl_wait();
  pdl_launch_dependents();

  gemv_stage_input<M, kIn>(x, norm, k, sx);
  if (!active) return;
  float acc[M];
#pragma unroll
  for (int m = 0; m < M; ++m) acc[m] = 0.0f;

  // The first stride (loaded before pdl_wait) is peeled off the loop: choosing between it
  // and fresh loads inside the loop cost the 8B decode step 7% on an H100 (bench/RESULTS.md).
  int c = lane;
  if (prefetched) {
#pragma unroll
    for (int j = 0; j < kLoads; ++j)
#pragma unroll
      for (int m = 0; m < M; ++m) acc[m] = gemv_dot8(first[j], sx[m * chunks + c + j * 32], acc[m]);
    c += kStride;
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
#pragma unroll
  for (int m = 0; m < M; ++m) {
    float v = acc[m];
#pragma unroll
    for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
    if (lane == 0) out[size_t(m) * n + col] = __float2bfloat16_rn(v);
  }
}

}  // namespace detail
}  // namespace arbor::cuda
