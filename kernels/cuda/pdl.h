// Programmatic dependent launch (Hopper): a kernel launched with launch_pdl() may start
// while the previous kernel on its stream is still finishing, so launch latency and
// independent prologue work (a GEMV's first weight loads) overlap the previous kernel's
// tail — inside CUDA graphs too, where a decode step is ~300 small kernels back to back.
//
// Contract for a kernel launched with launch_pdl(): it calls pdl_wait() before it reads
// anything an earlier kernel writes and before it writes anything at all; work before that
// may only read memory no kernel writes (weights), or memory its caller guarantees the
// kernels still running do not write (decode attention's overlap_previous_kernel).
// pdl_wait() returns once the previous grid has completed and its writes are visible; it
// is a no-op for a normal launch. pdl_launch_dependents() lets the next kernel start being
// scheduled (it still waits in its own pdl_wait() for this grid to complete). Kernels call
// it after their pdl_wait(), so at most two kernels overlap, except where a kernel's only
// dependent is known to read nothing the kernels before it write (rope_kv_write).
//
// ARBOR_PDL=0 in the environment launches normally (for before/after measurements).
#pragma once

#include <cstdlib>
#include <cstring>
#include <utility>

#include <cuda_runtime.h>

#include "kernels/cuda/check.h"

namespace arbor::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_launch_dependents() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;");
#endif
}

inline bool pdl_enabled() {
  static const bool enabled = [] {
    const char* v = std::getenv("ARBOR_PDL");
    return !(v && std::strcmp(v, "0") == 0);
  }();
  return enabled;
}

// cluster_x > 0: thread-block clusters of cluster_x blocks along x (grid.x a multiple of it).
template <typename... KernelArgs, typename... Args>
void launch_pdl_cluster(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                        cudaStream_t stream, unsigned cluster_x, Args&&... args) {
  cudaLaunchAttribute attrs[2] = {};
  unsigned n = 0;
  if (cluster_x > 0) {
    attrs[n].id = cudaLaunchAttributeClusterDimension;
    attrs[n].val.clusterDim.x = cluster_x;
    attrs[n].val.clusterDim.y = 1;
    attrs[n].val.clusterDim.z = 1;
    ++n;
  }
  if (pdl_enabled()) {
    attrs[n].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attrs[n].val.programmaticStreamSerializationAllowed = 1;
    ++n;
  }
  cudaLaunchConfig_t config{};
  config.gridDim = grid;
  config.blockDim = block;
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attrs;
  config.numAttrs = n;
  CUDA_CHECK(cudaLaunchKernelEx(&config, kernel, std::forward<Args>(args)...));
}

template <typename... KernelArgs, typename... Args>
void launch_pdl(void (*kernel)(KernelArgs...), dim3 grid, dim3 block, size_t smem,
                cudaStream_t stream, Args&&... args) {
  launch_pdl_cluster(kernel, grid, block, smem, stream, 0, std::forward<Args>(args)...);
}

}  // namespace arbor::cuda
