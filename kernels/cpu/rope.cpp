// Rotary position embedding: the frequency table (default and llama3 scaling) and the
// rotation. Both follow Hugging Face transformers' fp32 arithmetic operation by operation,
// because the golden tests compare our logits with theirs at 1e-4: a position of a few
// thousand turns one rounding step of an angle into a visible error.
#include <cmath>
#include <numbers>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"

namespace arbor::cpu {

std::vector<float> rope_inv_freq(int head_dim, float theta, const RopeScaling& scaling) {
  if (head_dim <= 0 || head_dim % 2 != 0) {
    throw std::invalid_argument("rope_inv_freq: head_dim must be positive and even, got " +
                                std::to_string(head_dim));
  }
  // transformers' _compute_default_rope_parameters:
  //   1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
  // every step in float32 (`scalar / tensor` is reciprocal(tensor) * scalar in torch).
  const int half = head_dim / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; ++i) {
    float exponent = float(2 * i) / float(head_dim);
    inv_freq[i] = 1.0f / std::pow(theta, exponent);
  }
  if (!scaling.llama3) return inv_freq;

  // transformers' _compute_llama3_parameters, in the same fp32 operations: frequencies with
  // a wavelength longer than old_ctx / low_freq_factor are divided by `factor`, shorter than
  // old_ctx / high_freq_factor are kept, and the band between is blended linearly in
  // old_ctx / wavelength.
  if (!(scaling.factor > 0.0f) || !(scaling.high_freq_factor > scaling.low_freq_factor) ||
      !(scaling.low_freq_factor > 0.0f) || scaling.original_max_position <= 0) {
    throw std::invalid_argument("rope_inv_freq: invalid llama3 rope_scaling parameters");
  }
  const float old_ctx = float(scaling.original_max_position);
  const float low = scaling.low_freq_factor;
  const float band = float(double(scaling.high_freq_factor) - double(low));  // Python floats
  const float low_freq_wavelen = float(double(scaling.original_max_position) / low);
  const float high_freq_wavelen =
      float(double(scaling.original_max_position) / scaling.high_freq_factor);
  const float two_pi = float(2.0 * std::numbers::pi);
  for (int i = 0; i < half; ++i) {
    const float f = inv_freq[i];
    const float wavelen = (1.0f / f) * two_pi;
    if (wavelen > low_freq_wavelen) {
      inv_freq[i] = f / scaling.factor;
    } else if (!(wavelen < high_freq_wavelen)) {
      // torch CPU divides by a scalar with a true division (not a reciprocal multiply).
      const float smooth = ((1.0f / wavelen) * old_ctx - low) / band;
      inv_freq[i] = (1.0f - smooth) * f / scaling.factor + smooth * f;
    }
  }
  return inv_freq;
}

void rope(float* x, const int32_t* positions, int n_tokens, int n_heads, int head_dim,
          const float* inv_freq) {
  if (head_dim % 2 != 0) {
    throw std::invalid_argument("rope: head_dim must be even, got " + std::to_string(head_dim));
  }
  const int half = head_dim / 2;
#pragma omp parallel if (n_tokens > 4)
  {
    std::vector<float> cos_t(half), sin_t(half);
#pragma omp for schedule(static)
    for (int t = 0; t < n_tokens; ++t) {
      // As HF: the angle is rounded to fp32 first (float(pos) * inv_freq), then its cos and
      // sin are taken; computing those in double and rounding gives the correctly rounded
      // fp32 value that torch's fp32 cos/sin approximate to within an ulp.
      for (int i = 0; i < half; ++i) {
        const float angle = float(positions[t]) * inv_freq[i];
        cos_t[i] = float(std::cos(double(angle)));
        sin_t[i] = float(std::sin(double(angle)));
      }
      for (int h = 0; h < n_heads; ++h) {
        float* v = x + (size_t(t) * n_heads + h) * head_dim;
        for (int i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          v[i] = a * cos_t[i] - b * sin_t[i];
          v[i + half] = b * cos_t[i] + a * sin_t[i];
        }
      }
    }
  }
}

}  // namespace arbor::cpu
