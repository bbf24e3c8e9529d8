// Comparison helper for the CPU op tests: fp32 results against double-precision references.
#pragma once

#include <catch2/catch.hpp>

#include <cmath>
#include <cstddef>
#include <vector>

namespace arbor::test {

// Requires |got[i] - want[i]| <= tol[i] for every i (NaN fails), reporting the first
// element that does not hold and how far off it is.
inline void require_close(const std::vector<float>& got, const std::vector<double>& want,
                          const std::vector<double>& tol) {
  REQUIRE(got.size() == want.size());
  REQUIRE(tol.size() == want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    if (!(err <= tol[i])) {
      INFO("element " << i << ": got " << got[i] << ", want " << want[i] << ", error " << err
                      << " > tolerance " << tol[i]);
      FAIL();
    }
  }
}

// Tolerance rtol * (|want| + floor) for each element: relative, with an absolute floor for
// values near zero.
inline std::vector<double> relative_tol(const std::vector<double>& want, double rtol,
                                        double floor) {
  std::vector<double> tol(want.size());
  for (size_t i = 0; i < want.size(); ++i) tol[i] = rtol * (std::fabs(want[i]) + floor);
  return tol;
}

}  // namespace arbor::test
