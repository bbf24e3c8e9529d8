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

TEST_CASE("the paired gemv outputs take up to 2 rows and reject bad arguments before launching",
          "[cuda-host][gemv]") {
  using arbor::cuda::gemv_paired_supported;
  for (int m = 1; m <= arbor::cuda::kMaxGemvRows; ++m) {
    for (int k : {8, 256, 4096, 16384, 16392, 28672}) {
      INFO("m " << m << ", k " << k);
      const bool fits = m <= 2 && size_t(m) * k * 2 <= 96 * 1024;
      CHECK(gemv_paired_supported(m, k, false) == fits);
      CHECK(gemv_paired_supported(m, k, true) == (fits && k <= 16384));
    }
  }
  CHECK_FALSE(gemv_paired_supported(1, 12, false));

  const int m = 2, dim = 32, k = 256;
  bf16 *residual = at(0x100000), *x = at(0x110000), *residual_out = at(0x120000),
       *norm_w = at(0x130000), *w = at(0x140000), *out = at(0x180000);
  arbor::cuda::GemvInputSpec in;
  in.x = x;
  in.norm_weight = norm_w;
  in.eps = 1e-5f;
  in.residual_in = residual;
  in.residual_out = residual_out;
  using arbor::cuda::gemv_silu_mul;
  auto silu = [&](arbor::cuda::GemvInputSpec spec, int mm, int d, const bf16* ww, bf16* o) {
    return [=] { gemv_silu_mul(spec, ww, mm, d, k, o, nullptr); };
  };
  require_rejected(silu(in, 3, dim, w, out), "unsupported shape");
  require_rejected(silu(in, m, 0, w, out), "dim must be positive");
  require_rejected(silu(in, m, dim, nullptr, out), "null pointer");
  require_rejected(silu(in, m, dim, w, nullptr), "null pointer");
  require_rejected(silu(in, m, dim, at(0x140008), out), "16-byte aligned");
  require_rejected(silu(in, m, dim, w, x), "out overlaps an input");
  require_rejected(silu(in, m, dim, w, at(0x140000 + 2 * (2 * dim * k - 8))), "overlaps");
  require_rejected(silu(in, m, dim, w, residual_out), "residual_out");
  auto bad = in;
  bad.residual_out = nullptr;
  require_rejected(silu(bad, m, dim, w, out), "go together");
  bad = in;
  bad.norm_weight = nullptr;
  require_rejected(silu(bad, m, dim, w, out), "needs norm_weight");
  bad = in;
  bad.eps = -1.0f;
  require_rejected(silu(bad, m, dim, w, out), "eps");
  bad = in;
  bad.residual_out = x;
  require_rejected(silu(bad, m, dim, w, out), "residual_out overlaps an input");
  bad = in;
  bad.x = at(0x110004);
  require_rejected(silu(bad, m, dim, w, out), "16-byte aligned");

  // RoPE: rope_kv_write's own rules, and one token per input row.
  arbor::cuda::RopeKvWriteParams rope;
  rope.positions = reinterpret_cast<const int32_t*>(0x200000);
  rope.slot_mapping = reinterpret_cast<const int32_t*>(0x210000);
  rope.inv_freq = reinterpret_cast<const float*>(0x220000);
  rope.n_tokens = m;
  rope.num_q_heads = 2;
  rope.num_kv_heads = 1;
  rope.head_dim = 64;
  rope.block_size = 16;
  rope.num_blocks = 4;
  rope.q_out = out;
  rope.k_cache = at(0x300000);
  rope.v_cache = at(0x400000);
  using arbor::cuda::gemv_rope_kv_write;
  auto rope_call = [&](arbor::cuda::RopeKvWriteParams r, int mm) {
    return [=] { gemv_rope_kv_write(in, w, mm, k, r, nullptr); };
  };
  auto r = rope;
  r.n_tokens = 1;
  require_rejected(rope_call(r, m), "n_tokens must equal m");
  require_rejected(rope_call(rope, 3), "n_tokens must equal m");
  r = rope;
  r.head_dim = 63;
  require_rejected(rope_call(r, m), "head_dim must be positive and even");
  r = rope;
  r.num_kv_heads = 0;
  require_rejected(rope_call(r, m), "head counts must be positive");
  r = rope;
  r.block_size = 0;
  require_rejected(rope_call(r, m), "block_size must be positive");
  r = rope;
  r.num_blocks = -1;
  require_rejected(rope_call(r, m), "num_blocks must be >= 0");
  for (int which = 0; which < 6; ++which) {
    r = rope;
    if (which == 0) r.positions = nullptr;
    if (which == 1) r.slot_mapping = nullptr;
    if (which == 2) r.inv_freq = nullptr;
    if (which == 3) r.q_out = nullptr;
    if (which == 4) r.k_cache = nullptr;
    if (which == 5) r.v_cache = nullptr;
    INFO("null operand " << which);
    require_rejected(rope_call(r, m), "null pointer");
  }
  r = rope;
  r.q_out = w;  // q would overwrite the weights
  require_rejected(rope_call(r, m), "out overlaps an input");
}
