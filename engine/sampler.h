// Token sampling on the CPU from one row of fp32 logits.
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

namespace arbor {

struct SamplingParams {
  float temperature = 1.0f;  // 0 → greedy (argmax)
  int top_k = 0;             // 0 or -1 → disabled
  float top_p = 1.0f;        // nucleus mass, (0, 1]
  float min_p = 0.0f;        // keep tokens with p >= min_p * p_max, [0, 1]
  std::optional<uint64_t> seed;
  float repetition_penalty = 1.0f;  // over prompt + output tokens (HF/vLLM semantics)
  float presence_penalty = 0.0f;    // over output tokens (OpenAI semantics)
  float frequency_penalty = 0.0f;   // over output tokens (OpenAI semantics)
  std::vector<std::pair<int32_t, float>> logit_bias;  // added to the logits
  int logprobs = -1;  // -1: none; 0: chosen token only; N: chosen + top N

  // Throws std::invalid_argument naming the field and the allowed range.
  void validate(int vocab_size) const;
};

struct SampledToken {
  int32_t id = -1;
  float logprob = 0.0f;  // log-probability under the model's raw distribution (log_softmax
                         // of the unprocessed logits), as vLLM reports by default
  std::vector<std::pair<int32_t, float>> top_logprobs;  // best first, when requested
};

// One sampler per sequence: it owns the sequence's random generator, so a seeded request
// gives the same tokens whatever else is in the batch.
class Sampler {
 public:
  explicit Sampler(SamplingParams params);

  // Order of processing: logit_bias, repetition penalty, presence/frequency penalties,
  // then temperature (greedy if 0), top-k, top-p, min-p, then a draw.
  SampledToken sample(std::span<const float> logits, std::span<const int32_t> prompt_ids,
                      std::span<const int32_t> output_ids);

  const SamplingParams& params() const { return params_; }

 private:
  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> work_;  // scratch, reused between steps
};

}  // namespace arbor
