// Token sampling on the CPU from one row of fp32 logits.
//
// Semantics follow vLLM / HF transformers / the OpenAI API:
//  - Non-finite logits: NaN counts as -inf; +inf tokens share all the mass (uniformly).
//    A row with no finite-or-+inf logit after processing throws std::runtime_error.
//  - temperature < 1e-5 (kGreedyTemperature) is greedy: argmax, ties to the lowest id.
//    top-k / top-p / min-p never change the argmax, so they are skipped then.
//  - Ties in any ordering (top-k boundary, top-p order, top logprobs) go to the lower id.
//  - top-p keeps the smallest prefix of the tokens sorted by probability (renormalized
//    over the top-k survivors) whose cumulative mass reaches top_p; at least one token.
//  - min-p keeps tokens with p >= min_p * p_max (a ratio, so renormalization is irrelevant).
#pragma once

#include <cstdint>
#include <optional>
#include <random>
#include <span>
#include <stdexcept>
#include <utility>
#include <vector>

#include "models/model_runner.h"

namespace arbor {

// Temperatures below this are treated as 0 (greedy), as vLLM does.
inline constexpr float kGreedyTemperature = 1e-5f;

struct SamplingParams {
  float temperature = 1.0f;      // 0 → greedy (argmax); finite, >= 0
  int top_k = 0;                 // 0 or -1 → disabled; else >= 1 (k >= vocab also disables)
  float top_p = 1.0f;            // nucleus mass, (0, 1]
  float min_p = 0.0f;            // keep tokens with p >= min_p * p_max, [0, 1]
  std::optional<uint64_t> seed;  // set → reproducible draws; unset → std::random_device
  // Over the distinct tokens of prompt + output (HF/vLLM): logit > 0 → logit / penalty,
  // else logit * penalty. Finite, > 0; 1 → off.
  float repetition_penalty = 1.0f;
  // Over output tokens (OpenAI/vLLM): logit -= frequency * count; logit -= presence if
  // count > 0. Each in [-2, 2].
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  // Added to the logits; ids in [0, vocab), values in [-100, 100]. Repeated ids add up.
  std::vector<std::pair<int32_t, float>> logit_bias;
  int logprobs = -1;  // -1: none; 0: chosen token only; N in [1, 20]: chosen + top N

  // Throws std::invalid_argument naming the field, the value and the allowed range.
  void validate(int vocab_size) const;
};

struct SampledToken {
  int32_t id = -1;
  // Log-probability under the model's raw distribution (log_softmax of the unprocessed
  // logits, NaN as -inf), as vLLM reports by default. Computed only when
  // params.logprobs >= 0 (it costs a pass of exp over the vocabulary); 0 otherwise.
  float logprob = 0.0f;
  // The min(logprobs, vocab) most likely raw tokens, best first, when logprobs >= 1.
  std::vector<std::pair<int32_t, float>> top_logprobs;
};

// The row a runner that samples on its device (ModelRunner::forward_sample) needs for these
// parameters: the draw keyed by `seed` (the step and the prompt/output ids are the caller's).
DeviceSamplingRow device_sampling_row(const SamplingParams& params, uint64_t seed);

// The token a device draw gave (ModelRunner::forward_sample), as Sampler::sample returns it
// (its top logprobs moved out of `drawn`); Sampler::sample's std::runtime_error when every
// logit was -inf or NaN (id -1).
SampledToken take_device_token(DeviceSampledToken& drawn);

// A random 64-bit seed (std::random_device), for requests that set none.
uint64_t random_sampling_seed();

// One sampler per sequence: it owns the sequence's random generator, so a seeded request
// gives the same tokens whatever else is in the batch.
class Sampler {
 public:
  explicit Sampler(SamplingParams params);

  // Order of processing: logit_bias, repetition penalty, presence/frequency penalties,
  // then temperature (greedy if 0), top-k, top-p, min-p, then a draw.
  // The vocabulary size is logits.size(). Throws std::invalid_argument for an empty row or
  // a prompt/output/bias id outside [0, vocab); std::runtime_error when every logit is
  // -inf (or NaN) after processing.
  SampledToken sample(std::span<const float> logits, std::span<const int32_t> prompt_ids,
                      std::span<const int32_t> output_ids);

  const SamplingParams& params() const { return params_; }

 private:
  // A token and a sort key (a logit or an unnormalized probability).
  struct Candidate {
    float value;
    int32_t id;
  };

  void apply_penalties(std::span<const int32_t> prompt_ids, std::span<const int32_t> output_ids);
  int32_t draw();  // from work_ (processed logits), temperature > 0
  void fill_logprobs(std::span<const float> logits, SampledToken& out);
  double uniform01();  // [0, 1), 53 random bits: same stream on every platform

  SamplingParams params_;
  std::mt19937_64 rng_;
  std::vector<float> work_;            // scratch, reused between steps
  std::vector<Candidate> candidates_;  // scratch: top-k / nucleus candidates
  std::vector<uint64_t> seen_;         // scratch: bitset of tokens already penalized
  std::vector<int32_t> sorted_ids_;    // scratch: output ids sorted, for counts
  std::vector<double> bucket_mass_;    // scratch: top-p mass histogram (64 KiB)
};

}  // namespace arbor
