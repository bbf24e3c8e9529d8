// rope_inv_freq (default and llama3 scaling) and rope against closed forms in double.
#include <catch2/catch.hpp>

#include <cmath>
#include <numbers>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/check.h"
#include "tests/test_util.h"

using arbor::cpu::RopeScaling;
using arbor::test::random_floats;
using arbor::test::relative_tol;
using arbor::test::require_close;

namespace {

std::vector<double> default_inv_freq(int head_dim, double theta) {
  std::vector<double> f(size_t(head_dim / 2));
  for (int i = 0; i < head_dim / 2; ++i) f[i] = std::pow(theta, -2.0 * i / head_dim);
  return f;
}

}  // namespace

TEST_CASE("rope_inv_freq without scaling is theta^(-2i/d)", "[kernels][rope]") {
  const int head_dim = GENERATE(8, 64, 128);
  const double theta = GENERATE(10000.0, 500000.0);
  const auto got = arbor::cpu::rope_inv_freq(head_dim, float(theta), RopeScaling{});
  const auto want = default_inv_freq(head_dim, theta);
  REQUIRE(got.size() == want.size());
  REQUIRE(got[0] == 1.0f);
  // fp32 pow and reciprocal: a couple of ulps (2.4e-7 relative); 1e-6 is a few ulps.
  require_close(got, want, relative_tol(want, 1e-6, 0.0));
  REQUIRE_THROWS_AS(arbor::cpu::rope_inv_freq(7, 10000.0f, RopeScaling{}), std::invalid_argument);
}

TEST_CASE("rope_inv_freq with llama3 scaling matches Llama-3.1's frequencies", "[kernels][rope]") {
  // Llama-3.1-8B: head_dim 128, theta 500000, factor 8, low 1, high 4, original 8192.
  const int head_dim = 128;
  const double theta = 500000.0, factor = 8.0, low = 1.0, high = 4.0, old_ctx = 8192.0;
  RopeScaling s;
  s.llama3 = true;
  s.factor = float(factor);
  s.low_freq_factor = float(low);
  s.high_freq_factor = float(high);
  s.original_max_position = int(old_ctx);
  const auto got = arbor::cpu::rope_inv_freq(head_dim, float(theta), s);
  const auto plain = arbor::cpu::rope_inv_freq(head_dim, float(theta), RopeScaling{});
  REQUIRE(got.size() == 64);

  // Bands by hand: wavelength 2π·500000^(i/64) is below 8192/4 = 2048 for i <= 28 (kept),
  // above 8192/1 for i >= 35 (divided by 8), and in between for i = 29..34 (blended).
  for (int i = 0; i <= 28; ++i) REQUIRE(got[i] == plain[i]);
  for (int i = 29; i <= 34; ++i) {
    REQUIRE(got[i] < plain[i]);
    REQUIRE(got[i] > plain[i] / 8.0f);
  }
  for (int i = 35; i < 64; ++i) REQUIRE(got[i] == plain[i] / 8.0f);  // exact: power of two

  // The whole table against the formula evaluated in double.
  std::vector<double> want = default_inv_freq(head_dim, theta);
  for (double& f : want) {
    const double wavelen = 2.0 * std::numbers::pi / f;
    if (wavelen > old_ctx / low) {
      f /= factor;
    } else if (wavelen >= old_ctx / high) {
      const double smooth = (old_ctx / wavelen - low) / (high - low);
      f = (1.0 - smooth) * f / factor + smooth * f;
    }
  }
  // A handful of fp32 steps; the blend's (old_ctx / wavelen - 1) loses at most a few ulps of
  // 4 against a result of at least f/8, so ~2e-6 relative at worst.
  require_close(got, want, relative_tol(want, 1e-5, 0.0));
  // A blended value by hand, i = 32: wavelen = 2π·500000^(1/2) ≈ 4442.88, smooth =
  // (8192/4442.88 − 1)/3 ≈ 0.281283, f = 500000^(−1/2) ≈ 1.414214e-3,
  // (1 − smooth)·f/8 + smooth·f ≈ 5.24846e-4.
  REQUIRE(got[32] == Approx(5.24846e-4).epsilon(1e-5));
}

TEST_CASE("rope rotates halves by position times frequency", "[kernels][rope]") {
  const int head_dim = GENERATE(8, 64, 128);
  const int n_heads = 3;
  // Large positions check that the angle is rounded to fp32 before cos/sin, as HF does: an
  // angle kept in double would differ by up to ~2.4e-4 at position 8000.
  const std::vector<int32_t> positions = {0, 1, 2, 17, 511, 4095, 8000, 131071};
  const int n_tokens = int(positions.size());
  const auto inv_freq = arbor::cpu::rope_inv_freq(head_dim, 500000.0f, RopeScaling{});
  const auto x0 = random_floats(size_t(n_tokens) * n_heads * head_dim, 300 + head_dim);
  auto x = x0;
  arbor::cpu::rope(x.data(), positions.data(), n_tokens, n_heads, head_dim, inv_freq.data());

  const int half = head_dim / 2;
  std::vector<double> want(x.size());
  for (int t = 0; t < n_tokens; ++t) {
    for (int h = 0; h < n_heads; ++h) {
      const size_t base = (size_t(t) * n_heads + h) * head_dim;
      for (int i = 0; i < half; ++i) {
        const double angle = double(float(positions[t]) * inv_freq[i]);  // fp32 angle
        const double a = x0[base + i], b = x0[base + i + half];
        want[base + i] = a * std::cos(angle) - b * std::sin(angle);
        want[base + i + half] = b * std::cos(angle) + a * std::sin(angle);
      }
    }
  }
  // |x| <= 1: rounding cos/sin to fp32 and two products and a sum in fp32 err by ~2e-7.
  std::vector<double> tol(want.size(), 1e-6);
  require_close(x, want, tol);
  // Position 0 is the identity.
  for (int i = 0; i < n_heads * head_dim; ++i) REQUIRE(x[i] == x0[i]);
}
