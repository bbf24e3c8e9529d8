// Matrix products through cuBLASLt: out[m][n] = x[m][k] · w[n][k]ᵀ, bf16 inputs, fp32
// accumulation (the Hugging Face weight layout, as cpu::matmul).
//
// One Gemm per stream (it owns one workspace, which concurrent streams would share). The
// first call for a shape asks cuBLASLt's heuristic for an algorithm and caches it with the
// descriptors (a "plan"), so later calls — including inside CUDA graph capture — only
// enqueue the product. Plans are keyed by (m, n, k, output type, pointer alignment).
//
// Unlike cpu::matmul, a row's result may depend on m: cuBLASLt picks a different algorithm
// (tile shape, split-k) per shape, and those sum in different orders. Results are
// deterministic for a given shape and GPU.
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <tuple>

#include <cublasLt.h>
#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"
#include "kernels/cuda/device_buffer.h"

namespace arbor::cuda {

class Gemm {
 public:
  // Owns a cuBLASLt handle and a workspace of `workspace_bytes` device memory.
  explicit Gemm(size_t workspace_bytes = size_t(32) << 20);
  ~Gemm();
  Gemm(const Gemm&) = delete;
  Gemm& operator=(const Gemm&) = delete;

  // bf16 output (rounded from the fp32 accumulator). m may be 0 (nothing to do); n, k > 0.
  // Throws std::invalid_argument for bad sizes or null / odd-address pointers, CudaError
  // (naming the cuBLAS status and call) when cuBLASLt fails or has no algorithm.
  void run(const bf16* x, const bf16* w, int m, int n, int k, bf16* out, cudaStream_t stream);
  // fp32 output (logits).
  void run(const bf16* x, const bf16* w, int m, int n, int k, float* out, cudaStream_t stream);

  // Number of cached plans (for tests).
  size_t num_plans() const { return plans_.size(); }

  // bf16 products with m <= kGemvMaxRowsRouted go to the weight-streaming gemv kernel
  // (kernels/cuda/gemv.h) when it supports the shape: on by default; off for comparisons.
  // Measured on an H100 (Llama-3.1-8B decode, bench/RESULTS.md): batch 1 +9%, batch 2 +7%
  // over cuBLASLt, batch 4 5% slower, so 2 rows at most.
  static constexpr int kGemvMaxRowsRouted = 2;
  void set_small_m_gemv(bool on) { small_m_gemv_ = on; }

 private:
  struct Plan;  // descriptors, layouts and the chosen algorithm of one shape (gemm.cu)
  // (m, n, k, fp32 output, alignment in bytes common to x, w and out, at most 256)
  using Key = std::tuple<int, int, int, bool, int>;
  const Plan& plan(const Key& key);
  void run_impl(const bf16* x, const bf16* w, int m, int n, int k, void* out, bool f32_out,
                cudaStream_t stream);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  bool small_m_gemv_ = true;
};

}  // namespace arbor::cuda
