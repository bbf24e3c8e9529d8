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
  bool cuda_graphs = true;  // capture decode steps per batch-size bucket
  int device = 0;
};

// Loads model_dir (config.json + safetensors, or config.json only with dummy_weights) onto
// the GPU. Throws ModelError for bad folders and std::runtime_error with the numbers when
// the model does not fit in the allowed memory.
std::unique_ptr<ModelRunner> make_cuda_runner(const std::filesystem::path& model_dir,
                                              const CudaRunnerOptions& options);

// True when this binary has the CUDA backend and a CUDA device is visible.
bool cuda_available(std::string* why_not = nullptr);

}  // namespace arbor
