// Element-wise and row-wise CUDA ops of the Llama forward (contracts: kernels/cuda/ops.h).
//
// Every kernel computes in fp32 and rounds to bf16 exactly where Hugging Face's bf16 forward
// rounds: each torch op on a bf16 tensor computes in fp32 ("opmath") and rounds its result to
// bf16, so a fused kernel that wants the same bits must round after each op the model
// performs as a separate torch op. The comments at each kernel name the torch ops emulated.
//
// Layout: helpers, then one section per op (kernels first, then the launcher). Launchers
// validate arguments on the host (std::invalid_argument), never allocate, and check the
// launch. Fast paths use 16-byte accesses (8 bf16) when sizes and pointers allow; a scalar
// path handles every other shape with the same arithmetic.
#include "kernels/cuda/ops.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/pdl.h"
#include "kernels/cuda/row_math.cuh"

namespace arbor::cuda {
namespace {

// ---- helpers ----------------------------------------------------------------------------

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(op) + ": " + what);
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

int ceil_div(long long a, long long b) {
  return int((a + b - 1) / b);
}

// kVW consecutive bf16 values as floats (kVW = 8: one 16-byte access; kVW = 1: one value).
template <int kVW>
__device__ __forceinline__ void load_vec(const bf16* p, float (&f)[kVW]) {
  if constexpr (kVW == 8) {
    unpack8(load16(p), f);
  } else {
#pragma unroll
    for (int e = 0; e < kVW; ++e) f[e] = __bfloat162float(p[e]);
  }
}
template <int kVW>
__device__ __forceinline__ void store_vec(bf16* p, const float (&f)[kVW]) {
  if constexpr (kVW == 8) {
    store16(p, pack8(f));
  } else {
#pragma unroll
    for (int e = 0; e < kVW; ++e) p[e] = __float2bfloat16_rn(f[e]);
  }
}

constexpr int kThreads = 256;  // block size of the element-wise kernels
constexpr int kMaxGrid = 1 << 20;

int grid_for(size_t items) {
  return int(std::min<size_t>((items + kThreads - 1) / kThreads, kMaxGrid));
}

// ---- embedding --------------------------------------------------------------------------

// One block per token copies its table row; kVW = 8 copies 16 bytes per access.
template <int kVW>
__global__ void embedding_kernel(const bf16* __restrict__ table, const int32_t* __restrict__ ids,
                                 int hidden, bf16* __restrict__ out) {
  pdl_wait();
  pdl_launch_dependents();
  const int t = blockIdx.x;
  const bf16* src = table + size_t(ids[t]) * hidden;
  bf16* dst = out + size_t(t) * hidden;
  for (int i = threadIdx.x * kVW; i < hidden; i += blockDim.x * kVW) {
    if constexpr (kVW == 8) {
      store16(dst + i, load16(src + i));
    } else {
      dst[i] = src[i];
    }
  }
}

// ---- rmsnorm / add_rmsnorm --------------------------------------------------------------
//
// Hugging Face, per decoder layer:
//   hidden = residual + hidden                      (bf16 add: fp32 sum rounded to bf16)
//   h32 = hidden.to(float32)
//   h32 = h32 * rsqrt(h32.pow(2).mean(-1) + eps)    (fp32)
//   out = weight * h32.to(bfloat16)                 (round, then bf16 multiply: round again)
// The row is held in registers between the reduction and the output (kVec 16-byte vectors
// per thread), so x is read once; out may alias x, since every read of the row precedes the
// block barrier inside block_sum and every write follows it.

template <int kVec, bool kAdd>
__global__ void __launch_bounds__(1024)
    rmsnorm_vec_kernel(const bf16* x, bf16* residual, const bf16* __restrict__ weight, int dim,
                       float eps, bf16* out) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ float scratch[32];
  const size_t base = size_t(blockIdx.x) * dim;
  const int nvec = dim / 8;
  float v[kVec][8];
  float sum_sq = 0.0f;
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < nvec) {
      unpack8(load16(x + base + size_t(c) * 8), v[j]);
      if constexpr (kAdd) {
        float r[8];
        unpack8(load16(residual + base + size_t(c) * 8), r);
#pragma unroll
        for (int e = 0; e < 8; ++e) v[j][e] = residual_add(r[e], v[j][e]);
        store16(residual + base + size_t(c) * 8, pack8(v[j]));  // exact: already bf16
      }
      add_squares8(sum_sq, v[j]);
    }
  }
  const float inv_rms = rms_inverse(block_sum(sum_sq, scratch), dim, eps);
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const int c = threadIdx.x + j * blockDim.x;
    if (c < nvec) {
      float w[8], o[8];
      unpack8(load16(weight + size_t(c) * 8), w);
#pragma unroll
      for (int e = 0; e < 8; ++e) o[e] = rmsnorm_value(v[j][e], inv_rms, w[e]);
      store16(out + base + size_t(c) * 8, pack8(o));
    }
  }
}

