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
#include "kernels/cuda/device_buffer.h"
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
  int rank = 0;  // in the heuristic's list

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

std::unique_ptr<Gemm::Plan> Gemm::make_plan(const Key& key) const {
  const int m = std::get<0>(key), n = std::get<1>(key), k = std::get<2>(key);
  const bool f32_out = std::get<3>(key);
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
  return p;
}

std::vector<Gemm::Candidate> Gemm::candidates(const Plan& p, const Key& key, int count) const {
  const int m = std::get<0>(key), n = std::get<1>(key), k = std::get<2>(key);
  const bool f32_out = std::get<3>(key);
  const int alignment = std::get<4>(key);
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

  cublasLtMatmulHeuristicResult_t results[kAutotuneCandidates] = {};
  int returned = 0;
  CUBLASLT_CHECK(cublasLtMatmulAlgoGetHeuristic(handle_, p.op, p.a, p.b, p.d, p.d, pref.pref,
                                                std::clamp(count, 1, kAutotuneCandidates), results,
                                                &returned));
  std::vector<Candidate> out;
  for (int i = 0; i < returned; ++i)
    if (results[i].state == CUBLAS_STATUS_SUCCESS)
      out.push_back({results[i].algo, results[i].workspaceSize});
  if (out.empty()) {
    throw CudaError("cuBLASLt has no bf16 algorithm for out[" + std::to_string(m) + "][" +
                    std::to_string(n) + "] = x[" + std::to_string(m) + "][" + std::to_string(k) +
                    "] w^T (" + (f32_out ? "fp32" : "bf16") + " output, " +
                    std::to_string(alignment) + "-byte aligned pointers)");
  }
  return out;
}

namespace {

std::string describe_algorithm(const cublasLtMatmulAlgo_t& algo) {
  auto config = [&algo](cublasLtMatmulAlgoConfigAttributes_t attr) {
    uint32_t v = 0;
    size_t written = 0;
    if (cublasLtMatmulAlgoConfigGetAttribute(&algo, attr, &v, sizeof(v), &written) !=
        CUBLAS_STATUS_SUCCESS)
      return std::string("?");
    return std::to_string(v);
  };
  return "id " + config(CUBLASLT_ALGO_CONFIG_ID) + " tile " + config(CUBLASLT_ALGO_CONFIG_TILE_ID) +
         " stages " + config(CUBLASLT_ALGO_CONFIG_STAGES_ID) + " splitk " +
         config(CUBLASLT_ALGO_CONFIG_SPLITK_NUM) + " cluster " +
         config(CUBLASLT_ALGO_CONFIG_CLUSTER_SHAPE_ID);
}

}  // namespace

std::vector<Gemm::AlgorithmTiming> Gemm::time_candidates(const Plan& p,
                                                         const std::vector<Candidate>& algos,
                                                         const Operands& operands, int iters) {
  const float alpha = 1.0f, beta = 0.0f;
  auto launch = [&](const cublasLtMatmulAlgo_t& algo) {
    return cublasLtMatmul(handle_, p.op, &alpha, operands.w, p.a, operands.x, p.b, &beta,
                          operands.out, p.d, operands.out, p.d, &algo, workspace_.get(),
                          workspace_.bytes(), operands.stream);
  };
  Event start, stop;
  std::vector<AlgorithmTiming> timings;
  for (size_t i = 0; i < algos.size(); ++i) {
    AlgorithmTiming t;
    t.rank = int(i);
    t.algorithm = describe_algorithm(algos[i].algo);
    // An algorithm the heuristic offered but that fails to launch is skipped, not fatal: the
    // first choice is always there to fall back on.
    if (launch(algos[i].algo) != CUBLAS_STATUS_SUCCESS) continue;
    start.record(operands.stream);
    bool ok = true;
    for (int it = 0; it < iters && ok; ++it) ok = launch(algos[i].algo) == CUBLAS_STATUS_SUCCESS;
    stop.record(operands.stream);
    const float ms = stop.elapsed_ms_since(start);
    if (!ok) continue;
    t.us = 1e3 * double(ms) / iters;
    timings.push_back(std::move(t));
  }
  return timings;
}

