// Warp-level tensor-core helpers (mma.sync, sm_80+), shared by the prefill attention's
// mma.sync kernel and decode attention's tensor-core steps.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>

namespace arbor::cuda {

// D = A·B + D, A 16×16 bf16 (row-major), B 16×8 bf16 ("col": k-major per column), D 16×8 fp32.
// With g = lane / 4 and t = lane % 4 (PTX ISA, mma.m16n8k16 fragments):
//   a[0] = A[g][2t..2t+1]      a[1] = A[g+8][2t..2t+1]
//   a[2] = A[g][2t+8..2t+9]    a[3] = A[g+8][2t+8..2t+9]
//   b0   = B[2t..2t+1][g]      b1   = B[2t+8..2t+9][g]
//   d[0..1] = D[g][2t..2t+1]   d[2..3] = D[g+8][2t..2t+1]
// (pairs packed lower index in the low 16 bits).
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0,
                                               uint32_t b1) {
  asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// ldmatrix.x4: lanes 8i..8i+7 give the row addresses of 8×8 matrix i (16 bytes per row);
// register i of every lane receives matrix i's elements (row lane/4, columns 2·(lane%4)+{0,1}),
// the lower column in the low half.
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
// Same, transposed: register i receives matrix i's elements (rows 2·(lane%4)+{0,1}, column
// lane/4), the lower row in the low half.
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

// The transpose of an 8 × 8 b16 matrix held one register per lane (row lane / 4, columns
// 2 (lane % 4) and + 1), in the same layout.
__device__ __forceinline__ uint32_t movmatrix_trans(uint32_t x) {
  uint32_t y;
  asm("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;\n" : "=r"(y) : "r"(x));
  return y;
}

__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<const uint32_t*>(&v);
}

}  // namespace arbor::cuda