// Any dim, any alignment: two passes over the row (the second re-reads it from cache).
template <bool kAdd>
__global__ void rmsnorm_scalar_kernel(const bf16* x, bf16* residual,
                                      const bf16* __restrict__ weight, int dim, float eps,
                                      bf16* out) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ float scratch[32];
  const size_t base = size_t(blockIdx.x) * dim;
  float sum_sq = 0.0f;
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    float val = __bfloat162float(x[base + i]);
    if constexpr (kAdd) {
      val = residual_add(__bfloat162float(residual[base + i]), val);
      residual[base + i] = __float2bfloat16_rn(val);
    }
    sum_sq += val * val;
  }
  const float inv_rms = rms_inverse(block_sum(sum_sq, scratch), dim, eps);
  for (int i = threadIdx.x; i < dim; i += blockDim.x) {
    // The same thread wrote residual[base + i] above, so it reads its own store.
    const float val = __bfloat162float(kAdd ? residual[base + i] : x[base + i]);
    out[base + i] = __float2bfloat16_rn(rmsnorm_value(val, inv_rms, __bfloat162float(weight[i])));
  }
}

template <bool kAdd>
void launch_rmsnorm(const char* op, const bf16* x, bf16* residual, const bf16* weight, int n_rows,
                    int dim, float eps, bf16* out, cudaStream_t stream) {
  require(n_rows >= 0, op, "n_rows must be >= 0, got " + std::to_string(n_rows));
  require(dim > 0, op, "dim must be positive, got " + std::to_string(dim));
  require(eps >= 0.0f && std::isfinite(eps), op, "eps must be finite and >= 0");
  if (n_rows == 0) return;
  require(x && weight && out && (!kAdd || residual), op, "null pointer");

  const bool vec = dim % 8 == 0 && aligned16(x) && aligned16(weight) && aligned16(out) &&
                   (!kAdd || aligned16(residual));
  const int nvec = dim / 8;
  if (vec && nvec <= 4 * 1024) {
    const RmsNormLayout layout = rmsnorm_layout(nvec);  // the fused gemv input repeats it
    const int threads = layout.threads;
    switch (layout.vecs_per_thread) {
      case 1:
        launch_pdl(rmsnorm_vec_kernel<1, kAdd>, dim3(n_rows), dim3(threads), 0, stream, x, residual,
                   weight, dim, eps, out);
        break;
      case 2:
        launch_pdl(rmsnorm_vec_kernel<2, kAdd>, dim3(n_rows), dim3(threads), 0, stream, x, residual,
                   weight, dim, eps, out);
        break;
      default:
        launch_pdl(rmsnorm_vec_kernel<4, kAdd>, dim3(n_rows), dim3(threads), 0, stream, x, residual,
                   weight, dim, eps, out);
        break;
    }
  } else {
    const int threads = std::min(kThreads, ceil_div(dim, 32) * 32);
    launch_pdl(rmsnorm_scalar_kernel<kAdd>, dim3(n_rows), dim3(threads), 0, stream, x, residual,
               weight, dim, eps, out);
  }
  CUDA_CHECK_LAUNCH();
}

