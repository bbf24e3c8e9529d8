// Matrix-vector products for decode steps with few rows: out[m][n] = x[m][k] · w[n][k]ᵀ for
// m ≤ kMaxGemvRows, bf16 in, fp32 accumulation, bf16 out — the same contract as Gemm::run
// (kernels/cuda/gemm.h) and cpu::matmul. At batch 1 a decode step is a stream of weight
// reads; this kernel reads each weight row once with 16-byte non-caching loads, several in
// flight per lane, x staged in shared memory, one warp per output column n.
//
// The fused entry points compute the product's input, an RMSNorm (with the residual add),
// while staging it (every block computes the whole input; it is small), so that the norm
// needs no kernel of its own: the same bits as running cuda::rmsnorm / add_rmsnorm
// (kernels/cuda/ops.h) and then gemv(), one launch fewer. (A SiLU·mul fused into the down
// product's input was measured slower than the two kernels — 14336 expf per block — and
// dropped: bench/RESULTS.md.)
//
// The paired entry points fuse the op after the product instead: each block computes
// column pairs and writes what SiLU·mul or RoPE + KV-cache write would make of them, so the
// product never goes to memory and the op needs no kernel (no work is repeated across
// blocks: each pair is one thread's).
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"
#include "kernels/cuda/ops.h"

namespace arbor::cuda {

constexpr int kMaxGemvRows = 4;

// True when gemv() handles the shape and pointers: 1 ≤ m ≤ kMaxGemvRows, k a multiple of 8,
// x, w 16-byte aligned, k·m small enough for shared memory.
bool gemv_supported(const void* x, const void* w, int m, int k);

// Throws std::invalid_argument when !gemv_supported or n ≤ 0.
void gemv(const bf16* x, const bf16* w, int m, int n, int k, bf16* out, cudaStream_t stream);

// True when gemv_rmsnorm / gemv_add_rmsnorm handle m rows of k: gemv_supported's shape rules,
// and the norm's row fits one gemv block in cuda::rmsnorm's thread layout (k ≤ 16384).
bool gemv_rmsnorm_supported(int m, int k);

// Each fused entry point throws std::invalid_argument when its *_supported is false, n ≤ 0,
// eps is negative or not finite, a pointer is null or not 16-byte aligned, or the output
// overlaps an input.

// out = gemv(rmsnorm(x) · norm_weight, w), i.e. cuda::rmsnorm(x, norm_weight, m, k, eps) then
// gemv(), bit for bit. x is [m][k].
void gemv_rmsnorm(const bf16* x, const bf16* norm_weight, float eps, const bf16* w, int m, int n,
                  int k, bf16* out, cudaStream_t stream);

// h = residual_in + x (bf16), written to residual_out; out = gemv(rmsnorm(h) · norm_weight, w):
// cuda::add_rmsnorm then gemv(), bit for bit, except that the new residual goes to
// residual_out (every block reads residual_in while one writes residual_out, so the two
// must not overlap; neither may overlap x or out).
void gemv_add_rmsnorm(const bf16* residual_in, const bf16* x, bf16* residual_out,
                      const bf16* norm_weight, float eps, const bf16* w, int m, int n, int k,
                      bf16* out, cudaStream_t stream);

// The input of a paired product, [m][k]: x itself (norm_weight null); RMSNorm(x) ·
// norm_weight (residual_in null), as gemv_rmsnorm; or h = residual_in + x written to
// residual_out, then RMSNorm(h) · norm_weight, as gemv_add_rmsnorm (the same rules).
struct GemvInputSpec {
  const bf16* x = nullptr;
  const bf16* norm_weight = nullptr;
  float eps = 0.0f;
  const bf16* residual_in = nullptr;
  bf16* residual_out = nullptr;
};

// The most rows the paired entry points take (the decode steps that use the gemv).
constexpr int kMaxGemvPairedRows = 2;

// True when the paired entry points take m rows of k with this kind of input: m ≤
// kMaxGemvPairedRows and gemv_supported's (or with a norm, gemv_rmsnorm_supported's) shape
// rules.
bool gemv_paired_supported(int m, int k, bool norm);

// The MLP's gate_up product and its activation: out [m][dim] = silu(g) · u of the product
// [m][2 · dim] = input · w ([2 · dim][k], gate rows first) — gemv() and then
// cuda::silu_mul, bit for bit. Throws std::invalid_argument for unsupported shapes, null
// pointers, unaligned ones (w and the input's: 16 bytes; out takes any bf16 address), dim ≤ 0,
// a bad eps, or an out that overlaps an input.
void gemv_silu_mul(const GemvInputSpec& in, const bf16* w, int m, int dim, int k, bf16* out,
                   cudaStream_t stream);

// The attention's qkv product and its RoPE + KV-cache write: the product [m][(Hq + 2·Hkv) ·
// head_dim] = input · w, then cuda::rope_kv_write(rope) on it, bit for bit (token t = input
// row t: rope.n_tokens must be m; rope.qkv is not read and may be null). Throws
// std::invalid_argument as gemv_silu_mul does, and for rope_kv_write's own rules (head counts,
// an even head_dim, block_size, null pointers).
void gemv_rope_kv_write(const GemvInputSpec& in, const bf16* w, int m, int k,
                        const RopeKvWriteParams& rope, cudaStream_t stream);

}  // namespace arbor::cuda