std::vector<Gemm::AlgorithmTiming> Gemm::time_algorithms(const bf16* x, const bf16* w, int m, int n,
                                                         int k, bf16* out, int count, int iters,
                                                         cudaStream_t stream) {
  if (m <= 0 || n <= 0 || k <= 0 || !x || !w || !out || iters <= 0)
    throw std::invalid_argument("Gemm::time_algorithms: bad shape, pointer or iteration count");
  const int alignment = std::min({alignment_of(x), alignment_of(w), alignment_of(out)});
  const Key key{m, n, k, false, alignment};
  const auto p = make_plan(key);
  return time_candidates(*p, candidates(*p, key, count), Operands{x, w, out, stream}, iters);
}

std::vector<Gemm::PlanInfo> Gemm::plans() const {
  std::vector<PlanInfo> out;
  for (const auto& entry : plans_) {
    const Key& key = entry.first;
    out.push_back({std::get<0>(key), std::get<1>(key), std::get<2>(key), std::get<3>(key),
                   entry.second->rank, describe_algorithm(entry.second->algo)});
  }
  return out;
}

int Gemm::autotune_bucket(int m) {
  int bucket = kAutotuneMinRows;
  while (bucket <= m / 2) bucket *= 2;
  return bucket;
}

const Gemm::Plan& Gemm::plan(const Key& key, const Operands& operands) {
  auto it = plans_.find(key);
  if (it != plans_.end()) return *it->second;

  auto p = make_plan(key);
  const auto [m, n, k, f32_out, alignment] = key;
  if (!autotune_ || m < kAutotuneMinRows) {
    set_algorithm(*p, candidates(*p, key, 1)[0], 0);
  } else {
    const TuneKey bucket{autotune_bucket(m), n, k, f32_out, alignment};
    auto tuned = tuned_.find(bucket);
    cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
    CUDA_CHECK(cudaStreamIsCapturing(operands.stream, &capture));
    if (tuned == tuned_.end() && capture == cudaStreamCaptureStatusNone) {
      tuned = tuned_.emplace(bucket, tune(*p, key, operands)).first;
    }
    // The bucket's algorithm, where cuBLASLt accepts it for this m (tile shapes do not depend
    // on m, but an algorithm may need more workspace for another m); otherwise, and while
    // capturing before the bucket was tuned, the heuristic's first choice.
    if (tuned != tuned_.end() && accepts(*p, tuned->second.first)) {
      set_algorithm(*p, tuned->second.first, tuned->second.second);
    } else {
      set_algorithm(*p, candidates(*p, key, 1)[0], 0);
    }
  }
  const Plan& ref = *p;
  plans_.emplace(key, std::move(p));
  return ref;
}

std::pair<Gemm::Candidate, int> Gemm::tune(const Plan& p, const Key& key,
                                           const Operands& operands) {
  const auto algos = candidates(p, key, kAutotuneCandidates);
  if (algos.size() == 1) return {algos[0], 0};
  // Three products per candidate after its warm-up: at most ~100 ms for the largest prefill
  // product of an 8B model, once per bucket of m (autotune_bucket) and shape.
  const auto timings = time_candidates(p, algos, operands, 3);
  const auto first = std::find_if(timings.begin(), timings.end(),
                                  [](const AlgorithmTiming& t) { return t.rank == 0; });
  const auto best = std::min_element(
      timings.begin(), timings.end(),
      [](const AlgorithmTiming& a, const AlgorithmTiming& b) { return a.us < b.us; });
  size_t chosen = 0;
  if (best != timings.end() &&
      (first == timings.end() || best->us < first->us * (1.0 - kAutotuneMargin)))
    chosen = size_t(best->rank);
  return {algos[chosen], int(chosen)};
}

bool Gemm::accepts(const Plan& p, const Candidate& c) const {
  cublasLtMatmulHeuristicResult_t result{};
  return cublasLtMatmulAlgoCheck(handle_, p.op, p.a, p.b, p.d, p.d, &c.algo, &result) ==
             CUBLAS_STATUS_SUCCESS &&
         result.state == CUBLAS_STATUS_SUCCESS && result.workspaceSize <= workspace_.bytes();
}

void Gemm::set_algorithm(Plan& p, const Candidate& c, int rank) {
  p.algo = c.algo;
  p.workspace_bytes = c.workspace_bytes;
  p.rank = rank;
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

  const Plan& p = plan(Key{m, n, k, f32_out, alignment}, Operands{x, w, out, stream});
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