// ---- rope_kv_write ----------------------------------------------------------------------
//
// One block per token. The token's cos/sin table (head_dim/2 pairs) is computed once into
// shared memory, then the block's threads walk the work items of the row:
//   rotation items: (head, kVW pair-columns) for the q heads and then the k heads, which are
//     contiguous in the fused qkv row, so head h < Hq + Hkv starts at row + h * head_dim;
//   copy items: (v head, kVW columns), straight into the cache.
//
// Rounding, as Hugging Face's LlamaRotaryEmbedding + apply_rotary_pos_emb in bf16:
//   freqs = inv_freq.float() @ position_ids.float()  — one fp32 product per angle, so
//           angle = float(pos) * inv_freq[i] exactly as here;
//   cos = emb.cos(), sin = emb.sin() in fp32 (attention_scaling is 1 for default and llama3),
//           then .to(bfloat16): the tables are bf16-rounded (sincosf is the precise
//           fp32 libm function, within 2 ulp; its result is rounded to bf16 as torch does);
//   q_embed = (q * cos) + (rotate_half(q) * sin): three bf16 tensor ops, so each product
//           is rounded to bf16 and their sum is rounded again:
//           r[i]        = bf16(bf16(x[i] * c[i])        + bf16(-x[i + half] * s[i]))
//           r[i + half] = bf16(bf16(x[i + half] * c[i]) + bf16( x[i] * s[i]))
//   (rotate_half negates exactly, and bf16(-a) = -bf16(a), so the first is a difference).
// The cpu::rope reference keeps everything in fp32; the two differ by about one bf16 ulp.

template <int kVW>
__global__ void rope_kv_write_kernel(RopeKvWriteParams p) {
  // Decode attention, the next kernel, reads before its own wait only block tables,
  // lengths and cached K/V rows, which nothing in this step before it writes: releasing it
  // now lets it fetch them during the QKV projection's tail (bench/RESULTS.md).
  pdl_launch_dependents();
  pdl_wait();
  extern __shared__ float cs[];  // [half] cos, then [half] sin, both bf16-rounded
  const int t = blockIdx.x;
  const int hd = p.head_dim, half = hd / 2;
  const float pos = float(p.positions[t]);
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const RopeAngle a = rope_angle(pos, p.inv_freq[i]);
    cs[i] = a.cos;
    cs[half + i] = a.sin;
  }
  __syncthreads();

  const int hq = p.num_q_heads, hkv = p.num_kv_heads;
  const int slot = p.slot_mapping[t];
  const bool write_kv = rope_slot_stored(slot, p.num_blocks, p.block_size);
  // kv head h adds h * tile to the base.
  const size_t tile = size_t(p.block_size) * hd;
  const size_t cache_base = write_kv ? rope_cache_base(slot, hkv, p.block_size, hd) : 0;

  const bf16* row = p.qkv + size_t(t) * (hq + 2 * hkv) * hd;
  const int rot_chunks = half / kVW;
  const int n_rot = (hq + hkv) * rot_chunks;
  const int copy_chunks = hd / kVW;
  const int n_items = n_rot + (write_kv ? hkv * copy_chunks : 0);
  for (int j = threadIdx.x; j < n_items; j += blockDim.x) {
    if (j < n_rot) {
      const int head = j / rot_chunks;
      const int i0 = (j % rot_chunks) * kVW;
      bf16* dst;
      if (head < hq) {
        dst = p.q_out + (size_t(t) * hq + head) * hd;
      } else if (write_kv) {
        dst = p.k_cache + cache_base + size_t(head - hq) * tile;
      } else {
        continue;  // padding token: its k is not stored
      }
      const bf16* src = row + size_t(head) * hd;
      float a[kVW], b[kVW], ra[kVW], rb[kVW];
      load_vec<kVW>(src + i0, a);
      load_vec<kVW>(src + half + i0, b);
#pragma unroll
      for (int e = 0; e < kVW; ++e) {
        const RopeAngle angle{cs[i0 + e], cs[half + i0 + e]};
        ra[e] = rope_lo(a[e], b[e], angle);
        rb[e] = rope_hi(a[e], b[e], angle);
      }
      store_vec<kVW>(dst + i0, ra);  // the store rounds the sums to bf16
      store_vec<kVW>(dst + half + i0, rb);
    } else {
      const int jj = j - n_rot;
      const int h = jj / copy_chunks;
      const int d0 = (jj % copy_chunks) * kVW;
      const bf16* src = row + size_t(hq + hkv + h) * hd + d0;
      bf16* dst = p.v_cache + cache_base + size_t(h) * tile + d0;
      if constexpr (kVW == 8) {
        store16(dst, load16(src));
      } else {
        *dst = *src;
      }
    }
  }
}

