// Internal to kernels/cpu: the fp32 dot products that matmul and attention are built on.
//
// The compiler may not reorder a float sum on its own (no -ffast-math), so a plain
// `acc += a[i] * b[i]` loop runs one add at a time. Here the sum is split explicitly into
// kLanes partial sums (lane l takes elements i ≡ l mod kLanes), which the compiler maps onto
// SIMD registers; the lanes are added at the end. The order is fixed by the code, not the
// instruction set, so results are the same on every x86-64 machine.
#pragma once

namespace arbor::cpu::detail {

inline constexpr int kLanes = 8;

// Sum of the kLanes partial sums, then of the tail elements [k_main, k).
inline float finish(const float (&lanes)[kLanes], const float* a, const float* b, int k_main,
                    int k) {
  float acc = 0.0f;
  for (int l = 0; l < kLanes; ++l) acc += lanes[l];
  for (int i = k_main; i < k; ++i) acc += a[i] * b[i];
  return acc;
}

// sum_i a[i] * b[i] for i < k.
inline float dot(const float* a, const float* b, int k) {
  float lanes[kLanes] = {};
  const int k_main = k - k % kLanes;
  for (int i = 0; i < k_main; i += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += a[i + l] * b[i + l];
  }
  return finish(lanes, a, b, k_main, k);
}

// R × C dot products at once: out[r * ldo + c] = dot(x[r], w[c]) where row r of x starts at
// x + r * ldx and row c of w at w + c * ldw. Each loaded x value is used C times and each w
// value R times, which is what makes matmul compute-bound instead of load-bound. Every
// product is summed in the same order as dot(), so a tile and a single dot agree bit for bit.
template <int R, int C>
inline void dot_tile(const float* x, int ldx, const float* w, int ldw, int k, float* out, int ldo) {
  float lanes[R][C][kLanes] = {};
  const int k_main = k - k % kLanes;
  for (int i = 0; i < k_main; i += kLanes) {
    for (int r = 0; r < R; ++r) {
      for (int c = 0; c < C; ++c) {
        for (int l = 0; l < kLanes; ++l) lanes[r][c][l] += x[r * ldx + i + l] * w[c * ldw + i + l];
      }
    }
  }
  for (int r = 0; r < R; ++r) {
    for (int c = 0; c < C; ++c) {
      out[r * ldo + c] = finish(lanes[r][c], x + r * ldx, w + c * ldw, k_main, k);
    }
  }
}

}  // namespace arbor::cpu::detail
