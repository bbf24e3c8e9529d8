// The Llama decoder on one NVIDIA GPU: bf16 weights in one device arena, a paged bf16 KV
// cache sized from free memory, cuBLASLt GEMMs, flash-decoding for decode steps and
// tensor-core prefill attention otherwise, CUDA graphs for decode batches.
//
// The same contract as the CPU runner (models/model_runner.h); tests compare the two.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/context_parallel.h"
#include "models/model_runner.h"

namespace arbor {

struct CudaRunnerOptions {
  int block_size = 16;
  // Fraction of the GPU's total memory arbor may use (weights + activations + KV cache).
  float gpu_memory_utilization = 0.90f;
  int num_kv_blocks = 0;        // 0: as many as fit; > 0: exactly this many
  int max_batch_tokens = 8192;  // tokens in one step (prefill chunk + decodes)
  int max_num_seqs = 256;       // sequences in one step (= logits rows)
  bool dummy_weights = false;   // random weights from config.json alone (--load-format dummy)
  uint64_t dummy_seed = 0;
  bool cuda_graphs = true;       // capture decode steps per batch-size bucket
  bool small_batch_gemv = true;  // steps of <= 2 tokens use the gemv kernel (kernels/cuda/gemv.h)
  // Single-token steps compute each RMSNorm (with its residual add) inside the qkv and
  // gate_up gemvs that consume it (kernels/cuda/gemv.h): 2 kernels fewer per layer, same
  // bits. H200, 8B batch 1 × 1k: +1.2% tok/s; at 2 tokens, and with SiLU·mul fused into the
  // down gemv, it was slower (bench/RESULTS.md), so those steps keep the separate kernels.
  bool fused_gemv_norms = true;
  // Steps the gemv runs (<= 2 tokens) compute RoPE + KV-cache write in the qkv gemv and
  // SiLU·mul in the gate_up gemv, as each block's epilogue on pairs of product columns
  // (kernels/cuda/gemv.h): 2 kernels fewer per layer, same bits, no work repeated. H100, 8B
  // batch 1 × 1k: +2.5% tok/s (bench/RESULTS.md).
  bool fused_gemv_outputs = true;
  // Prefill-sized products time cuBLASLt's candidate algorithms once per shape and keep the
  // fastest (kernels/cuda/gemm.h); off: the heuristic's first choice, bitwise reproducible.
  bool gemm_autotune = true;
  int device = 0;
  // Context parallelism: this runner is one rank; cp.comm must be a device communicator on
  // `device` (nccl or local-gpu). block_size is then this rank's block size and the engine
  // sees super-blocks of cp.size() × block_size (kernels/paged_kv.h). Decode steps are
  // captured in CUDA graphs only when the communicator is graph capturable (NCCL).
  ContextParallelRank cp;
};

// Loads model_dir (config.json + safetensors, or config.json only with dummy_weights) onto
// the GPU. Throws ModelError for bad folders and std::runtime_error with the numbers when
// the model does not fit in the allowed memory.
std::unique_ptr<ModelRunner> make_cuda_runner(const std::filesystem::path& model_dir,
                                              const CudaRunnerOptions& options);

// Context parallelism on GPUs (tree attention): cp_size ranks with replicated weights, each
// holding a stripe of every sequence's KV cache (kernels/paged_kv.h).
enum class CpBackend {
  nccl,   // one rank per GPU (devices), NCCL collectives; multi-node via a TCP rendezvous
  local,  // cp_size simulated ranks on one GPU (engine/comm local-gpu): tests, trying it out
};
struct CudaContextParallelOptions {
  int size = 1;  // total ranks over all nodes
  CpBackend backend = CpBackend::nccl;
  CpCombine combine = CpCombine::allgather;
  // Multi-node (nccl only): this process runs ranks [node_rank·k, (node_rank+1)·k) with
  // k = size / nnodes, on GPUs 0..k-1; node 0 serves HTTP, the others follow.
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
};
const char* to_string(CpBackend backend);
CpBackend parse_cp_backend(const std::string& name);  // "nccl" / "local"

// Node 0: builds the ranks of this process and returns them as one runner for the engine.
// Other nodes: builds their ranks, runs every step the leader broadcasts until it stops, and
// returns nullptr. The KV cache of each rank is sized as options say (gpu_memory_utilization
// is per GPU; the local backend splits it between its ranks); every rank has the block count
// of the smallest. Throws with the reason when the devices or the sizes do not add up.
std::unique_ptr<ModelRunner> make_cuda_context_parallel_runner(
    const std::filesystem::path& model_dir, const CudaRunnerOptions& options,
    const CudaContextParallelOptions& cp);

// The most tokens per step whose norms the runner fuses into the gemvs (CudaRunnerOptions::
// fused_gemv_norms: 1, or 0 when off, when the model's shapes do not allow it, and for
// runners that are not make_cuda_runner's).
int cuda_fused_gemv_rows(const ModelRunner& runner);
// The most tokens per step whose RoPE + KV write and SiLU·mul the runner computes in the
// gemvs before them (CudaRunnerOptions::fused_gemv_outputs: 2, or 0 as above).
int cuda_paired_gemv_rows(const ModelRunner& runner);

// True when this binary has the CUDA backend and a CUDA device is visible.
bool cuda_available(std::string* why_not = nullptr);

}  // namespace arbor
