// Helpers for the GPU op tests: moving bf16 data between host floats and the device,
// poisoning outputs, and comparisons that report the first failing element.
#pragma once

#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/device_buffer.h"

namespace arbor::test::gpu {

using cuda::bf16;

inline float bf16_round(float x) {
  return cuda::bf16_bits_to_float(cuda::float_to_bf16_bits(x));
}

inline std::vector<float> bf16_rounded(std::vector<float> v) {
  cuda::round_to_bf16(v);
  return v;
}

// A device copy of `v` (values rounded to bf16). Synchronous.
inline cuda::DeviceArray<bf16> to_device_bf16(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = cuda::float_to_bf16_bits(v[i]);
  cuda::DeviceArray<bf16> d(v.size());
  CUDA_CHECK(cudaMemcpy(d.data(), bits.data(), bits.size() * 2, cudaMemcpyHostToDevice));
  return d;
}

template <typename T>
cuda::DeviceArray<T> to_device(const std::vector<T>& v) {
  cuda::DeviceArray<T> d(v.size());
  CUDA_CHECK(cudaMemcpy(d.data(), v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice));
  return d;
}

// n bf16 values at `p` as floats. Synchronous (waits for all device work first).
inline std::vector<float> from_device_bf16(const bf16* p, size_t n) {
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<uint16_t> bits(n);
  CUDA_CHECK(cudaMemcpy(bits.data(), p, n * 2, cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = cuda::bf16_bits_to_float(bits[i]);
  return out;
}
inline std::vector<float> from_device_bf16(const cuda::DeviceArray<bf16>& d) {
  return from_device_bf16(d.data(), d.size());
}

template <typename T>
std::vector<T> from_device(const T* p, size_t n) {
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<T> out(n);
  CUDA_CHECK(cudaMemcpy(out.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return out;
}

// Fills with all-one bytes: NaN as bf16 and as fp32, so an element a kernel should have
// written but did not shows up as NaN.
template <typename T>
void poison(cuda::DeviceArray<T>& d) {
  CUDA_CHECK(cudaMemset(d.data(), 0xff, d.bytes()));
}

// Requires, for every i: want[i] NaN ⇒ got[i] NaN (an element that must stay untouched,
// e.g. a poisoned cache slot); otherwise |got[i] - want[i]| <= tol[i] (NaN fails). Reports
// how many failed and the first.
inline void require_within(const std::string& what, const std::vector<float>& got,
                           const std::vector<float>& want, const std::vector<double>& tol) {
  REQUIRE(got.size() == want.size());
  REQUIRE(tol.size() == want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool ok = std::isnan(want[i]) ? std::isnan(got[i])
                                        : std::fabs(double(got[i]) - double(want[i])) <= tol[i];
    if (!ok && bad++ == 0) first = i;
  }
  if (bad) {
    std::ostringstream msg;
    msg << what << ": " << bad << " of " << got.size() << " elements out of tolerance; first at "
        << first << ": got " << got[first] << ", want " << want[first] << ", |diff| "
        << std::fabs(double(got[first]) - double(want[first])) << " > tol " << tol[first];
    FAIL(msg.str());
  }
}

// Requires got[i] == want[i] (both NaN counts as equal) for all but at most
// max(2, max_fraction * n) elements. With max_fraction = 0: bit-exact up to the sign of zero.
inline void require_mostly_equal(const std::string& what, const std::vector<float>& got,
                                 const std::vector<float>& want, double max_fraction) {
  REQUIRE(got.size() == want.size());
  size_t bad = 0, first = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const bool ok = got[i] == want[i] || (std::isnan(got[i]) && std::isnan(want[i]));
    if (!ok && bad++ == 0) first = i;
  }
  // A nonzero fraction also allows 2 elements, so tiny arrays tolerate one rare flip.
  const double allowed = max_fraction > 0 ? std::max(2.0, max_fraction * double(got.size())) : 0.0;
  if (double(bad) > allowed) {
    std::ostringstream msg;
    msg << what << ": " << bad << " of " << got.size() << " elements differ (allowed "
        << size_t(allowed) << "); first at " << first << ": got " << got[first] << ", want "
        << want[first];
    FAIL(msg.str());
  }
}

// ‖got - want‖₂ / ‖want‖₂.
inline double relative_l2(const std::vector<float>& got, const std::vector<float>& want) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double d = double(got[i]) - double(want[i]);
    num += d * d;
    den += double(want[i]) * double(want[i]);
  }
  return std::sqrt(num / den);
}

}  // namespace arbor::test::gpu
