// Host side of the gemv and its fused inputs (kernels/cuda/gemv.h): which shapes they take and
// the argument checks, which run before anything touches a device (CI's GPU-less machine runs
// them). The kernels themselves are tested in tests/gpu/gemv_fused_test.cpp.
#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/gemv.h"

namespace {

using arbor::cuda::bf16;

// Stand-ins for device pointers: every call below is rejected before a launch, and the checks
// only look at the addresses.
bf16* at(uintptr_t address) {
  return reinterpret_cast<bf16*>(address);
}

// Throws std::invalid_argument whose message contains `what`.
template <typename F>
void require_rejected(F&& call, const std::string& what) {
  try {
    call();
  } catch (const std::invalid_argument& e) {
    INFO(e.what());
    CHECK(std::string(e.what()).find(what) != std::string::npos);
    return;
  }
  FAIL("not rejected: expected '" << what << "'");
}

}  // namespace

TEST_CASE("the fused gemv inputs take the shapes the gemv takes, norms up to 16384 wide",
          "[cuda-host][gemv]") {
  using arbor::cuda::gemv_rmsnorm_supported;
  for (int m = 1; m <= arbor::cuda::kMaxGemvRows; ++m) {
    for (int k : {8, 120, 256, 4096, 4104, 8192, 14336, 16384, 16392, 28672}) {
      INFO("m " << m << ", k " << k);
      const bool fits = size_t(m) * k * 2 <= 96 * 1024;
      CHECK(gemv_rmsnorm_supported(m, k) == (fits && k <= 16384));
    }
  }
  for (int k : {0, -8, 12, 4100}) {  // not a positive multiple of 8
    CHECK_FALSE(gemv_rmsnorm_supported(1, k));
  }
  CHECK_FALSE(gemv_rmsnorm_supported(0, 4096));
  CHECK_FALSE(gemv_rmsnorm_supported(arbor::cuda::kMaxGemvRows + 1, 4096));
  // Llama-3.1-8B's and Llama-3-70B's hidden sizes.
  for (int m : {1, 2}) {
    CHECK(gemv_rmsnorm_supported(m, 4096));
    CHECK(gemv_rmsnorm_supported(m, 8192));
  }
}

TEST_CASE("the fused gemv inputs reject bad arguments before launching", "[cuda-host][gemv]") {
  const int m = 2, n = 64, k = 256;
  // Disjoint, aligned stand-ins: [m][k] rows at 0x100000 + i · 0x10000.
  bf16 *residual = at(0x100000), *x = at(0x110000), *residual_out = at(0x120000),
       *norm_w = at(0x130000), *w = at(0x140000), *out = at(0x150000);
  const float eps = 1e-5f;
  using arbor::cuda::gemv_add_rmsnorm;
  using arbor::cuda::gemv_rmsnorm;

  auto add_norm = [&](const bf16* r_in, const bf16* xx, bf16* r_out, const bf16* nw, float e,
                      const bf16* ww, int mm, int nn, int kk, bf16* o) {
    return [=] { gemv_add_rmsnorm(r_in, xx, r_out, nw, e, ww, mm, nn, kk, o, nullptr); };
  };
  require_rejected(add_norm(residual, x, residual_out, norm_w, eps, w, 5, n, k, out),
                   "unsupported shape");
  require_rejected(add_norm(residual, x, residual_out, norm_w, eps, w, m, n, 12, out),
                   "unsupported shape");
  require_rejected(add_norm(residual, x, residual_out, norm_w, eps, w, 1, n, 16392, out),
                   "k <= 16384");
  require_rejected(add_norm(residual, x, residual_out, norm_w, eps, w, m, 0, k, out),
                   "n must be positive");
  require_rejected(add_norm(nullptr, x, residual_out, norm_w, eps, w, m, n, k, out),
                   "null pointer");
  require_rejected(add_norm(residual, x, residual_out, nullptr, eps, w, m, n, k, out),
                   "null pointer");
  require_rejected(add_norm(residual, x, residual_out, norm_w, eps, nullptr, m, n, k, out),
                   "null pointer");
  require_rejected(add_norm(residual, at(0x110002), residual_out, norm_w, eps, w, m, n, k, out),
                   "16-byte aligned");
  require_rejected(add_norm(residual, x, residual_out, norm_w, -1.0f, w, m, n, k, out), "eps");
  require_rejected(add_norm(residual, x, residual_out, norm_w,
                            std::numeric_limits<float>::quiet_NaN(), w, m, n, k, out),
                   "eps");
  // The new residual may not land where blocks still read: residual_in, x (a partial overlap
  // counts), nor may the product's output overlap any input.
  require_rejected(add_norm(residual, x, residual, norm_w, eps, w, m, n, k, out), "residual_out");
  require_rejected(add_norm(residual, x, at(0x110000 + 2 * k - 16), norm_w, eps, w, m, n, k, out),
                   "residual_out");
  require_rejected(add_norm(residual, x, norm_w, norm_w, eps, w, m, n, k, out), "residual_out");
  require_rejected(
      add_norm(residual, x, at(0x140000 + 2 * (n * k - 8)), norm_w, eps, w, m, n, k, out),
      "residual_out");
  require_rejected(add_norm(residual, x, residual_out, norm_w, eps, w, m, n, k, x), "overlaps");
  require_rejected(add_norm(residual, x, residual_out, norm_w, eps, w, m, n, k, w), "overlaps");
  require_rejected(add_norm(residual, x, residual_out, norm_w, eps, w, m, n, k, residual_out),
                   "overlaps");

  require_rejected([&] { gemv_rmsnorm(x, norm_w, eps, w, m, n, k, x, nullptr); }, "overlaps");
  require_rejected([&] { gemv_rmsnorm(x, norm_w, eps, w, m, n, 16392, out, nullptr); },
                   "k <= 16384");
  require_rejected([&] { gemv_rmsnorm(x, norm_w, INFINITY, w, m, n, k, out, nullptr); }, "eps");
  require_rejected([&] { gemv_rmsnorm(nullptr, norm_w, eps, w, m, n, k, out, nullptr); },
                   "null pointer");
}
