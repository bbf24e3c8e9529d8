// Device arithmetic shared by the row-wise ops (kernels/cuda/ops.cu) and the gemv kernel's
// fused inputs and outputs (kernels/cuda/gemv_kernel.cuh): one definition of each rounding
// step, so that a fused kernel computes the same bits as the separate kernels it replaces.
#pragma once

#include <cstdint>

#include "kernels/cuda/bf16.h"

namespace arbor::cuda {

// Rounds an fp32 value to the nearest bf16 (ties to even) and back: what storing the result
// of a torch op into a bf16 tensor does.
__device__ __forceinline__ float round_bf16(float x) {
  return __bfloat162float(__float2bfloat16_rn(x));
}

// 8 bf16 values in one 16-byte word.
__device__ __forceinline__ void unpack8(const uint4& u, float (&f)[8]) {
  const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 t = __bfloat1622float2(h[i]);
    f[2 * i] = t.x;
    f[2 * i + 1] = t.y;
  }
}
__device__ __forceinline__ uint4 pack8(const float (&f)[8]) {
  uint4 u;
  __nv_bfloat162* h = reinterpret_cast<__nv_bfloat162*>(&u);
#pragma unroll
  for (int i = 0; i < 4; ++i) h[i] = __floats2bfloat162_rn(f[2 * i], f[2 * i + 1]);
  return u;
}
__device__ __forceinline__ uint4 load16(const bf16* p) {
  return *reinterpret_cast<const uint4*>(p);
}
__device__ __forceinline__ void store16(bf16* p, const uint4& u) {
  *reinterpret_cast<uint4*>(p) = u;
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
// `scratch` holds 32 floats and must not be reused by the caller after this call. Threads
// that add 0 do not change the sum's bits: a block whose threads from T on add 0 returns
// exactly what a block of T threads (T a multiple of 32) returns.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
  v = warp_sum(v);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  // Every warp adds the per-warp sums itself: no second barrier for a broadcast.
  v = lane < int(blockDim.x / 32) ? scratch[lane] : 0.0f;
  return warp_sum(v);
}

// ---- RMSNorm (Hugging Face LlamaRMSNorm in bf16, see ops.cu) ------------------------------

// How the vectorized RMSNorm spreads a row of nvec 16-byte vectors over a block: the fewest
// vectors per thread that keep the block at <= 256 threads (<= 1024 for very wide rows):
// 4096 → 256 threads × 2 vectors, 8192 → 256 × 4, 16384 → 512 × 4. Thread t holds vectors
// t + j · threads; the order of its sum of squares is part of the result's bits.
struct RmsNormLayout {
  int vecs_per_thread;
  int threads;
};
__host__ __device__ constexpr RmsNormLayout rmsnorm_layout(int nvec) {
  const int vecs = nvec <= 256 ? 1 : nvec <= 512 ? 2 : 4;
  return {vecs, ((nvec + vecs - 1) / vecs + 31) / 32 * 32};
}

// residual + hidden: the fp32 sum rounded to bf16 (the new residual stream).
__device__ __forceinline__ float residual_add(float residual, float hidden) {
  return round_bf16(residual + hidden);
}

// A thread's running sum of squares over one vector of the row.
__device__ __forceinline__ void add_squares8(float& sum_sq, const float (&v)[8]) {
#pragma unroll
  for (int e = 0; e < 8; ++e) sum_sq += v[e] * v[e];
}

__device__ __forceinline__ float rms_inverse(float sum_sq, int dim, float eps) {
  return rsqrtf(sum_sq / float(dim) + eps);
}

// weight * (h * inv_rms).to(bf16): rounded, then multiplied (the caller's store rounds again).
__device__ __forceinline__ float rmsnorm_value(float h, float inv_rms, float weight) {
  return round_bf16(h * inv_rms) * weight;
}

// ---- SiLU·mul (Hugging Face LlamaMLP: act_fn(gate) * up in bf16, see ops.cu) -------------

// bf16(silu(g)) * u (the caller's store rounds the product).
__device__ __forceinline__ float silu_mul_value(float g, float u) {
  return round_bf16(g / (1.0f + expf(-g))) * u;
}

// ---- RoPE + KV-cache write (Hugging Face apply_rotary_pos_emb in bf16, see ops.cu) ---------

// One rotation angle's cos and sin, bf16-rounded as HF's cos/sin tables are.
struct RopeAngle {
  float cos, sin;
};
__device__ __forceinline__ RopeAngle rope_angle(float position, float inv_freq) {
  float s, c;
  sincosf(position * inv_freq, &s, &c);
  return {round_bf16(c), round_bf16(s)};
}
// Column i and i + head_dim / 2 of a head, rotated (the caller's store rounds the sums).
__device__ __forceinline__ float rope_lo(float lo, float hi, RopeAngle a) {
  return round_bf16(lo * a.cos) - round_bf16(hi * a.sin);
}
__device__ __forceinline__ float rope_hi(float lo, float hi, RopeAngle a) {
  return round_bf16(hi * a.cos) + round_bf16(lo * a.sin);
}

// Whether a token's K/V go to the cache: slot < 0 is padding; num_blocks > 0 bounds the slots.
__device__ __forceinline__ bool rope_slot_stored(int slot, int num_blocks, int block_size) {
  return slot >= 0 && (num_blocks == 0 || (long long)slot < (long long)num_blocks * block_size);
}
// Element offset of (slot's block, kv head 0, slot's offset, 0) in a
// [blocks][kv heads][block_size][head_dim] cache; kv head h adds h · block_size · head_dim.
__device__ __forceinline__ size_t rope_cache_base(int slot, int num_kv_heads, int block_size,
                                                  int head_dim) {
  return (size_t(slot / block_size) * num_kv_heads * block_size + slot % block_size) * head_dim;
}

}  // namespace arbor::cuda