// ---- silu_mul ---------------------------------------------------------------------------
//
// Hugging Face LlamaMLP: down(act_fn(gate) * up) with act_fn = torch SiLU on bf16:
//   act = bf16(g / (1 + exp(-g)))   (torch's CUDA silu, fp32 opmath, then rounded)
//   out = bf16(act * up)

template <int kVW>
__global__ void silu_mul_kernel(const bf16* __restrict__ gate_up, int n_rows, int dim,
                                bf16* __restrict__ out) {
  pdl_wait();
  pdl_launch_dependents();
  const int per_row = dim / kVW;
  const size_t total = size_t(n_rows) * per_row;
  for (size_t v = size_t(blockIdx.x) * blockDim.x + threadIdx.x; v < total;
       v += size_t(gridDim.x) * blockDim.x) {
    const size_t r = v / per_row;
    const int c = int(v % per_row) * kVW;
    const bf16* g_ptr = gate_up + r * 2 * dim + c;
    float g[kVW], u[kVW], o[kVW];
    load_vec<kVW>(g_ptr, g);
    load_vec<kVW>(g_ptr + dim, u);
#pragma unroll
    for (int e = 0; e < kVW; ++e) o[e] = silu_mul_value(g[e], u[e]);
    store_vec<kVW>(out + r * dim + c, o);
  }
}

// ---- conversions ------------------------------------------------------------------------
//
// Items [0, n_vec) move 8 elements with 16-byte accesses (only when both pointers are
// 16-byte aligned); the remaining n - 8 * n_vec elements are single items after them.

__global__ void f32_to_bf16_kernel(const float* __restrict__ src, size_t n, size_t n_vec,
                                   bf16* __restrict__ dst) {
  const size_t items = n_vec + (n - 8 * n_vec);
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < items;
       i += size_t(gridDim.x) * blockDim.x) {
    if (i < n_vec) {
      const float4 lo = reinterpret_cast<const float4*>(src)[2 * i];
      const float4 hi = reinterpret_cast<const float4*>(src)[2 * i + 1];
      const float f[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
      store16(dst + 8 * i, pack8(f));
    } else {
      const size_t e = 8 * n_vec + (i - n_vec);
      dst[e] = __float2bfloat16_rn(src[e]);
    }
  }
}

__global__ void bf16_to_f32_kernel(const bf16* __restrict__ src, size_t n, size_t n_vec,
                                   float* __restrict__ dst) {
  pdl_wait();
  pdl_launch_dependents();
  const size_t items = n_vec + (n - 8 * n_vec);
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < items;
       i += size_t(gridDim.x) * blockDim.x) {
    if (i < n_vec) {
      float f[8];
      unpack8(load16(src + 8 * i), f);
      reinterpret_cast<float4*>(dst)[2 * i] = make_float4(f[0], f[1], f[2], f[3]);
      reinterpret_cast<float4*>(dst)[2 * i + 1] = make_float4(f[4], f[5], f[6], f[7]);
    } else {
      const size_t e = 8 * n_vec + (i - n_vec);
      dst[e] = __bfloat162float(src[e]);
    }
  }
}

