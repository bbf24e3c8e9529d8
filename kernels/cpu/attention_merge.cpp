// Merging partial attentions by their log-sum-exp (kernels/cpu/ops.h).
#include <algorithm>
#include <cmath>
#include <limits>

#include "kernels/cpu/ops.h"

namespace arbor::cpu {

void pack_partials(const float* o, const float* lse, size_t rows, int head_dim, float* packed) {
  const size_t d = size_t(head_dim);
  for (size_t r = 0; r < rows; ++r) {
    std::copy(o + r * d, o + (r + 1) * d, packed + r * (d + 1));
    packed[r * (d + 1) + d] = lse[r];
  }
}

void merge_packed_partials(const float* gathered, int parts, size_t rows, int head_dim, float* out,
                           float* out_lse) {
  const size_t d = size_t(head_dim), stride = d + 1;
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  for (size_t r = 0; r < rows; ++r) {
    float max_lse = kNegInf;
    for (int p = 0; p < parts; ++p)
      max_lse = std::max(max_lse, gathered[(size_t(p) * rows + r) * stride + d]);
    float* dst = out + r * d;
    std::fill(dst, dst + d, 0.0f);
    if (max_lse == kNegInf) {  // no keys anywhere
      if (out_lse) out_lse[r] = kNegInf;
      continue;
    }
    float sum = 0.0f;
    for (int p = 0; p < parts; ++p) {
      const float* row = gathered + (size_t(p) * rows + r) * stride;
      const float w = std::exp(row[d] - max_lse);  // exp(-inf) = 0 for empty parts
      sum += w;
      for (size_t i = 0; i < d; ++i) dst[i] += w * row[i];
    }
    const float inv = 1.0f / sum;  // sum >= 1: the largest part contributes exp(0)
    for (size_t i = 0; i < d; ++i) dst[i] *= inv;
    if (out_lse) out_lse[r] = max_lse + std::log(sum);
  }
}

void weight_partials(const float* o, const float* lse, const float* max_lse, size_t rows,
                     int head_dim, float* weighted) {
  const size_t d = size_t(head_dim);
  for (size_t r = 0; r < rows; ++r) {
    // max_lse = -inf only when every rank is empty; then every weight is 0.
    const float w = max_lse[r] == -std::numeric_limits<float>::infinity()
                        ? 0.0f
                        : std::exp(lse[r] - max_lse[r]);
    for (size_t i = 0; i < d; ++i) weighted[r * (d + 1) + i] = w * o[r * d + i];
    weighted[r * (d + 1) + d] = w;
  }
}

void normalize_weighted(const float* weighted, size_t rows, int head_dim, float* out) {
  const size_t d = size_t(head_dim);
  for (size_t r = 0; r < rows; ++r) {
    const float sum = weighted[r * (d + 1) + d];
    const float inv = sum > 0.0f ? 1.0f / sum : 0.0f;
    for (size_t i = 0; i < d; ++i) out[r * d + i] = weighted[r * (d + 1) + i] * inv;
  }
}

}  // namespace arbor::cpu
