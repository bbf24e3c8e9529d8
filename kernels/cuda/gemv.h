// Matrix-vector products for decode steps with few rows: out[m][n] = x[m][k] · w[n][k]ᵀ for
// m ≤ kMaxGemvRows, bf16 in, fp32 accumulation, bf16 out — the same contract as Gemm::run
// (kernels/cuda/gemm.h) and cpu::matmul. At batch 1 a decode step is a stream of weight
// reads; this kernel reads each weight row once with 16-byte non-caching loads, several in
// flight per lane, x staged in shared memory, one warp per output column n.
//
// The fused entry points compute the product's input, an RMSNorm (with the residual add),
// while staging it (every block computes the whole input; it is small), so that the norm
// needs no kernel of its own: the same bits as running cuda::rmsnorm / add_rmsnorm
// (kernels/cuda/ops.h) and then gemv(), one launch fewer. (A fused SiLU·mul was measured
// slower than the two kernels — 14336 expf per block — and dropped: bench/RESULTS.md.)
#pragma once

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

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

}  // namespace arbor::cuda
