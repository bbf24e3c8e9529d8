// What the engine drives: a model with its KV cache on some device. One step takes a
// ForwardBatch (block ids from the engine's KvBlockManager) and returns fp32 logits on the
// host for the requested rows. The CPU runner is the reference; the CUDA runner
// (models/llama_cuda.h) is the fast path.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "models/config.h"
#include "models/forward_batch.h"
#include "models/llama.h"

namespace arbor {

// What sampling on the device needs for one logits row (the contract of
// kernels/cuda/sampling.h: the engine's sampler semantics, drawn with a counter-based
// generator keyed by (seed, step), so a row's token depends only on its logits and these).
struct DeviceSamplingRow {
  float temperature = 1.0f;
  int top_k = 0;
  float top_p = 1.0f;
  float min_p = 0.0f;
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int logprobs = -1;  // -1: none; 0: the chosen token's; N in [1, 20]: and the top N
  uint64_t seed = 0;  // the sequence's random stream
  uint64_t step = 0;  // output index of the token being drawn
  // Read only when a penalty is set: the ids of prompt and output (repetition) and of the
  // output (presence, frequency).
  std::span<const int32_t> prompt_ids, output_ids;
  std::span<const std::pair<int32_t, float>> logit_bias;  // added to the logits first
};

struct DeviceSampledToken {
  int32_t id = -1;       // -1: every logit was -inf (or NaN) after processing
  float logprob = 0.0f;  // raw log_softmax at id, when logprobs >= 0
  std::vector<std::pair<int32_t, float>> top_logprobs;  // when logprobs >= 1, best first
};

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
  // Whether forward_sample is available: it draws the tokens on the device, so that only
  // they (not [rows][vocab] fp32 logits) come back to the host.
  virtual bool samples_on_device() const { return false; }
  // Runs one step and draws one token per requested logits row (rows[i] for row i) on the
  // device; tokens is resized to the row count. Throws std::logic_error unless
  // samples_on_device(), std::invalid_argument for a rows/batch mismatch.
  virtual void forward_sample(const ForwardBatch& batch, std::span<const DeviceSamplingRow> rows,
                              std::vector<DeviceSampledToken>& tokens);
  // "cpu (2 threads)", "NVIDIA H100 80GB HBM3", ...
  virtual std::string device_name() const = 0;

 protected:
  // forward_sample's own check of its input: one sampling row per logits row, else
  // std::invalid_argument (for runners that must refuse before they start the step).
  static void check_sampling_rows(const ForwardBatch& batch,
                                  std::span<const DeviceSamplingRow> rows);
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
