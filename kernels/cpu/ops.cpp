// Row-wise and GEMM reference ops: embedding, rmsnorm, add_rmsnorm, matmul, silu_mul.
// RoPE lives in rope.cpp, the KV cache and attention in attention.cpp.
#include "kernels/cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/cpu/dot.h"

namespace arbor::cpu {

void embedding(const float* table, const int32_t* ids, int n_tokens, int hidden, float* out) {
  for (int t = 0; t < n_tokens; ++t) {
    std::memcpy(out + size_t(t) * hidden, table + size_t(ids[t]) * hidden,
                sizeof(float) * size_t(hidden));
  }
}

namespace {

// One row of rmsnorm, written as Hugging Face's LlamaRMSNorm computes it in fp32:
// weight * (x * rsqrt(mean(x²) + eps)).
void rmsnorm_row(const float* x, const float* weight, int dim, float eps, float* out) {
  float sum_sq = detail::dot(x, x, dim);
  float inv_rms = 1.0f / std::sqrt(sum_sq / float(dim) + eps);
  for (int i = 0; i < dim; ++i) out[i] = weight[i] * (x[i] * inv_rms);
}

// Rows per parallel task for the cheap row-wise ops: below this a thread team costs more
// than it saves.
constexpr int kRowsPerTask = 16;

}  // namespace

void rmsnorm(const float* x, const float* weight, int n_rows, int dim, float eps, float* out) {
#pragma omp parallel for schedule(static) if (n_rows > kRowsPerTask)
  for (int r = 0; r < n_rows; ++r) {
    rmsnorm_row(x + size_t(r) * dim, weight, dim, eps, out + size_t(r) * dim);
  }
}

void add_rmsnorm(float* x, const float* y, const float* weight, int n_rows, int dim, float eps,
                 float* out) {
#pragma omp parallel for schedule(static) if (n_rows > kRowsPerTask)
  for (int r = 0; r < n_rows; ++r) {
    float* xr = x + size_t(r) * dim;
    const float* yr = y + size_t(r) * dim;
    for (int i = 0; i < dim; ++i) xr[i] += yr[i];
    rmsnorm_row(xr, weight, dim, eps, out + size_t(r) * dim);
  }
}

namespace {

// Register tile of matmul: kTileM rows of x against kTileN rows of w (output features).
constexpr int kTileM = 2;
constexpr int kTileN = 4;
// One parallel task covers up to kBlockM × kBlockN outputs: kBlockN rows of w (32 KiB at
// k = 256) stay in L1/L2 while kBlockM rows of x stream past them.
constexpr int kBlockM = 64;
constexpr int kBlockN = 32;

// out[m0.., n0..] for an rows × cols corner of the output, using full tiles where they fit
// and narrower ones at the edges. Every output is the same dot() sum whichever tile
// computes it, so a row's result does not depend on m (a decode token gives the same
// output alone or in a batch).
template <int R>
void matmul_rows(const float* x, const float* w, int cols, int n, int k, float* out) {
  int c = 0;
  for (; c + kTileN <= cols; c += kTileN) {
    detail::dot_tile<R, kTileN>(x, k, w + size_t(c) * k, k, k, out + c, n);
  }
  for (; c < cols; ++c) detail::dot_tile<R, 1>(x, k, w + size_t(c) * k, k, k, out + c, n);
}

}  // namespace

void matmul(const float* x, const float* w, int m, int n, int k, float* out) {
  if (m <= 0 || n <= 0) return;
  const int blocks_m = (m + kBlockM - 1) / kBlockM;
  // Decode (small m): split n finely so both a 2-core laptop and a 16-core host stay busy.
  const int block_n = m < kBlockM ? std::min(kBlockN, std::max(kTileN, n / 64)) : kBlockN;
  const int blocks_n = (n + block_n - 1) / block_n;
  const long long flops = 2LL * m * n * k;
#pragma omp parallel for collapse(2) schedule(static) if (flops > 200000)
  for (int bm = 0; bm < blocks_m; ++bm) {
    for (int bn = 0; bn < blocks_n; ++bn) {
      const int m0 = bm * kBlockM, m1 = std::min(m, m0 + kBlockM);
      const int n0 = bn * block_n, cols = std::min(n, n0 + block_n) - n0;
      const float* wb = w + size_t(n0) * k;
      int r = m0;
      for (; r + kTileM <= m1; r += kTileM) {
        matmul_rows<kTileM>(x + size_t(r) * k, wb, cols, n, k, out + size_t(r) * n + n0);
      }
      for (; r < m1; ++r)
        matmul_rows<1>(x + size_t(r) * k, wb, cols, n, k, out + size_t(r) * n + n0);
    }
  }
}

void silu_mul(const float* gate_up, int n_rows, int dim, float* out) {
#pragma omp parallel for schedule(static) if (n_rows > kRowsPerTask)
  for (int r = 0; r < n_rows; ++r) {
    const float* gate = gate_up + size_t(r) * 2 * dim;
    const float* up = gate + dim;
    float* o = out + size_t(r) * dim;
    // silu(g) = g / (1 + exp(-g)), as torch computes it; for g → -inf this is -0, not NaN.
    for (int i = 0; i < dim; ++i) o[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
}

}  // namespace arbor::cpu
