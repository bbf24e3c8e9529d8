// Element-wise and small CUDA ops of the Llama forward. Same contracts as kernels/cpu/ops.h,
// in bf16 with fp32 arithmetic inside, rounding where Hugging Face's bf16 forward rounds
// (so greedy tokens follow transformers' bf16 run as closely as possible; each op below
// states its rounding points).
//
// Every launcher validates its sizes on the host (std::invalid_argument; a count of 0 is a
// no-op), enqueues on `stream`, never allocates, and throws CudaError for a bad launch. Any
// shape and alignment works; 16-byte aligned pointers with row lengths that are multiples
// of 8 elements take the vectorized path.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

namespace arbor::cuda {

// out[t] = table[ids[t]]; table [vocab][hidden]. Ids must be in range (the caller validates
// them against the vocabulary; the kernel cannot).
void embedding(const bf16* table, const int32_t* ids, int n_tokens, int hidden, bf16* out,
               cudaStream_t stream);

// out[r] = rmsnorm(x[r]) * weight, as HF LlamaRMSNorm in bf16: inv = rsqrt(mean(x²) + eps)
// in fp32, out = bf16(bf16(x * inv) * weight). `out` may alias `x`.
void rmsnorm(const bf16* x, const bf16* weight, int n_rows, int dim, float eps, bf16* out,
             cudaStream_t stream);

// residual[r] = bf16(residual[r] + x[r]) (HF's bf16 residual add); out[r] =
// rmsnorm(residual[r]) * weight as above. `out` may alias `x` (not `residual`).
void add_rmsnorm(bf16* residual, const bf16* x, const bf16* weight, int n_rows, int dim, float eps,
                 bf16* out, cudaStream_t stream);

// Splits the fused QKV projection output, applies RoPE (rotate-half convention, cos/sin from
// fp32 angle = float(pos) * inv_freq[i], as cpu::rope) to q and k, writes q to q_out and k, v
// into the paged cache at slot_mapping[t] (negative slot: padding token, skipped).
// Rounding as HF in bf16: cos/sin computed in fp32 and rounded to bf16; each product rounded
// to bf16, then their sum: r[i] = bf16(bf16(x[i]·c) - bf16(x[i+half]·s)),
// r[i+half] = bf16(bf16(x[i+half]·c) + bf16(x[i]·s)). V is copied unchanged.
// With num_blocks > 0, a slot at or past num_blocks * block_size is skipped too (never
// written out of bounds); num_blocks = 0 trusts the slots. Either way the caller validates
// slots (cpu::kv_cache_write throws for them). q_out must not overlap qkv.
struct RopeKvWriteParams {
  const bf16* qkv = nullptr;              // [n_tokens][(num_q_heads + 2 * num_kv_heads) * head_dim]
  const int32_t* positions = nullptr;     // device, [n_tokens]
  const int32_t* slot_mapping = nullptr;  // device, [n_tokens]
  const float* inv_freq = nullptr;        // device, [head_dim / 2]
  int n_tokens = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;
  int block_size = 0;
  int num_blocks = 0;       // blocks in k_cache / v_cache; bounds the slots (0: unchecked)
  bf16* q_out = nullptr;    // [n_tokens][num_q_heads][head_dim]
  bf16* k_cache = nullptr;  // [num_blocks][num_kv_heads][block_size][head_dim]
  bf16* v_cache = nullptr;
};
// Lets the next kernel on the stream start (programmatic dependent launch) before the one
// before this completes: that next kernel may read, before its own griddepcontrol.wait,
// only what no kernel of the current step writes (decode attention: tables, lengths, K/V).
void rope_kv_write(const RopeKvWriteParams& p, cudaStream_t stream);
// rope_kv_write's rules for p's counts (n_tokens >= 0, positive head counts, an even
// head_dim, block_size > 0, num_blocks >= 0): throws std::invalid_argument, prefixed by op.
// (Also the fused qkv product's, gemv_rope_kv_write in kernels/cuda/gemv.h.)
void check_rope_kv_write_shape(const RopeKvWriteParams& p, const char* op);

// gate_up [n_rows][2 * dim] (gate first) → out [n_rows][dim] = silu(gate) * up, as HF in
// bf16: act = bf16(g / (1 + exp(-g))), out = bf16(act * up).
void silu_mul(const bf16* gate_up, int n_rows, int dim, bf16* out, cudaStream_t stream);

// Conversions (n elements); f32 → bf16 rounds to nearest even (NaN stays NaN).
void f32_to_bf16(const float* src, size_t n, bf16* dst, cudaStream_t stream);
void bf16_to_f32(const bf16* src, size_t n, float* dst, cudaStream_t stream);

// Dummy weights: n values ~ Normal(mean, std) from a counter-based generator keyed by seed,
// rounded to bf16 (--load-format dummy). Element i depends only on (seed, i): the same on
// every GPU, for every n and launch shape.
void fill_normal_bf16(bf16* dst, size_t n, uint64_t seed, float mean, float std,
                      cudaStream_t stream);

}  // namespace arbor::cuda
