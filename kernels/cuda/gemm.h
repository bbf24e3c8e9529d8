// Matrix products through cuBLASLt: out[m][n] = x[m][k] · w[n][k]ᵀ, bf16 inputs, fp32
// accumulation (the Hugging Face weight layout, as cpu::matmul).
//
// One Gemm per stream (it owns one workspace, which concurrent streams would share). The
// first call for a shape asks cuBLASLt's heuristic for an algorithm and caches it with the
// descriptors (a "plan"), so later calls — including inside CUDA graph capture — only
// enqueue the product. Plans are keyed by (m, n, k, output type, pointer alignment).
//
// Autotuning (on by default for m >= kAutotuneMinRows, the prefill shapes): the first product
// of a shape in a bucket of m (powers of two from kAutotuneMinRows: 1024-2047, 2048-4095, ...)
// asks the heuristic for up to kAutotuneCandidates algorithms and times each on the call's
// own operands, keeping the fastest unless the heuristic's first choice is within
// kAutotuneMargin of it; later m of the bucket reuse that algorithm. The products are the
// large share of a prefill step and the heuristic's first choice is not always the fastest
// on the device at hand (bench/gemm.cu prints them all: up to 7% on Llama-3-8B shapes on an
// H200). Buckets keep the one-time cost (~100 ms for an 8B model's largest product) to a few
// tunings per process instead of one per prompt length. Nothing is timed while the stream is
// being captured into a CUDA graph (the heuristic's choice then, unless the bucket was tuned
// before), nor for smaller m (decode: the gemv kernel, or products too short to matter).
//
// Unlike cpu::matmul, a row's result may depend on m: cuBLASLt picks a different algorithm
// (tile shape, split-k) per shape, and those sum in different orders. Results are
// deterministic for a given shape and GPU without autotuning; with it, two processes may pick
// different algorithms for a prefill shape when two run equally fast (set_autotune(false)
// for bitwise-reproducible prefill).
#pragma once

#include <cstddef>
#include <map>
#include <memory>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

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

  // Number of cached plans, and of autotuned (bucket, shape) pairs (for tests).
  size_t num_plans() const { return plans_.size(); }
  size_t num_tuned() const { return tuned_.size(); }
  // The cached plans: shape and which of the heuristic's candidates each runs.
  struct PlanInfo {
    int m, n, k;
    bool f32_out;
    int rank;  // 0: the heuristic's first choice; more: autotuning found a faster one
    std::string algorithm;
  };
  std::vector<PlanInfo> plans() const;

  // bf16 products with m <= kGemvMaxRowsRouted go to the weight-streaming gemv kernel
  // (kernels/cuda/gemv.h) when it supports the shape: on by default; off for comparisons.
  // Measured on an H100 (Llama-3.1-8B decode, bench/RESULTS.md): batch 1 +9%, batch 2 +7%
  // over cuBLASLt, batch 4 5% slower, so 2 rows at most.
  static constexpr int kGemvMaxRowsRouted = 2;
  void set_small_m_gemv(bool on) { small_m_gemv_ = on; }

  static constexpr int kAutotuneMinRows = 1024;
  static constexpr int kAutotuneCandidates = 8;
  // A candidate replaces the heuristic's first choice only when it is this much faster:
  // timing noise of one measurement is ~1%, and keeping the first choice when in doubt keeps
  // the choice stable between processes.
  static constexpr double kAutotuneMargin = 0.02;
  void set_autotune(bool on) { autotune_ = on; }

  // One cuBLASLt algorithm for a shape, timed (bench/gemm.cu, autotuning).
  struct AlgorithmTiming {
    int rank = 0;           // position in the heuristic's list (0: its first choice)
    double us = 0;          // mean time of one product
    std::string algorithm;  // tile, stages, split-k, cluster shape (cuBLASLt's config ids)
  };
  // Times up to `count` (at most kAutotuneCandidates) algorithms of the heuristic for out = x · wᵀ
  // (bf16 output) on these operands, `iters` products each after one warm-up, in heuristic order.
  // Writes out. Must not be called while `stream` is being captured.
  std::vector<AlgorithmTiming> time_algorithms(const bf16* x, const bf16* w, int m, int n, int k,
                                               bf16* out, int count, int iters,
                                               cudaStream_t stream);

 private:
  struct Plan;  // descriptors, layouts and the chosen algorithm of one shape (gemm.cu)
  // (m, n, k, fp32 output, alignment in bytes common to x, w and out, at most 256)
  using Key = std::tuple<int, int, int, bool, int>;
  struct Operands {
    const bf16* x;
    const bf16* w;
    void* out;
    cudaStream_t stream;
  };
  const Plan& plan(const Key& key, const Operands& operands);
  std::unique_ptr<Plan> make_plan(const Key& key) const;
  // An algorithm the heuristic offers. (A named copy of cublasLtMatmulHeuristicResult_t's
  // fields: nvcc 13.0's front end fails on std::vector of that unnamed C struct.)
  struct Candidate {
    cublasLtMatmulAlgo_t algo;
    size_t workspace_bytes;
  };
  // Heuristic candidates for a plan's descriptors (at most min(count, kAutotuneCandidates);
  // the first is its choice).
  std::vector<Candidate> candidates(const Plan& p, const Key& key, int count) const;
  std::vector<AlgorithmTiming> time_candidates(const Plan& p, const std::vector<Candidate>& algos,
                                               const Operands& operands, int iters);
  // The fastest candidate for a plan and its rank (see Autotuning above).
  std::pair<Candidate, int> tune(const Plan& p, const Key& key, const Operands& operands);
  bool accepts(const Plan& p, const Candidate& c) const;  // cuBLASLt runs c for p's shape
  static void set_algorithm(Plan& p, const Candidate& c, int rank);
  static int autotune_bucket(int m);  // the power of two (>= kAutotuneMinRows) at or below m
  // (bucket of m, n, k, fp32 output, alignment) → tuned algorithm and its rank
  using TuneKey = std::tuple<int, int, int, bool, int>;
  void run_impl(const bf16* x, const bf16* w, int m, int n, int k, void* out, bool f32_out,
                cudaStream_t stream);

  cublasLtHandle_t handle_ = nullptr;
  DeviceBuffer workspace_;
  std::map<Key, std::unique_ptr<Plan>> plans_;
  std::map<TuneKey, std::pair<Candidate, int>> tuned_;
  bool small_m_gemv_ = true;
  bool autotune_ = true;
};

}  // namespace arbor::cuda
