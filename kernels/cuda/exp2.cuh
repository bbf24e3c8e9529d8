// 2^x for the online softmax of both attention kernels (decode_attention.cu,
// prefill_attention.cu), which fold the 1/sqrt(d) scale and log2(e) into their scores so that
// one ex2 per probability is all the exponentiation they do.
#pragma once

namespace arbor::cuda {

// 2^x by the special-function unit (ex2.approx.ftz: approximate, denormals flushed). Exactly +0
// for x = -inf, which the masked scores and the first rescale of an empty state rely on.
__device__ __forceinline__ float fast_exp2(float x) {
  float r;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(r) : "f"(x));
  return r;
}

}  // namespace arbor::cuda
