// Device-side load helpers shared by the memory-bound kernels.
#pragma once

#include <cstdint>

namespace arbor::cuda {

// 16 bytes read once (weights, KV cache): non-coherent path, no L1 allocation.
__device__ __forceinline__ uint4 load_stream16(const void* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

}  // namespace arbor::cuda
