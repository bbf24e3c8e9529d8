// Ampere-style asynchronous copies, global to shared memory, 16 bytes per thread and copy:
// issued like loads (through L1TEX, .cg: cached in L2 only) but landing in shared memory
// without registers. Each thread groups its copies (commit) and waits for its own groups; a
// barrier then makes the landed bytes visible to the other threads.
#pragma once

#include <cstdint>

namespace arbor::cuda {

// 16 bytes from `src` to shared address `dst`; when `valid` is false nothing is read and the
// 16 destination bytes are zero-filled (src-size 0).
__device__ __forceinline__ void cp_async_16(uint32_t dst, const void* src, bool valid) {
  const int src_bytes = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(src_bytes));
}

// Closes this thread's group of copies issued since the last commit (possibly empty).
__device__ __forceinline__ void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::: "memory");
}

// Waits until at most N of this thread's committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

}  // namespace arbor::cuda
