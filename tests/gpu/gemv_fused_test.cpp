// The gemv's fused inputs and paired outputs (kernels/cuda/gemv.h) against the separate
// ops they replace: cuda::rmsnorm / add_rmsnorm into a buffer, then cuda::gemv, then
// cuda::silu_mul or cuda::rope_kv_write. The fused kernels compute each element with the
// same arithmetic in the same order (the norm's sum of squares in cuda::rmsnorm's thread
// layout, the product's bf16 rounding before the op after it), so the outputs and the new
// residual must match bit for bit (tolerance 0); the separate ops are checked against the CPU
// reference and HF's bf16 rounding in ops_test.cpp and gemm_test.cpp.
#include <catch2/catch.hpp>

#include <algorithm>
#include <numeric>
#include <random>
#include <utility>
#include <vector>

#include "kernels/cpu/ops.h"

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

// The three inputs a paired product takes, with their operands on the device, and the
// separate ops that compute the same input into `normed` (the reference path).
enum class InputKind { kPlain, kRmsNorm, kAddRmsNorm };
const char* to_string(InputKind kind) {
  return kind == InputKind::kPlain     ? "plain"
         : kind == InputKind::kRmsNorm ? "rmsnorm"
                                       : "add_rmsnorm";
}
struct PairedInput {
  InputKind kind;
  int m, k;
  std::vector<float> residual;
  DeviceArray<bf16> d_residual, d_x, d_norm_w, residual_out, sep_residual, normed;
  static constexpr float kEps = 1e-5f;

  PairedInput(InputKind kind_, int m_, int k_, uint64_t seed) : kind(kind_), m(m_), k(k_) {
    const size_t rows = size_t(m) * k;
    residual = bf16_rounded(random_floats(rows, seed, -4.0f, 4.0f));
    d_residual = to_device_bf16(residual);
    sep_residual = to_device_bf16(residual);
    d_x = to_device_bf16(bf16_rounded(random_floats(rows, seed + 1)));
    d_norm_w = to_device_bf16(bf16_rounded(random_floats(size_t(k), seed + 2, 0.5f, 1.5f)));
    residual_out = bf16_buffer(rows);
    normed = bf16_buffer(rows);
  }
  // The fused entry points' view of it.
  arbor::cuda::GemvInputSpec spec() {
    arbor::cuda::GemvInputSpec in;
    in.x = d_x.data();
    if (kind != InputKind::kPlain) {
      in.norm_weight = d_norm_w.data();
      in.eps = kEps;
    }
    if (kind == InputKind::kAddRmsNorm) {
      in.residual_in = d_residual.data();
      in.residual_out = residual_out.data();
    }
    return in;
  }
  // The separate ops: the product's input (x itself, or the norm's output in `normed`).
  const bf16* separate(cudaStream_t s) {
    if (kind == InputKind::kPlain) return d_x.data();
    if (kind == InputKind::kRmsNorm) {
      arbor::cuda::rmsnorm(d_x.data(), d_norm_w.data(), m, k, kEps, normed.data(), s);
    } else {
      arbor::cuda::add_rmsnorm(sep_residual.data(), d_x.data(), d_norm_w.data(), m, k, kEps,
                               normed.data(), s);
    }
    return normed.data();
  }
  // After both ran: the fused residual add wrote what add_rmsnorm did, and left its input.
  void check_residual() {
    if (kind != InputKind::kAddRmsNorm) return;
    require_mostly_equal("residual_out vs add_rmsnorm's residual", from_device_bf16(residual_out),
                         from_device_bf16(sep_residual), 0.0);
    require_mostly_equal("residual_in is not written", from_device_bf16(d_residual), residual, 0.0);
  }
};

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

TEST_CASE("gemv_silu_mul gives the bits of the product, then silu_mul", "[gpu][gemm][gemv]") {
  // dim: Llama-3.1-8B's 14336 (at two plain rows the 8-warp variant, n >= 16384), the demo
  // model's 704, and pair counts that leave the last block partly idle (37, 5).
  const int m = GENERATE(1, 2);
  const auto dk =
      GENERATE(std::pair{14336, 4096}, std::pair{704, 256}, std::pair{37, 120}, std::pair{5, 2048});
  const InputKind kind = GENERATE(InputKind::kPlain, InputKind::kRmsNorm, InputKind::kAddRmsNorm);
  const int dim = dk.first, k = dk.second, n = 2 * dim;
  INFO("m " << m << ", dim " << dim << ", k " << k << ", input " << to_string(kind));
  REQUIRE(arbor::cuda::gemv_paired_supported(m, k, kind != InputKind::kPlain));
  PairedInput in(kind, m, k, 900 + dim + k);
  const DeviceArray<bf16> w = weights(n, k, 903 + dim);
  Stream stream;

  auto gate_up = bf16_buffer(size_t(m) * n);
  auto want = bf16_buffer(size_t(m) * dim);
  arbor::cuda::gemv(in.separate(stream.get()), w.data(), m, n, k, gate_up.data(), stream.get());
  arbor::cuda::silu_mul(gate_up.data(), m, dim, want.data(), stream.get());

  auto got = bf16_buffer(size_t(m) * dim);
  arbor::cuda::gemv_silu_mul(in.spec(), w.data(), m, dim, k, got.data(), stream.get());
  stream.sync();
  require_mostly_equal("gemv_silu_mul [m][dim] vs gemv + silu_mul", from_device_bf16(got),
                       from_device_bf16(want), 0.0);
  in.check_residual();
}

