// Hopper warpgroup matrix multiply-accumulate (wgmma, sm_90a only) for the prefill attention:
// shared-memory matrix descriptors for the 128-byte swizzled layout, the fence / commit /
// wait protocol, and the three instruction shapes the kernel issues.
//
// Shared-memory layout of a [rows][cols] bf16 tile (the "canonical" 128B-swizzle layout):
// the columns are cut into slabs of 64 (128 bytes per row); slab s holds rows × 128 bytes
// from s · rows · 128; inside a slab row r starts at r · 128 and its 16-byte chunk c lies at
// chunk c ^ (r % 8). Every tile starts at a multiple of 1024 bytes (the swizzle repeats
// every 8 rows and the hardware applies it to address bits 4-6 from bits 7-9).
//
// As the K-major operand (Q as A, K as B: rows are M or N, columns are K) a descriptor
// names one 16-column step inside a slab (start + 32 bytes per step); 8-row groups are
// 1024 bytes apart (stride byte offset). As the MN-major operand (V as B with the
// transpose bit: rows are K = keys, columns are N = head dims) 8-key groups are 1024
// bytes apart (stride byte offset) and 64-column slabs rows · 128 bytes apart (leading
// byte offset). PTX ISA, "Matrix Descriptor Format" and "Shared Memory Matrix Layout".
#pragma once

#include <cstdint>

namespace arbor::cuda::wgmma {

// Byte offset of 16-byte chunk `chunk` (of cols / 8) of row `row` in a swizzled tile.
__device__ __forceinline__ uint32_t swizzled_offset(int rows, int row, int chunk) {
  return uint32_t((chunk >> 3) * rows * 128 + row * 128 + (((chunk & 7) ^ (row & 7)) << 4));
}

// Descriptor of a 128B-swizzled operand at shared address `addr` (bytes).
__device__ __forceinline__ uint64_t descriptor(uint32_t addr, uint32_t leading_bytes,
                                               uint32_t stride_bytes) {
  uint64_t d = (addr & 0x3FFFFu) >> 4;
  d |= uint64_t((leading_bytes >> 4) & 0x3FFFu) << 16;
  d |= uint64_t((stride_bytes >> 4) & 0x3FFFu) << 32;
  d |= uint64_t(1) << 62;  // layout type 1: 128-byte swizzle
  return d;
}

// Orders this thread's earlier register and shared-memory accesses before the wgmma
// that follows (required before the first wgmma that reads or accumulates registers
// written since the last wait).
__device__ __forceinline__ void fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Waits until at most N committed groups are still running.
template <int N>
__device__ __forceinline__ void wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// The asm statements above name no registers, so the compiler may move ordinary reads and
// writes of accumulator or fragment registers across them (a read of D hoisted above the
// wait that makes it valid). An empty asm that "modifies" each register pins those accesses
// on their side of it; called around fence() and after each wait() on every register array
// an in-flight wgmma reads or writes.
template <int N>
__device__ __forceinline__ void fence_operands(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}
// The same for a register A operand (packed bf16 pairs, [steps][4]): kept in its registers
// until here, so nothing else is placed in them while a wgmma reading them is in flight.
template <int N>
__device__ __forceinline__ void fence_operands(uint32_t (&r)[N][4]) {
#pragma unroll
  for (int i = 0; i < N; ++i) {
#pragma unroll
    for (int e = 0; e < 4; ++e) asm volatile("" : "+r"(r[i][e])::"memory");
  }
}

// Shared memory written through the generic proxy (ordinary stores, cp.async) becomes
// visible to wgmma, which reads through the async proxy, after this fence in each writing
// thread and a barrier.
__device__ __forceinline__ void fence_shared_for_async_proxy() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// The register operands below are fp32 accumulators in the wgmma D layout: thread t of the
// warpgroup (warp w = t / 32, g = t % 32 / 4, q = t % 4) holds, for each 8-column group j,
// d[4j + 0..1] = D[16w + g][8j + 2q + 0..1] and d[4j + 2..3] = D[16w + g + 8][same columns].
// A register A fragment (a[0..3], bf16 pairs) holds for its 16 columns A[16w + g][2q..],
// A[16w + g + 8][2q..], A[16w + g][2q + 8..], A[16w + g + 8][2q + 8..]: the D layout of two
// 8-column groups, so an fp32 accumulator packs into the next product's A without shuffles.

// D (64 x 128) = A (64 x 16, shared, K-major) · B (16 x 128, shared, K-major), plus D when
// `accumulate`.
__device__ __forceinline__ void m64n128k16_ss(float (&d)[64], uint64_t desc_a, uint64_t desc_b,
                                              bool accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
      "%64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "l"(desc_a), "l"(desc_b), "r"(int(accumulate)));
}

// D (64 x 128) += A (64 x 16, registers) · B (16 x 128, shared, MN-major: transpose bit set).
__device__ __forceinline__ void m64n128k16_rs_mn(float (&d)[64], const uint32_t (&a)[4],
                                                 uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,"
      "%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,"
      "%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, "
      "{%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]),
        "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]),
        "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
        "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]),
        "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}

// D (64 x 64) += A (64 x 16, registers) · B (16 x 64, shared, MN-major: transpose bit set).
__device__ __forceinline__ void m64n64k16_rs_mn(float (&d)[32], const uint32_t (&a)[4],
                                                uint64_t desc_b) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {"
      "%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,"
      "%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, "
      "{%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]),
        "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]),
        "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]),
        "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]),
        "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(1));
}

}  // namespace arbor::cuda::wgmma
