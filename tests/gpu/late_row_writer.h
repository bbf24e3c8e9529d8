// A stand-in for the RoPE + KV write that runs just before decode attention in a model's
// step: launched with programmatic dependent launch, it lets the next kernel start, waits,
// and only then writes q and one K/V row per (sequence, kv head). A kernel that reads those
// before its griddepcontrol.wait sees the old values.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

namespace arbor::test {

struct LateRowWrite {
  arbor::cuda::bf16* k_cache = nullptr;
  arbor::cuda::bf16* v_cache = nullptr;
  const int64_t* row_offsets = nullptr;       // device, element offset of each row in the caches
  const arbor::cuda::bf16* k_rows = nullptr;  // device, [num_rows][head_dim]
  const arbor::cuda::bf16* v_rows = nullptr;
  int num_rows = 0;
  int head_dim = 0;
  arbor::cuda::bf16* q = nullptr;  // device, overwritten with q_new
  const arbor::cuda::bf16* q_new = nullptr;
  size_t q_elements = 0;
  int delay_us = 0;  // spins this long after releasing the next kernel, before writing
};

void launch_late_row_write(const LateRowWrite& w, cudaStream_t stream);

}  // namespace arbor::test
