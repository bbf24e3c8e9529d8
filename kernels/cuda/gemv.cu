#include "kernels/cuda/gemv.h"

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <stdexcept>
#include <string>
#include <utility>

#include "kernels/cuda/check.h"
#include "kernels/cuda/gemv_kernel.cuh"
#include "kernels/cuda/pdl.h"

namespace arbor::cuda {
namespace {

using detail::GemvInput;
using detail::GemvNorm;
using detail::GemvOutput;

constexpr int kMaxSmemBytes = 96 * 1024;
// Two-row products at least this wide (Llama-3.1-8B's gate_up, 28672, and lm_head, 128256)
// run with 8 warps of 8 loads in flight: on the H200 (bench/RESULTS.md) gate_up 59.4 -> 56.9
// us and lm_head 249.4 -> 236.8 us against 16 warps of 4, while the narrower products are
// best or within 0.6 us with 16 warps (every configuration alike on the H100).
constexpr int kWideTwoRowN = 16384;

template <int M, GemvInput kIn, GemvOutput kOut, int kLoads = kGemvLoadsInFlight,
          int kWarps = kGemvWarps>
void launch(const bf16* x, const bf16* w, int n, int k, bf16* out, const GemvNorm& norm,
            const RopeKvWriteParams& rope, cudaStream_t stream) {
  auto kernel = detail::gemv_kernel<M, kLoads, kWarps, kIn, kOut>;
  const size_t smem = detail::gemv_smem_bytes<M, kIn>(k);
  if (smem > 48 * 1024) {
    CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  }
  // kWarps columns per block; paired outputs take kWarps / 2 pairs of an even n: the same.
  const unsigned blocks = unsigned((n + kWarps - 1) / kWarps);
  launch_pdl(kernel, dim3(blocks), dim3(kWarps * 32), smem, stream, x, w, n, k, out, norm, rope);
  CUDA_CHECK_LAUNCH();
}

template <GemvInput kIn, GemvOutput kOut = GemvOutput::kStore>
void launch_rows(const bf16* x, const bf16* w, int m, int n, int k, bf16* out, const GemvNorm& norm,
                 cudaStream_t stream, const RopeKvWriteParams& rope = {}) {
  switch (m) {
    case 1:
      return launch<1, kIn, kOut>(x, w, n, k, out, norm, rope, stream);
    case 2:
      if constexpr (kIn == GemvInput::kPlain) {
        if (n >= kWideTwoRowN)
          return launch<2, kIn, kOut, 8, 8>(x, w, n, k, out, norm, rope, stream);
      }
      return launch<2, kIn, kOut>(x, w, n, k, out, norm, rope, stream);
    default:
      // Paired outputs stop at kMaxGemvPairedRows (their entry points check), so that their
      // variants are not compiled for 3 and 4 rows.
      if constexpr (kOut == GemvOutput::kStore) {
        if (m == 3) return launch<3, kIn, kOut>(x, w, n, k, out, norm, rope, stream);
        return launch<4, kIn, kOut>(x, w, n, k, out, norm, rope, stream);
      }
  }
}

// launch_rows with the input kind `in` describes (plain, RMSNorm, or add + RMSNorm).
template <GemvOutput kOut>
void launch_paired(const GemvInputSpec& in, const GemvNorm& norm, const bf16* w, int m, int n,
                   int k, bf16* out, const RopeKvWriteParams& rope, cudaStream_t stream) {
  if (!in.norm_weight)
    return launch_rows<GemvInput::kPlain, kOut>(in.x, w, m, n, k, out, norm, stream, rope);
  if (!in.residual_in)
    return launch_rows<GemvInput::kRmsNorm, kOut>(in.x, w, m, n, k, out, norm, stream, rope);
  launch_rows<GemvInput::kAddRmsNorm, kOut>(in.x, w, m, n, k, out, norm, stream, rope);
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

bool shape_supported(int m, int k) {
  return m >= 1 && m <= kMaxGemvRows && k > 0 && k % 8 == 0 &&
         size_t(m) * size_t(k) * sizeof(bf16) <= size_t(kMaxSmemBytes);
}

// [a, a + a_elems) and [b, b + b_elems) share a byte.
bool overlap(const bf16* a, size_t a_elems, const bf16* b, size_t b_elems) {
  const auto a0 = reinterpret_cast<uintptr_t>(a), b0 = reinterpret_cast<uintptr_t>(b);
  return a0 < b0 + b_elems * sizeof(bf16) && b0 < a0 + a_elems * sizeof(bf16);
}

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw std::invalid_argument(std::string(op) + ": " + what);
}

std::string shape_text(int m, int n, int k) {
  return "m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k);
}

// The checks every fused entry point shares; `inputs` are the [rows][k]-sized operands.
void check_fused(const char* op, bool supported, const char* extra_rule, int m, int n, int k,
                 const bf16* w, bf16* out,
                 std::initializer_list<std::pair<const bf16*, size_t>> inputs) {
  require(supported, op,
          "unsupported shape (" + shape_text(m, n, k) +
              "; need 1 <= m <= " + std::to_string(kMaxGemvRows) +
              ", k % 8 == 0, m * k * 2 <= 96 KiB" + extra_rule + ")");
  require(n > 0, op, "n must be positive (" + shape_text(m, n, k) + ")");
  require(w && out, op, "null pointer");
  require(aligned16(w) && aligned16(out), op, "pointers must be 16-byte aligned");
  require(!overlap(out, size_t(m) * n, w, size_t(n) * k), op, "out overlaps an input");
  for (const auto& [p, elems] : inputs) {
    require(p != nullptr, op, "null pointer");
    require(aligned16(p), op, "pointers must be 16-byte aligned");
    require(!overlap(out, size_t(m) * n, p, elems), op, "out overlaps an input");
  }
}

GemvNorm norm_operands(const bf16* weight, float eps, int k) {
  const RmsNormLayout layout = rmsnorm_layout(k / 8);
  GemvNorm norm;
  norm.weight = weight;
  norm.eps = eps;
  norm.threads = layout.threads;
  norm.vecs_per_thread = layout.vecs_per_thread;
  return norm;
}

}  // namespace

bool gemv_supported(const void* x, const void* w, int m, int k) {
  return x && w && shape_supported(m, k) && aligned16(x) && aligned16(w);
}

void gemv(const bf16* x, const bf16* w, int m, int n, int k, bf16* out, cudaStream_t stream) {
  if (n <= 0 || !out || !gemv_supported(x, w, m, k)) {
    throw std::invalid_argument("gemv: unsupported shape or pointers (" + shape_text(m, n, k) +
                                "; need 1 <= m <= " + std::to_string(kMaxGemvRows) +
                                ", k % 8 == 0, 16-byte aligned x and w)");
  }
  launch_rows<GemvInput::kPlain>(x, w, m, n, k, out, GemvNorm{}, stream);
}

bool gemv_rmsnorm_supported(int m, int k) {
  return shape_supported(m, k) && rmsnorm_layout(k / 8).threads <= kGemvWarps * 32;
}

void gemv_rmsnorm(const bf16* x, const bf16* norm_weight, float eps, const bf16* w, int m, int n,
                  int k, bf16* out, cudaStream_t stream) {
  const char* op = "gemv_rmsnorm";
  check_fused(op, gemv_rmsnorm_supported(m, k), ", k <= 16384", m, n, k, w, out,
              {{x, size_t(m) * k}, {norm_weight, size_t(k)}});
  require(eps >= 0.0f && std::isfinite(eps), op, "eps must be finite and >= 0");
  launch_rows<GemvInput::kRmsNorm>(x, w, m, n, k, out, norm_operands(norm_weight, eps, k), stream);
}

void gemv_add_rmsnorm(const bf16* residual_in, const bf16* x, bf16* residual_out,
                      const bf16* norm_weight, float eps, const bf16* w, int m, int n, int k,
                      bf16* out, cudaStream_t stream) {
  const char* op = "gemv_add_rmsnorm";
  const size_t rows = size_t(m) * k;
  check_fused(op, gemv_rmsnorm_supported(m, k), ", k <= 16384", m, n, k, w, out,
              {{residual_in, rows}, {x, rows}, {residual_out, rows}, {norm_weight, size_t(k)}});
  require(eps >= 0.0f && std::isfinite(eps), op, "eps must be finite and >= 0");
  require(!overlap(residual_out, rows, residual_in, rows) &&
              !overlap(residual_out, rows, x, rows) &&
              !overlap(residual_out, rows, norm_weight, size_t(k)) &&
              !overlap(residual_out, rows, w, size_t(n) * k),
          op, "residual_out overlaps an input (other blocks still read them)");
  GemvNorm norm = norm_operands(norm_weight, eps, k);
  norm.residual_in = residual_in;
  norm.residual_out = residual_out;
  launch_rows<GemvInput::kAddRmsNorm>(x, w, m, n, k, out, norm, stream);
}

bool gemv_paired_supported(int m, int k, bool norm) {
  return m >= 1 && m <= kMaxGemvPairedRows &&
         (norm ? gemv_rmsnorm_supported(m, k) : shape_supported(m, k));
}

namespace {

// The checks of the paired entry points: the input `in` of m rows of k, weights w [n][k] and
// the output out of out_elems. Returns the norm's operands (empty for a plain input).
GemvNorm check_paired(const char* op, const GemvInputSpec& in, const bf16* w, int m, int n, int k,
                      const bf16* out, size_t out_elems) {
  const bool norm = in.norm_weight != nullptr, add = in.residual_in != nullptr;
  require(gemv_paired_supported(m, k, norm), op,
          "unsupported shape (" + shape_text(m, n, k) +
              "; need 1 <= m <= " + std::to_string(kMaxGemvPairedRows) +
              ", k % 8 == 0, m * k * 2 <= 96 KiB" + (norm ? ", k <= 16384" : "") + ")");
  require(in.x && w && out, op, "null pointer");
  require(add == (in.residual_out != nullptr), op,
          "residual_in and residual_out go together (the residual add writes the new stream)");
  require(!add || norm, op, "a residual add needs norm_weight (it feeds the RMSNorm)");
  const size_t rows = size_t(m) * k;
  if (norm) require(in.eps >= 0.0f && std::isfinite(in.eps), op, "eps must be finite and >= 0");
  // The operands read: x, w, then the norm weight and the old residual when used.
  const std::pair<const bf16*, size_t> all_inputs[] = {
      {in.x, rows}, {w, size_t(n) * k}, {in.norm_weight, size_t(k)}, {in.residual_in, rows}};
  const std::span inputs(all_inputs, add ? 4 : norm ? 3 : 2);
  for (const auto& [p, elems] : inputs) {
    require(aligned16(p), op, "pointers must be 16-byte aligned");
    require(!overlap(out, out_elems, p, elems), op, "out overlaps an input");
  }
  if (!norm) return GemvNorm{};
  GemvNorm operands = norm_operands(in.norm_weight, in.eps, k);
  if (add) {
    require(aligned16(in.residual_out), op, "pointers must be 16-byte aligned");
    require(!overlap(in.residual_out, rows, out, out_elems), op, "out overlaps residual_out");
    for (const auto& [p, elems] : inputs)
      require(!overlap(in.residual_out, rows, p, elems), op,
              "residual_out overlaps an input (other blocks still read them)");
    operands.residual_in = in.residual_in;
    operands.residual_out = in.residual_out;
  }
  return operands;
}

}  // namespace

void gemv_silu_mul(const GemvInputSpec& in, const bf16* w, int m, int dim, int k, bf16* out,
                   cudaStream_t stream) {
  const char* op = "gemv_silu_mul";
  require(dim > 0, op, "dim must be positive, got " + std::to_string(dim));
  const int n = 2 * dim;
  const GemvNorm norm = check_paired(op, in, w, m, n, k, out, size_t(m) * dim);
  launch_paired<GemvOutput::kSiluMul>(in, norm, w, m, n, k, out, RopeKvWriteParams{}, stream);
}

void gemv_rope_kv_write(const GemvInputSpec& in, const bf16* w, int m, int k,
                        const RopeKvWriteParams& rope, cudaStream_t stream) {
  const char* op = "gemv_rope_kv_write";
  require(rope.n_tokens == m, op,
          "rope.n_tokens must equal m (one token per input row), got " +
              std::to_string(rope.n_tokens) + " and " + std::to_string(m));
  check_rope_kv_write_shape(rope, op);
  require(rope.positions && rope.slot_mapping && rope.inv_freq && rope.k_cache && rope.v_cache, op,
          "null pointer");
  const long long n_wide = (long long)(rope.num_q_heads + 2LL * rope.num_kv_heads) * rope.head_dim;
  require(n_wide <= (1LL << 30), op, "the qkv row is too wide");
  const int n = int(n_wide);
  const GemvNorm norm =
      check_paired(op, in, w, m, n, k, rope.q_out, size_t(m) * rope.num_q_heads * rope.head_dim);
  launch_paired<GemvOutput::kRopeKvWrite>(in, norm, w, m, n, k, rope.q_out, rope, stream);
}

}  // namespace arbor::cuda
