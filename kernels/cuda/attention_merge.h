// Merging partial attentions by their log-sum-exp on the GPU: the device side of the
// context-parallel (tree attention) combine. Same contracts as the CPU ops in
// kernels/cpu/ops.h (pack_partials, merge_packed_partials, weight_partials,
// normalize_weighted), all in fp32; the final outputs are bf16 (the model's activation
// type). Rows are (token, query head) pairs; the packed row layout is [head_dim][1].
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

namespace arbor::cuda {

// packed[r] = (o[r], lse[r]).
void pack_partials(const float* o, const float* lse, size_t rows, int head_dim, float* packed,
                   cudaStream_t stream);

// out[r] = Σ_p w_p·o_p / Σ_p w_p over `parts` packed partials laid out part-major
// (gathered[(p·rows + r)·(head_dim + 1)]), w_p = exp(lse_p − max lse). Empty parts
// (lse = -inf) weigh 0; all empty gives 0.
void merge_packed_partials(const float* gathered, int parts, size_t rows, int head_dim, bf16* out,
                           cudaStream_t stream);

// weighted[r] = (w·o[r], w), w = exp(lse[r] − max_lse[r]) (0 when max_lse is -inf).
void weight_partials(const float* o, const float* lse, const float* max_lse, size_t rows,
                     int head_dim, float* weighted, cudaStream_t stream);

// out[r] = weighted[r][0..d) / weighted[r][d] (0 when the weight sum is 0).
void normalize_weighted(const float* weighted, size_t rows, int head_dim, bf16* out,
                        cudaStream_t stream);

}  // namespace arbor::cuda
