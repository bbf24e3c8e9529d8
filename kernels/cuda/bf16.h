// The element type of activations, weights and the KV cache on the GPU.
#pragma once

#include <cuda_bf16.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace arbor::cuda {

using bf16 = __nv_bfloat16;

// Host-side conversions, round-to-nearest-even, for tests and weight upload.
inline uint16_t float_to_bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // quiet NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float bf16_bits_to_float(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
// Rounds every value to the nearest bf16 (the values a bf16 tensor can hold).
inline void round_to_bf16(std::vector<float>& v) {
  for (float& x : v) x = bf16_bits_to_float(float_to_bf16_bits(x));
}

}  // namespace arbor::cuda
