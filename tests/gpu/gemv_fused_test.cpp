// The gemv's fused inputs (kernels/cuda/gemv.h) against the separate ops they replace:
// cuda::rmsnorm / add_rmsnorm into a buffer, then cuda::gemv. The fused kernel
// computes each input element with the same arithmetic in the same order (the norm's sum of
// squares in cuda::rmsnorm's thread layout), so the outputs and the new residual must match
// bit for bit (tolerance 0); the separate ops are checked against the CPU reference and HF's
// bf16 rounding in ops_test.cpp and gemm_test.cpp.
#include <catch2/catch.hpp>

#include <utility>
#include <vector>

#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/ops.h"
#include "tests/gpu/bf16_check.h"
#include "tests/test_util.h"

using arbor::cuda::bf16;
using arbor::cuda::DeviceArray;
using arbor::cuda::Stream;
using arbor::test::random_floats;
using namespace arbor::test::gpu;

namespace {

// A product's weights [n][k] as bf16 on the device.
DeviceArray<bf16> weights(int n, int k, uint64_t seed) {
  return to_device_bf16(bf16_rounded(random_floats(size_t(n) * k, seed, -0.05f, 0.05f)));
}

DeviceArray<bf16> bf16_buffer(size_t n) {
  DeviceArray<bf16> d(n);
  poison(d);
  return d;
}

}  // namespace

TEST_CASE("gemv with a fused RMSNorm gives the bits of rmsnorm / add_rmsnorm then gemv",
          "[gpu][gemm][gemv]") {
  // k covers every cuda::rmsnorm layout: 32 threads × 1 vector with a partial warp of
  // vectors (120), 256 × 1 (2048), 256 × 2 (4096, Llama-3-8B), 160 × 4 with a short last
  // thread (4104), 256 × 4 (8192, Llama-3-70B), 384 × 4 (12288), 512 × 4 (16384: the whole
  // gemv block), and the demo model's 256.
  const int m = GENERATE(1, 2, 3, 4);
  const auto nk = GENERATE(std::pair{6144, 4096}, std::pair{37, 120}, std::pair{1000, 2048},
                           std::pair{129, 4104}, std::pair{300, 8192}, std::pair{17, 12288},
                           std::pair{64, 16384}, std::pair{768, 256});
  const int n = nk.first, k = nk.second;
  const float eps = 1e-5f;
  INFO("m " << m << ", n " << n << ", k " << k);
  const bool supported = arbor::cuda::gemv_rmsnorm_supported(m, k);
  CHECK(supported == (size_t(m) * k * 2 <= 96 * 1024));
  if (!supported) return;

  const size_t rows = size_t(m) * k;
  // The residual stream is larger than a layer's output, as in a decoder.
  const auto residual = bf16_rounded(random_floats(rows, 700 + k, -4.0f, 4.0f));
  const auto x = bf16_rounded(random_floats(rows, 701 + k));
  const auto norm_w = bf16_rounded(random_floats(size_t(k), 702 + k, 0.5f, 1.5f));
  auto d_residual = to_device_bf16(residual);
  auto d_x = to_device_bf16(x);
  auto d_norm_w = to_device_bf16(norm_w);
  const DeviceArray<bf16> w = weights(n, k, 703 + n);
  Stream stream;

  SECTION("residual add, then RMSNorm") {
    // Separate: add_rmsnorm updates a copy of the residual in place, then the product.
    auto sep_residual = to_device_bf16(residual);
    auto normed = bf16_buffer(rows);
    auto want = bf16_buffer(size_t(m) * n);
    arbor::cuda::add_rmsnorm(sep_residual.data(), d_x.data(), d_norm_w.data(), m, k, eps,
                             normed.data(), stream.get());
    arbor::cuda::gemv(normed.data(), w.data(), m, n, k, want.data(), stream.get());

    auto residual_out = bf16_buffer(rows);
    auto got = bf16_buffer(size_t(m) * n);
    arbor::cuda::gemv_add_rmsnorm(d_residual.data(), d_x.data(), residual_out.data(),
                                  d_norm_w.data(), eps, w.data(), m, n, k, got.data(),
                                  stream.get());
    stream.sync();
    require_mostly_equal("fused product [m][n] vs add_rmsnorm + gemv", from_device_bf16(got),
                         from_device_bf16(want), 0.0);
    require_mostly_equal("residual_out [m][k] vs add_rmsnorm's residual",
                         from_device_bf16(residual_out), from_device_bf16(sep_residual), 0.0);
    require_mostly_equal("residual_in [m][k] is not written", from_device_bf16(d_residual),
                         residual, 0.0);
  }
  SECTION("RMSNorm alone (the first layer)") {
    auto normed = bf16_buffer(rows);
    auto want = bf16_buffer(size_t(m) * n);
    arbor::cuda::rmsnorm(d_x.data(), d_norm_w.data(), m, k, eps, normed.data(), stream.get());
    arbor::cuda::gemv(normed.data(), w.data(), m, n, k, want.data(), stream.get());

    auto got = bf16_buffer(size_t(m) * n);
    arbor::cuda::gemv_rmsnorm(d_x.data(), d_norm_w.data(), eps, w.data(), m, n, k, got.data(),
                              stream.get());
    stream.sync();
    require_mostly_equal("fused product [m][n] vs rmsnorm + gemv", from_device_bf16(got),
                         from_device_bf16(want), 0.0);
  }
}
