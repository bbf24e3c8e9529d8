// Matrix-vector products for decode steps with few rows: out[m][n] = x[m][k] · w[n][k]ᵀ for
// m ≤ kMaxGemvRows, bf16 in, fp32 accumulation, bf16 out — the same contract as Gemm::run
// (kernels/cuda/gemm.h) and cpu::matmul. At batch 1 a decode step is a stream of weight
// reads; this kernel reads each weight row once with 16-byte non-caching loads, several in
// flight per lane, x staged in shared memory, one warp per output column n.
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

}  // namespace arbor::cuda
