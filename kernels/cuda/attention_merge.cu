// LSE merge of partial attentions (kernels/cuda/attention_merge.h). One thread per output
// value: these kernels move a few hundred KB per layer at decode and are latency-bound; the
// collective between them dominates.
#include "kernels/cuda/attention_merge.h"

#include <cmath>

#include "kernels/cuda/check.h"

namespace arbor::cuda {
namespace {

constexpr int kThreads = 256;

unsigned blocks_for(size_t n) {
  return unsigned((n + kThreads - 1) / kThreads);
}

__global__ void pack_kernel(const float* o, const float* lse, size_t rows, int d, float* packed) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t stride = size_t(d) + 1;
  if (i >= rows * stride) return;
  const size_t r = i / stride, c = i % stride;
  packed[i] = c < size_t(d) ? o[r * d + c] : lse[r];
}

__global__ void merge_kernel(const float* gathered, int parts, size_t rows, int d, bf16* out) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * d) return;
  const size_t r = i / d, c = i % d, stride = size_t(d) + 1;
  float max_lse = -INFINITY;
  for (int p = 0; p < parts; ++p) max_lse = fmaxf(max_lse, gathered[(p * rows + r) * stride + d]);
  float acc = 0.0f, sum = 0.0f;
  if (max_lse != -INFINITY) {
    for (int p = 0; p < parts; ++p) {
      const float* row = gathered + (p * rows + r) * stride;
      const float w = expf(row[d] - max_lse);
      sum += w;
      acc += w * row[c];
    }
  }
  out[i] = __float2bfloat16_rn(sum > 0.0f ? acc / sum : 0.0f);
}

__global__ void weight_kernel(const float* o, const float* lse, const float* max_lse, size_t rows,
                              int d, float* weighted) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const size_t stride = size_t(d) + 1;
  if (i >= rows * stride) return;
  const size_t r = i / stride, c = i % stride;
  const float w = max_lse[r] == -INFINITY ? 0.0f : expf(lse[r] - max_lse[r]);
  weighted[i] = c < size_t(d) ? w * o[r * d + c] : w;
}

__global__ void normalize_kernel(const float* weighted, size_t rows, int d, bf16* out) {
  const size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= rows * d) return;
  const size_t r = i / d, c = i % d, stride = size_t(d) + 1;
  const float sum = weighted[r * stride + d];
  out[i] = __float2bfloat16_rn(sum > 0.0f ? weighted[r * stride + c] / sum : 0.0f);
}

}  // namespace

void pack_partials(const float* o, const float* lse, size_t rows, int head_dim, float* packed,
                   cudaStream_t stream) {
  const size_t n = rows * (size_t(head_dim) + 1);
  if (n == 0) return;
  pack_kernel<<<blocks_for(n), kThreads, 0, stream>>>(o, lse, rows, head_dim, packed);
  CUDA_CHECK_LAUNCH();
}

void merge_packed_partials(const float* gathered, int parts, size_t rows, int head_dim, bf16* out,
                           cudaStream_t stream) {
  const size_t n = rows * size_t(head_dim);
  if (n == 0) return;
  merge_kernel<<<blocks_for(n), kThreads, 0, stream>>>(gathered, parts, rows, head_dim, out);
  CUDA_CHECK_LAUNCH();
}

void weight_partials(const float* o, const float* lse, const float* max_lse, size_t rows,
                     int head_dim, float* weighted, cudaStream_t stream) {
  const size_t n = rows * (size_t(head_dim) + 1);
  if (n == 0) return;
  weight_kernel<<<blocks_for(n), kThreads, 0, stream>>>(o, lse, max_lse, rows, head_dim, weighted);
  CUDA_CHECK_LAUNCH();
}

void normalize_weighted(const float* weighted, size_t rows, int head_dim, bf16* out,
                        cudaStream_t stream) {
  const size_t n = rows * size_t(head_dim);
  if (n == 0) return;
  normalize_kernel<<<blocks_for(n), kThreads, 0, stream>>>(weighted, rows, head_dim, out);
  CUDA_CHECK_LAUNCH();
}

}  // namespace arbor::cuda