// ---- fill_normal_bf16 -------------------------------------------------------------------
//
// Counter-based: pair i (elements 2i, 2i+1) takes 64 random bits from splitmix64's output
// function applied to key + (i + 1) * golden, where key = splitmix64(seed). 24 bits give
// u1 in (0, 1), 24 more u2 in [0, 1); Box-Muller turns them into two normals. The value of an
// element depends only on (seed, index): not on n, the grid or the GPU.

__host__ __device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;

__global__ void fill_normal_kernel(bf16* __restrict__ dst, size_t n, uint64_t key, float mean,
                                   float stddev) {
  const size_t pairs = (n + 1) / 2;
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < pairs;
       i += size_t(gridDim.x) * blockDim.x) {
    const uint64_t bits = mix64(key + (i + 1) * kGolden);
    const float u1 = (float(uint32_t(bits >> 40)) + 0.5f) * 0x1p-24f;     // (0, 1)
    const float u2 = float(uint32_t(bits >> 16) & 0xffffffu) * 0x1p-24f;  // [0, 1)
    const float r = sqrtf(-2.0f * logf(u1));
    float s, c;
    sincospif(2.0f * u2, &s, &c);
    dst[2 * i] = __float2bfloat16_rn(mean + stddev * (r * c));
    if (2 * i + 1 < n) dst[2 * i + 1] = __float2bfloat16_rn(mean + stddev * (r * s));
  }
}

}  // namespace

// ---- launchers --------------------------------------------------------------------------

void embedding(const bf16* table, const int32_t* ids, int n_tokens, int hidden, bf16* out,
               cudaStream_t stream) {
  const char* op = "cuda::embedding";
  require(n_tokens >= 0, op, "n_tokens must be >= 0, got " + std::to_string(n_tokens));
  require(hidden > 0, op, "hidden must be positive, got " + std::to_string(hidden));
  if (n_tokens == 0) return;
  require(table && ids && out, op, "null pointer");
  if (hidden % 8 == 0 && aligned16(table) && aligned16(out)) {
    const int threads = std::min(kThreads, ceil_div(hidden / 8, 32) * 32);
    launch_pdl(embedding_kernel<8>, dim3(n_tokens), dim3(threads), 0, stream, table, ids, hidden,
               out);
  } else {
    const int threads = std::min(kThreads, ceil_div(hidden, 32) * 32);
    launch_pdl(embedding_kernel<1>, dim3(n_tokens), dim3(threads), 0, stream, table, ids, hidden,
               out);
  }
  CUDA_CHECK_LAUNCH();
}

void rmsnorm(const bf16* x, const bf16* weight, int n_rows, int dim, float eps, bf16* out,
             cudaStream_t stream) {
  launch_rmsnorm<false>("cuda::rmsnorm", x, nullptr, weight, n_rows, dim, eps, out, stream);
}

void add_rmsnorm(bf16* residual, const bf16* x, const bf16* weight, int n_rows, int dim, float eps,
                 bf16* out, cudaStream_t stream) {
  launch_rmsnorm<true>("cuda::add_rmsnorm", x, residual, weight, n_rows, dim, eps, out, stream);
}

void check_rope_kv_write_shape(const RopeKvWriteParams& p, const char* op) {
  require(p.n_tokens >= 0, op, "n_tokens must be >= 0, got " + std::to_string(p.n_tokens));
  require(p.num_q_heads > 0 && p.num_kv_heads > 0, op,
          "head counts must be positive, got " + std::to_string(p.num_q_heads) + " q and " +
              std::to_string(p.num_kv_heads) + " kv heads");
  require(p.head_dim > 0 && p.head_dim % 2 == 0, op,
          "head_dim must be positive and even, got " + std::to_string(p.head_dim));
  require(p.block_size > 0, op, "block_size must be positive, got " + std::to_string(p.block_size));
  require(p.num_blocks >= 0, op, "num_blocks must be >= 0, got " + std::to_string(p.num_blocks));
}

