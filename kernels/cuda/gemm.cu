// cuBLASLt bf16 GEMM (contract: kernels/cuda/gemm.h).
//
// Row-major out = x · wᵀ through a column-major library. A row-major [r][c] array is the
// same bytes as a column-major c × r matrix with leading dimension c, so:
//   out (row-major m × n)  = column-major D, n × m, ld n:    D = outᵀ
//   w   (row-major n × k)  = column-major A, k × n, ld k:    A = wᵀ
//   x   (row-major m × k)  = column-major B, k × m, ld k:    B = xᵀ
// and outᵀ = (x · wᵀ)ᵀ = w · xᵀ = Aᵀ · B: cuBLASLt's "TN" product (transa = T, transb = N)
// with M = n, N = m, K = k — the layout cuBLASLt's bf16 (and fp8) kernels favour.
// Compute type fp32 (CUBLAS_COMPUTE_32F, scale type fp32, alpha = 1, beta = 0); D is bf16
// (rounded once from the fp32 accumulator, split-k partials included) or fp32. Note that
// torch, by default (allow_bf16_reduced_precision_reduction), lets cuBLAS reduce split-k
// partials in bf16; we do not, so our bf16 outputs are at least as accurate as HF's.
#include "kernels/cuda/gemm.h"

#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/gemv.h"

namespace arbor::cuda {
namespace {

[[noreturn]] void throw_cublas_error(cublasStatus_t status, const char* call, const char* file,
                                     int line) {
  throw CudaError(std::string(file) + ":" + std::to_string(line) + ": " + call + " failed: " +
                  cublasLtGetStatusName(status) + " (" + cublasLtGetStatusString(status) + ")");
}

#define CUBLASLT_CHECK(call)                                               \
  do {                                                                     \
    cublasStatus_t arbor_cublas_status_ = (call);                          \
    if (arbor_cublas_status_ != CUBLAS_STATUS_SUCCESS)                     \
      throw_cublas_error(arbor_cublas_status_, #call, __FILE__, __LINE__); \
  } while (0)

// Largest power of two (at most 256) dividing the address: cuBLASLt assumes 256-byte aligned
// matrices unless told otherwise, and picks algorithms that rely on it.
int alignment_of(const void* p) {
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  return a == 0 ? 256 : int(std::min<uintptr_t>(a & (~a + 1), 256));
}

struct PreferenceGuard {
  cublasLtMatmulPreference_t pref = nullptr;
  ~PreferenceGuard() {
    if (pref) cublasLtMatmulPreferenceDestroy(pref);
  }
};

}  // namespace

struct Gemm::Plan {
  cublasLtMatmulDesc_t op = nullptr;
  cublasLtMatrixLayout_t a = nullptr;  // w
  cublasLtMatrixLayout_t b = nullptr;  // x
  cublasLtMatrixLayout_t d = nullptr;  // out (also C; beta = 0)
  cublasLtMatmulAlgo_t algo{};
  size_t workspace_bytes = 0;

  Plan() = default;
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  ~Plan() {
    if (d) cublasLtMatrixLayoutDestroy(d);
    if (b) cublasLtMatrixLayoutDestroy(b);
    if (a) cublasLtMatrixLayoutDestroy(a);
    if (op) cublasLtMatmulDescDestroy(op);
  }
};

Gemm::Gemm(size_t workspace_bytes) : workspace_(workspace_bytes) {
  CUBLASLT_CHECK(cublasLtCreate(&handle_));
}

Gemm::~Gemm() {
  plans_.clear();  // descriptors before the handle
  if (handle_) cublasLtDestroy(handle_);
}

const Gemm::Plan& Gemm::plan(const Key& key) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;

