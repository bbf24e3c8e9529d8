// embedding, rmsnorm, add_rmsnorm and silu_mul against double-precision references.
#include <catch2/catch.hpp>

#include <cmath>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/check.h"
#include "tests/test_util.h"

using arbor::test::random_floats;
using arbor::test::relative_tol;
using arbor::test::require_close;

namespace {

// rmsnorm of each row in double: x / sqrt(mean(x²) + eps) * weight.
std::vector<double> rmsnorm_ref(const std::vector<float>& x, const std::vector<float>& w, int rows,
                                int dim, double eps) {
  std::vector<double> out(x.size());
  for (int r = 0; r < rows; ++r) {
    double sum_sq = 0.0;
    for (int i = 0; i < dim; ++i) sum_sq += double(x[r * dim + i]) * x[r * dim + i];
    const double inv_rms = 1.0 / std::sqrt(sum_sq / dim + eps);
    for (int i = 0; i < dim; ++i) out[r * dim + i] = x[r * dim + i] * inv_rms * w[i];
  }
  return out;
}

// rmsnorm in fp32 takes a sum of squares (relative error ≲ dim·2⁻²⁴ in the worst case, far
// less for a blocked sum), a sqrt and a division, then two multiplies: every output is
// within a few 1e-7 of the exact value relative to itself. 1e-5 leaves room while still
// catching a wrong eps placement or a wrong mean (errors of 1e-3 and more).
constexpr double kNormRtol = 1e-5;

}  // namespace

TEST_CASE("embedding copies the rows of the ids", "[kernels][embedding]") {
  const int vocab = 11, hidden = 7;
  const auto table = random_floats(size_t(vocab) * hidden, 1);
  const std::vector<int32_t> ids = {0, 10, 3, 3, 7};
  std::vector<float> out(ids.size() * hidden, -99.0f);
  arbor::cpu::embedding(table.data(), ids.data(), int(ids.size()), hidden, out.data());
  for (size_t t = 0; t < ids.size(); ++t) {
    for (int i = 0; i < hidden; ++i) REQUIRE(out[t * hidden + i] == table[ids[t] * hidden + i]);
  }
}

TEST_CASE("rmsnorm matches a double reference", "[kernels][rmsnorm]") {
  const int dim = GENERATE(1, 5, 64, 257);
  const int rows = 37;  // more than one parallel task
  const float eps = 1e-5f;
  auto x = random_floats(size_t(rows) * dim, 10 + dim, -2.0f, 2.0f);
  // Row 0: all zeros (eps keeps it finite); row 1: so small that eps dominates the mean.
  for (int i = 0; i < dim; ++i) {
    x[i] = 0.0f;
    x[dim + i] *= 1e-4f;
  }
  const auto w = random_floats(size_t(dim), 20 + dim, 0.5f, 1.5f);
  std::vector<float> out(x.size());
  arbor::cpu::rmsnorm(x.data(), w.data(), rows, dim, eps, out.data());
  const auto want = rmsnorm_ref(x, w, rows, dim, eps);
  require_close(out, want, relative_tol(want, kNormRtol, 1e-6));

  SECTION("in place (out aliases x)") {
    auto y = x;
    arbor::cpu::rmsnorm(y.data(), w.data(), rows, dim, eps, y.data());
    REQUIRE(y == out);
  }
}

TEST_CASE("add_rmsnorm adds the residual and normalizes the sum", "[kernels][rmsnorm]") {
  const int dim = GENERATE(3, 256);
  const int rows = 20;
  const float eps = 1e-6f;
  const auto x0 = random_floats(size_t(rows) * dim, 30 + dim);
  const auto y = random_floats(size_t(rows) * dim, 40 + dim);
  const auto w = random_floats(size_t(dim), 50 + dim, 0.5f, 1.5f);
  auto x = x0;
  std::vector<float> out(x.size());
  arbor::cpu::add_rmsnorm(x.data(), y.data(), w.data(), rows, dim, eps, out.data());
  for (size_t i = 0; i < x.size(); ++i) REQUIRE(x[i] == x0[i] + y[i]);  // one fp32 add
  const auto want = rmsnorm_ref(x, w, rows, dim, eps);
  require_close(out, want, relative_tol(want, kNormRtol, 1e-6));
}

TEST_CASE("silu_mul gates the up half with silu of the gate half", "[kernels][silu_mul]") {
  const int dim = GENERATE(1, 9, 128);
  const int rows = 18;
  auto gate_up = random_floats(size_t(rows) * 2 * dim, 60 + dim, -6.0f, 6.0f);
  // Saturated gates must give 0 and the identity, not NaN.
  gate_up[0] = -200.0f;
  gate_up[2 * dim] = 200.0f;
  std::vector<float> out(size_t(rows) * dim);
  arbor::cpu::silu_mul(gate_up.data(), rows, dim, out.data());
  std::vector<double> want(out.size());
  for (int r = 0; r < rows; ++r) {
    for (int i = 0; i < dim; ++i) {
      const double g = gate_up[size_t(r) * 2 * dim + i], u = gate_up[size_t(r) * 2 * dim + dim + i];
      want[size_t(r) * dim + i] = g / (1.0 + std::exp(-g)) * u;
    }
  }
  // exp, add, divide, multiply in fp32: a few ulps relative to each output.
  require_close(out, want, relative_tol(want, 1e-5, 1e-7));
}