void rope_kv_write(const RopeKvWriteParams& p, cudaStream_t stream) {
  const char* op = "cuda::rope_kv_write";
  check_rope_kv_write_shape(p, op);
  if (p.n_tokens == 0) return;
  require(p.qkv && p.positions && p.slot_mapping && p.inv_freq && p.q_out && p.k_cache && p.v_cache,
          op, "null pointer");

  const bool vec = p.head_dim % 16 == 0 && aligned16(p.qkv) && aligned16(p.q_out) &&
                   aligned16(p.k_cache) && aligned16(p.v_cache);
  const size_t smem = sizeof(float) * size_t(p.head_dim);
  const int vw = vec ? 8 : 1;
  const long long items = (long long)(p.num_q_heads + p.num_kv_heads) * (p.head_dim / 2 / vw) +
                          (long long)p.num_kv_heads * (p.head_dim / vw);
  const int threads = int(std::min<long long>(kThreads, (items + 31) / 32 * 32));
  if (vec) {
    launch_pdl(rope_kv_write_kernel<8>, dim3(p.n_tokens), dim3(threads), smem, stream, p);
  } else {
    launch_pdl(rope_kv_write_kernel<1>, dim3(p.n_tokens), dim3(threads), smem, stream, p);
  }
  CUDA_CHECK_LAUNCH();
}

void silu_mul(const bf16* gate_up, int n_rows, int dim, bf16* out, cudaStream_t stream) {
  const char* op = "cuda::silu_mul";
  require(n_rows >= 0, op, "n_rows must be >= 0, got " + std::to_string(n_rows));
  require(dim > 0, op, "dim must be positive, got " + std::to_string(dim));
  if (n_rows == 0) return;
  require(gate_up && out, op, "null pointer");
  const size_t n = size_t(n_rows) * dim;
  if (dim % 8 == 0 && aligned16(gate_up) && aligned16(out)) {
    launch_pdl(silu_mul_kernel<8>, dim3(grid_for(n / 8)), dim3(kThreads), 0, stream, gate_up,
               n_rows, dim, out);
  } else {
    launch_pdl(silu_mul_kernel<1>, dim3(grid_for(n)), dim3(kThreads), 0, stream, gate_up, n_rows,
               dim, out);
  }
  CUDA_CHECK_LAUNCH();
}

void f32_to_bf16(const float* src, size_t n, bf16* dst, cudaStream_t stream) {
  if (n == 0) return;
  require(src && dst, "cuda::f32_to_bf16", "null pointer");
  const size_t n_vec = aligned16(src) && aligned16(dst) ? n / 8 : 0;
  f32_to_bf16_kernel<<<grid_for(n_vec + n - 8 * n_vec), kThreads, 0, stream>>>(src, n, n_vec, dst);
  CUDA_CHECK_LAUNCH();
}

void bf16_to_f32(const bf16* src, size_t n, float* dst, cudaStream_t stream) {
  if (n == 0) return;
  require(src && dst, "cuda::bf16_to_f32", "null pointer");
  const size_t n_vec = aligned16(src) && aligned16(dst) ? n / 8 : 0;
  launch_pdl(bf16_to_f32_kernel, dim3(grid_for(n_vec + n - 8 * n_vec)), dim3(kThreads), 0, stream,
             src, n, n_vec, dst);
  CUDA_CHECK_LAUNCH();
}

void fill_normal_bf16(bf16* dst, size_t n, uint64_t seed, float mean, float std,
                      cudaStream_t stream) {
  const char* op = "cuda::fill_normal_bf16";
  require(std::isfinite(mean) && std::isfinite(std) && std >= 0.0f, op,
          "mean must be finite and std finite and >= 0");
  if (n == 0) return;
  require(dst != nullptr, op, "null pointer");
  fill_normal_kernel<<<grid_for((n + 1) / 2), kThreads, 0, stream>>>(dst, n, mix64(seed), mean,
                                                                     std);
  CUDA_CHECK_LAUNCH();
}

}  // namespace arbor::cuda
