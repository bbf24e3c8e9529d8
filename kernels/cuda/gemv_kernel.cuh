// The gemv kernel (kernels/cuda/gemv.h) as a template, shared by gemv.cu and the tuning
// benchmark (bench/gemv.cu): M rows of x, kLoads 16-byte weight loads in flight per lane,
// kWarps output columns per block.
#pragma once

#include <cstdint>

#include "kernels/cuda/bf16.h"
#include "kernels/cuda/load.cuh"
#include "kernels/cuda/pdl.h"

namespace arbor::cuda {

// The configuration gemv() uses: on an H100 (bench/gemv.cu, bench/RESULTS.md) 16 warps
// per block were best or within 1% for every Llama-3.1-8B shape at m = 1 and 2; the loads in
// flight matter little from 2 on.
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

template <int M, int kLoads, int kWarps>
__global__ void __launch_bounds__(kWarps * 32)
    gemv_kernel(const bf16* __restrict__ x, const bf16* __restrict__ w, int n, int k,
                bf16* __restrict__ out) {
  extern __shared__ uint4 sx[];  // x as [M][k / 8] chunks of 8 bf16
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

  const uint4* xg = reinterpret_cast<const uint4*>(x);
  for (int i = threadIdx.x; i < M * chunks; i += blockDim.x) sx[i] = xg[i];
  __syncthreads();
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