TEST_CASE("gemv_rope_kv_write gives the bits of the product, then rope_kv_write",
          "[gpu][gemm][gemv][rope]") {
  struct Heads {
    int hq, hkv, hd, block_size, k;
  };
  // Llama-3.1-8B, the demo model, MHA, wide heads, a head_dim the separate kernel takes on
  // its scalar path (24), and a tiny one whose pairs end mid-block.
  const Heads h =
      GENERATE(Heads{32, 8, 128, 16, 4096}, Heads{4, 2, 64, 16, 256}, Heads{4, 4, 64, 32, 120},
               Heads{2, 1, 256, 4, 512}, Heads{6, 2, 24, 8, 256}, Heads{3, 1, 8, 2, 64});
  const int m = GENERATE(1, 2);
  const InputKind kind = GENERATE(InputKind::kPlain, InputKind::kRmsNorm, InputKind::kAddRmsNorm);
  // Which tokens store their K/V: both, the second as padding (-1), the first past the
  // cache's last slot (the separate kernel's bound).
  const int slot_case = GENERATE(0, 1, 2);
  const int n = (h.hq + 2 * h.hkv) * h.hd;
  INFO("heads " << h.hq << "/" << h.hkv << " x " << h.hd << ", block " << h.block_size << ", k "
                << h.k << ", m " << m << ", input " << to_string(kind) << ", slot case "
                << slot_case);
  PairedInput in(kind, m, h.k, 950 + n + h.k);
  const DeviceArray<bf16> w = weights(n, h.k, 953 + n);

  arbor::cpu::RopeScaling llama3;
  llama3.llama3 = true;
  llama3.factor = 8.0f;
  llama3.low_freq_factor = 1.0f;
  llama3.high_freq_factor = 4.0f;
  llama3.original_max_position = 8192;
  auto d_inv = to_device(arbor::cpu::rope_inv_freq(h.hd, 500000.0f, llama3));
  const int num_blocks = 5;
  std::mt19937 rng(957 + n);
  std::vector<int32_t> all_slots(size_t(num_blocks) * h.block_size);
  std::iota(all_slots.begin(), all_slots.end(), 0);
  std::shuffle(all_slots.begin(), all_slots.end(), rng);
  std::vector<int32_t> slots(all_slots.begin(), all_slots.begin() + m);
  std::vector<int32_t> positions = {131071, 4097};  // far (the slow sincosf path) and near
  positions.resize(size_t(m));
  if (slot_case == 1 && m == 2) slots[1] = -1;
  if (slot_case == 2) slots[0] = num_blocks * h.block_size;
  auto d_pos = to_device(positions);
  auto d_slots = to_device(slots);

  const size_t cache_n = size_t(num_blocks) * h.hkv * h.block_size * h.hd;
  auto k_want = bf16_buffer(cache_n), v_want = bf16_buffer(cache_n);
  auto k_got = bf16_buffer(cache_n), v_got = bf16_buffer(cache_n);
  auto q_want = bf16_buffer(size_t(m) * h.hq * h.hd), q_got = bf16_buffer(size_t(m) * h.hq * h.hd);
  arbor::cuda::RopeKvWriteParams p;
  p.positions = d_pos.data();
  p.slot_mapping = d_slots.data();
  p.inv_freq = d_inv.data();
  p.n_tokens = m;
  p.num_q_heads = h.hq;
  p.num_kv_heads = h.hkv;
  p.head_dim = h.hd;
  p.block_size = h.block_size;
  p.num_blocks = num_blocks;
  Stream stream;

  auto qkv = bf16_buffer(size_t(m) * n);
  arbor::cuda::gemv(in.separate(stream.get()), w.data(), m, n, h.k, qkv.data(), stream.get());
  arbor::cuda::RopeKvWriteParams sep = p;
  sep.qkv = qkv.data();
  sep.q_out = q_want.data();
  sep.k_cache = k_want.data();
  sep.v_cache = v_want.data();
  arbor::cuda::rope_kv_write(sep, stream.get());

  arbor::cuda::RopeKvWriteParams fused = p;
  fused.q_out = q_got.data();
  fused.k_cache = k_got.data();
  fused.v_cache = v_got.data();
  arbor::cuda::gemv_rope_kv_write(in.spec(), w.data(), m, h.k, fused, stream.get());
  stream.sync();
  // The caches start as NaN: slots the separate kernel left alone must stay NaN here too.
  require_mostly_equal("q [m][hq][hd]", from_device_bf16(q_got), from_device_bf16(q_want), 0.0);
  require_mostly_equal("k cache", from_device_bf16(k_got), from_device_bf16(k_want), 0.0);
  require_mostly_equal("v cache", from_device_bf16(v_got), from_device_bf16(v_want), 0.0);
  in.check_residual();
}
