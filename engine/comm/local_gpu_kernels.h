// Internal: the reduction kernel of the local-gpu backend.
#pragma once

#include <cstddef>

#include <cuda_runtime.h>

#include "engine/comm/communicator.h"

namespace arbor::comm::detail {

constexpr int kMaxReduceRanks = 64;

struct ReducePointers {
  const void* src[kMaxReduceRanks];
  void* dst[kMaxReduceRanks];
};

// For i in [begin, end): v = src[0][i] op ... op src[n-1][i] in rank order, dst[r][i] = v for
// every r. Enqueued on `stream`; returns the launch error.
cudaError_t launch_local_reduce(const ReducePointers& p, int n, size_t begin, size_t end,
                                DType dtype, ReduceOp op, cudaStream_t stream);

}  // namespace arbor::comm::detail
