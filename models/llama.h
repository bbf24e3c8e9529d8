// The Llama decoder on the CPU backend (fp32), composed from kernels/cpu ops:
//   embedding → N × (rmsnorm, qkv, rope, paged attention, o, rmsnorm, gate/up, silu·mul,
//   down) → norm → lm_head
// It is the reference the CUDA model is tested against, and it runs the demo model.
#pragma once

#include <filesystem>
#include <vector>

#include "models/config.h"
#include "models/context_parallel.h"
#include "models/forward_batch.h"
#include "models/kv_cache.h"
#include "models/safetensors.h"

namespace arbor {

struct LlamaLayerWeightsCpu {
  std::vector<float> attn_norm;  // [hidden]
  std::vector<float> wqkv;       // [(Hq + 2·Hkv)·D][hidden]: q, k, v projections stacked
  std::vector<float> wo;         // [hidden][Hq·D]
  std::vector<float> mlp_norm;   // [hidden]
  std::vector<float> w_gate_up;  // [2·I][hidden]: gate rows, then up rows
  std::vector<float> w_down;     // [hidden][I]
};

struct LlamaWeightsCpu {
  std::vector<float> embed;  // [vocab][hidden]
  std::vector<LlamaLayerWeightsCpu> layers;
  std::vector<float> final_norm;  // [hidden]
  std::vector<float> lm_head;     // [vocab][hidden]; empty when tied to embed
};

// Loads and converts to fp32 every tensor the config calls for, checking each shape.
// Throws ModelError naming the tensor, the file and expected vs found shape.
LlamaWeightsCpu load_llama_weights_cpu(const WeightStore& store, const LlamaConfig& config);

class LlamaCpu {
 public:
  LlamaCpu(LlamaConfig config, LlamaWeightsCpu weights);
  // config.json + weights of a Hugging Face model folder.
  static LlamaCpu load(const std::filesystem::path& model_dir);

  const LlamaConfig& config() const { return config_; }
  PagedKvShape kv_shape(int num_blocks, int block_size) const;

  // Runs one step: writes the new tokens' K/V into `cache`, and returns in `logits` the
  // rows batch.logits_rows ([rows][vocab], fp32). Throws std::invalid_argument for token
  // ids outside the vocabulary or a batch that does not fit the cache.
  // With context parallelism (cp.enabled()), `cache` is this rank's shard, the batch's slots
  // and block tables address super-blocks of cp.size() × cache block size positions
  // (kernels/paged_kv.h), and every rank of cp.comm must run the same batch.
  void forward(const ForwardBatch& batch, CpuKvCache& cache, std::vector<float>& logits,
               const ContextParallelRank& cp = {});

 private:
  LlamaConfig config_;
  LlamaWeightsCpu weights_;
  std::vector<float> inv_freq_;
  // Scratch activations, grown to the largest batch seen.
  std::vector<float> x_, normed_, qkv_, q_, k_, v_, attn_, proj_, gate_up_, act_, rows_;
  std::vector<float> partial_, lse_, combine_scratch_;  // context parallelism
  std::vector<int32_t> local_slots_;
};

}  // namespace arbor
