// What the engine drives: a model with its KV cache on some device. One step takes a
// ForwardBatch (block ids from the engine's KvBlockManager) and returns fp32 logits on the
// host for the requested rows. The CPU runner is the reference; the CUDA runner
// (models/llama_cuda.h) is the fast path.
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "models/config.h"
#include "models/forward_batch.h"
#include "models/llama.h"

namespace arbor {

class ModelRunner {
 public:
  virtual ~ModelRunner() = default;
  virtual const LlamaConfig& config() const = 0;
  virtual int num_kv_blocks() const = 0;
  virtual int block_size() const = 0;
  // Largest number of tokens one forward() may carry, and of logits rows it may return.
  virtual int max_batch_tokens() const = 0;
  virtual int max_logits_rows() const = 0;
  // Runs one step; logits is resized to [batch.logits_rows.size()][vocab].
  virtual void forward(const ForwardBatch& batch, std::vector<float>& logits) = 0;
  // Runs one step and picks each requested row's argmax (ties to the lowest id). Runners
  // that can, do it on the device and skip copying logits to the host.
  virtual void forward_greedy(const ForwardBatch& batch, std::vector<int32_t>& ids);
  // "cpu (2 threads)", "NVIDIA H100 80GB HBM3", ...
  virtual std::string device_name() const = 0;
};

class CpuModelRunner : public ModelRunner {
 public:
  // With context parallelism, block_size is the size of this rank's blocks; the engine sees
  // super-blocks of cp.size() × block_size positions (kernels/paged_kv.h).
  CpuModelRunner(LlamaCpu model, int num_kv_blocks, int block_size, ContextParallelRank cp = {});
  const LlamaConfig& config() const override { return model_.config(); }
  int num_kv_blocks() const override { return cache_.shape().num_blocks; }
  int block_size() const override { return cache_.shape().block_size * cp_.size(); }
  int max_batch_tokens() const override { return 1 << 30; }
  int max_logits_rows() const override { return 1 << 30; }
  void forward(const ForwardBatch& batch, std::vector<float>& logits) override;
  std::string device_name() const override;

 private:
  LlamaCpu model_;
  CpuKvCache cache_;
  ContextParallelRank cp_;
};

}  // namespace arbor
