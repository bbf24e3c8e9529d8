// The tree-attention combine on the GPU (models/context_parallel.h for the strategies): the
// buffers one rank needs and the per-layer call. Used by the CUDA runner and bench/tree.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"
#include "kernels/cuda/device_buffer.h"
#include "models/context_parallel.h"

namespace arbor {

// Device buffers for combining up to max_rows (token, query head) rows of head_dim values.
class CudaCombineWorkspace {
 public:
  CudaCombineWorkspace() = default;
  CudaCombineWorkspace(const ContextParallelRank& cp, size_t max_rows, int head_dim);

  float* partial_out() { return o_.data(); }    // [max_rows][head_dim]: attention writes here
  float* partial_lse() { return lse_.data(); }  // [max_rows]
  size_t max_rows() const { return max_rows_; }

  // Merges this rank's partials (partial_out, partial_lse) of `rows` rows with every other
  // rank's into out (bf16), on `stream`. Every rank must call it with the same rows.
  void combine(size_t rows, cuda::bf16* out, cudaStream_t stream);

 private:
  ContextParallelRank cp_;
  size_t max_rows_ = 0;
  int head_dim_ = 0;
  cuda::DeviceArray<float> o_, lse_, max_lse_, packed_, gathered_;
};

}  // namespace arbor
