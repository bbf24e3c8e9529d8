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

// The same, and an L2 miss fetches the 256 bytes around it (the .L2::256B prefetch size) instead
// of the 32-byte sectors asked for: for a KV cache streamed whole, whose neighbouring bytes the
// warp asks for next, the DRAM serves fewer, larger requests (H100, decode attention over
// global memory: batch 8 x 32k 348.2 -> 345.6 us, batch 32 x 4k 176.1 -> 174.6, and -1.6% on a
// slower-reading H100; bench/RESULTS.md). For the gemv's weight rows it cost 0.6% end to end.
__device__ __forceinline__ uint4 load_stream16_prefetch256(const void* p) {
  uint4 r;
  asm("ld.global.nc.L1::no_allocate.L2::256B.v4.u32 {%0, %1, %2, %3}, [%4];"
      : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
      : "l"(p));
  return r;
}

}  // namespace arbor::cuda
