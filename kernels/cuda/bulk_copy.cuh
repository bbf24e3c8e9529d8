// Hopper bulk copies (the TMA engine's 1-D form) from global into shared memory, completed
// on a shared-memory mbarrier. One thread issues a copy of any multiple of 16 bytes; the
// bytes travel without registers or per-thread load instructions, so a block can keep tens
// of kilobytes in flight while its warps compute on what already arrived.
//
// Protocol per buffer: mbar_init(bar, 1) once (then fence_mbar_init() and a block barrier);
// per fill, one thread calls mbar_arrive_expect_tx(bar, total bytes) and the copies name the
// same barrier; consumers mbar_wait(bar, phase & 1), where phase counts the fills so far.
// Before a buffer is refilled, every consumer must be done reading it (a block barrier).
#pragma once

#include <cstdint>

namespace arbor::cuda {

__device__ __forceinline__ uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t arrivals) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(shared_address(bar)), "r"(arrivals)
               : "memory");
}

// Makes initialized barriers visible to the other threads and to the copy engine.
__device__ __forceinline__ void fence_mbar_init() {
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// The one arrival of a fill, announcing the bytes its copies will deliver.
__device__ __forceinline__ void mbar_arrive_expect_tx(uint64_t* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(shared_address(bar)),
               "r"(bytes)
               : "memory");
}

// Blocks until the barrier's phase with this parity has completed (all bytes arrived).
// kClusterScope: with cluster-scope acquire, for bytes other blocks of the cluster stored
// (st.async); the default acquires at CTA scope.
template <bool kClusterScope = false>
__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  const uint32_t addr = shared_address(bar);
  uint32_t done = 0;
  do {
    if constexpr (kClusterScope) {
      asm volatile(
          "{\n"
          ".reg .pred p;\n"
          "mbarrier.try_wait.parity.acquire.cluster.shared::cta.b64 p, [%1], %2;\n"
          "selp.u32 %0, 1, 0, p;\n"
          "}\n"
          : "=r"(done)
          : "r"(addr), "r"(parity)
          : "memory");
    } else {
      asm volatile(
          "{\n"
          ".reg .pred p;\n"
          "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
          "selp.u32 %0, 1, 0, p;\n"
          "}\n"
          : "=r"(done)
          : "r"(addr), "r"(parity)
          : "memory");
    }
  } while (!done);
}

// `bytes` (a multiple of 16; both addresses 16-byte aligned) from global to shared memory,
// counted on `bar` when they land.
__device__ __forceinline__ void bulk_copy_to_shared(void* dst, const void* src, uint32_t bytes,
                                                    uint64_t* bar) {
  asm volatile(
      "cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::
          "r"(shared_address(dst)),
      "l"(src), "r"(bytes), "r"(shared_address(bar))
      : "memory");
}

// Orders this thread's earlier shared-memory accesses (generic proxy) before the bulk copies
// it issues next (async proxy): a buffer is read, then refilled.
__device__ __forceinline__ void fence_proxy_async_shared() {
  asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}

// One arrival (release: this thread's earlier writes are visible to whoever waits on the
// phase this arrival completes).
__device__ __forceinline__ void mbar_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];" ::"r"(shared_address(bar))
               : "memory");
}

// This thread's arrival, made when all of its earlier cp.async copies have landed (without
// waiting for them here); the barrier's expected count must include it (.noinc).
__device__ __forceinline__ void cp_async_mbar_arrive_noinc(uint64_t* bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];" ::"r"(shared_address(bar))
               : "memory");
}

}  // namespace arbor::cuda