  const auto [m, n, k, f32_out, alignment] = key;
  auto p = std::make_unique<Plan>();  // frees whatever was created if a step below throws
  CUBLASLT_CHECK(cublasLtMatmulDescCreate(&p->op, CUBLAS_COMPUTE_32F, CUDA_R_32F));
  const cublasOperation_t trans_a = CUBLAS_OP_T, trans_b = CUBLAS_OP_N;
  CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSA, &trans_a,
                                                sizeof(trans_a)));
  CUBLASLT_CHECK(cublasLtMatmulDescSetAttribute(p->op, CUBLASLT_MATMUL_DESC_TRANSB, &trans_b,
                                                sizeof(trans_b)));
  CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p->a, CUDA_R_16BF, uint64_t(k), uint64_t(n), k));
  CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p->b, CUDA_R_16BF, uint64_t(k), uint64_t(m), k));
  CUBLASLT_CHECK(cublasLtMatrixLayoutCreate(&p->d, f32_out ? CUDA_R_32F : CUDA_R_16BF, uint64_t(n),
                                            uint64_t(m), n));

  PreferenceGuard pref;
  CUBLASLT_CHECK(cublasLtMatmulPreferenceCreate(&pref.pref));
  const uint64_t max_workspace = workspace_.bytes();
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(
      pref.pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace, sizeof(max_workspace)));
  const uint32_t align = uint32_t(alignment);
  for (auto attr :
       {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES}) {
    CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.pref, attr, &align, sizeof(align)));
  }

  // Split-k partial sums must stay fp32: for bf16 output, the in-place and output-type
  // reduction schemes would add the partials in bf16 (rounding once per split), so only the
  // compute-type scheme (fp32 partials in the workspace) is allowed. For fp32 output every
  // scheme sums in fp32.
  const uint32_t reduction_mask = f32_out ? uint32_t(CUBLASLT_REDUCTION_SCHEME_MASK)
                                          : uint32_t(CUBLASLT_REDUCTION_SCHEME_COMPUTE_TYPE);
  CUBLASLT_CHECK(cublasLtMatmulPreferenceSetAttribute(pref.pref,
                                                      CUBLASLT_MATMUL_PREF_REDUCTION_SCHEME_MASK,
                                                      &reduction_mask, sizeof(reduction_mask)));

  cublasLtMatmulHeuristicResult_t result{};
  int returned = 0;
  CUBLASLT_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, p->op, p->a, p->b, p->d, p->d, pref.pref,
                                                1, &result, &returned));
  if (returned == 0 || result.state != CUBLAS_STATUS_SUCCESS) {
    throw CudaError(
        "cuBLASLt has no bf16 algorithm for out[" + std::to_string(m) + "][" + std::to_string(n) +
        "] = x[" + std::to_string(m) + "][" + std::to_string(k) + "] w^T (" +
        (f32_out ? "fp32" : "bf16") + " output, " + std::to_string(alignment) +
        "-byte aligned pointers): " +
        cublasLtGetStatusName(returned == 0 ? CUBLAS_STATUS_NOT_SUPPORTED : result.state));
  }
  p->algo = result.algo;
  p->workspace_bytes = result.workspaceSize;
  const Plan& ref = *p;
  plans_.emplace(key, std::move(p));
  return ref;
}

void Gemm::run_impl(const bf16* x, const bf16* w, int m, int n, int k, void* out, bool f32_out,
                    cudaStream_t stream) {
  if (m < 0 || n <= 0 || k <= 0) {
    throw std::invalid_argument("Gemm::run: need m >= 0 and n, k > 0, got m=" + std::to_string(m) +
                                " n=" + std::to_string(n) + " k=" + std::to_string(k));
  }
  if (m == 0) return;
  if (!x || !w || !out) throw std::invalid_argument("Gemm::run: null pointer");
  const int alignment = std::min({alignment_of(x), alignment_of(w), alignment_of(out)});
  if (alignment < 2) throw std::invalid_argument("Gemm::run: pointer at an odd address");

  const Plan& p = plan(Key{m, n, k, f32_out, alignment});
  const float alpha = 1.0f, beta = 0.0f;
  CUBLASLT_CHECK(cublasLtMatmul(handle_, p.op, &alpha, w, p.a, x, p.b, &beta, out, p.d, out, p.d,
                                &p.algo, workspace_.get(), workspace_.bytes(), stream));
}

void Gemm::run(const bf16* x, const bf16* w, int m, int n, int k, bf16* out, cudaStream_t stream) {
  if (small_m_gemv_ && m <= kGemvMaxRowsRouted && n > 0 && out && gemv_supported(x, w, m, k)) {
    gemv(x, w, m, n, k, out, stream);
    return;
  }
  run_impl(x, w, m, n, k, out, false, stream);
}

void Gemm::run(const bf16* x, const bf16* w, int m, int n, int k, float* out, cudaStream_t stream) {
  run_impl(x, w, m, n, k, out, true, stream);
}

}  // namespace arbor::cuda
