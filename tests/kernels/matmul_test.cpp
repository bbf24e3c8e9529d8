// matmul (y = x · Wᵀ) against a double-precision reference.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/check.h"
#include "tests/test_util.h"

using arbor::test::random_floats;
using arbor::test::require_close;

TEST_CASE("matmul matches a double reference", "[kernels][matmul]") {
  // Decode (m = 1), the demo model's shapes, and odd sizes that leave partial register tiles
  // and a k tail in every direction.
  const auto [m, n, k] = GENERATE(table<int, int, int>({{1, 768, 256},
                                                        {1, 7, 5},
                                                        {1, 1, 1},
                                                        {2, 3, 8},
                                                        {3, 5, 17},
                                                        {64, 96, 256},
                                                        {65, 70, 19},
                                                        {130, 33, 9}}));
  CAPTURE(m, n, k);
  const auto x = random_floats(size_t(m) * k, 100 + m * 7 + k);
  const auto w = random_floats(size_t(n) * k, 200 + n * 3 + k);
  std::vector<float> out(size_t(m) * n, NAN);
  arbor::cpu::matmul(x.data(), w.data(), m, n, k, out.data());

  std::vector<double> want(out.size()), tol(out.size());
  for (int r = 0; r < m; ++r) {
    for (int c = 0; c < n; ++c) {
      double sum = 0.0, magnitude = 0.0;
      for (int i = 0; i < k; ++i) {
        const double p = double(x[size_t(r) * k + i]) * w[size_t(c) * k + i];
        sum += p;
        magnitude += std::fabs(p);
      }
      want[size_t(r) * n + c] = sum;
      // An fp32 sum of k products errs by at most ~k·2⁻²⁴·Σ|products| (about 1.5e-5·Σ at
      // k = 256) and typically by √k·2⁻²⁴·Σ ≈ 1e-6·Σ; the sum itself can cancel to ~0, so
      // the bound is relative to Σ|products|. 1e-5 still fails for one lost or doubled
      // product (≈ Σ/k ≥ 4e-3·Σ).
      tol[size_t(r) * n + c] = 1e-5 * magnitude + 1e-7;
    }
  }
  require_close(out, want, tol);

  SECTION("each row's result is independent of the batch it is computed in") {
    for (int r = 0; r < m; ++r) {
      std::vector<float> row(static_cast<size_t>(n));
      arbor::cpu::matmul(x.data() + size_t(r) * k, w.data(), 1, n, k, row.data());
      for (int c = 0; c < n; ++c) REQUIRE(row[c] == out[size_t(r) * n + c]);
    }
  }
}

TEST_CASE("matmul with k = 0 writes zeros and m = 0 writes nothing", "[kernels][matmul]") {
  std::vector<float> out(6, NAN);
  const float dummy = 1.0f;
  arbor::cpu::matmul(&dummy, &dummy, 2, 3, 0, out.data());
  for (float v : out) REQUIRE(v == 0.0f);
  std::vector<float> untouched(3, 5.0f);
  arbor::cpu::matmul(&dummy, &dummy, 0, 3, 1, untouched.data());
  for (float v : untouched) REQUIRE(v == 5.0f);
}
