// Offline generation of one prompt: chunked prefill, then a decode loop with sampling (on the
// runner's device when it can, ModelRunner::forward_sample, as the serving engine does; else
// on the host), stop conditions and streaming of UTF-8-safe text increments. This is what
// `arbor generate` runs; the serving engine (continuous batching) builds on the same parts.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/request.h"
#include "engine/sampler.h"
#include "models/model_runner.h"
#include "tokenizer/tokenizer.h"

namespace arbor {

struct GenerateOptions {
  SamplingParams sampling;
  int max_tokens = 128;
  bool ignore_eos = false;
  int prefill_chunk = 512;  // tokens per prefill step; bounds activation memory
  // Asked before every model step; true ends generation there with FinishReason::kAbort and
  // what was generated until then (e.g. Ctrl-C in `arbor generate`).
  std::function<bool()> stop_requested;
};

struct GenerateResult {
  std::vector<int32_t> output_ids;
  std::vector<SampledToken> sampled;  // per output token (logprobs when requested)
  FinishReason finish_reason = FinishReason::kLength;
  int prompt_tokens = 0;
  double prefill_seconds = 0;
  double decode_seconds = 0;  // from the first to the last generated token
};

// Generates from prompt_ids on `runner` (whose KV cache it uses from block 0 on; nothing
// else may run on the runner meanwhile). Every text increment goes to on_text as soon as it
// is stable. Stops at an EOS id (config's list, unless ignore_eos), after max_tokens, or at
// the model's context limit, or when options.stop_requested says so. Throws
// std::invalid_argument when the prompt is empty, already fills the context, or needs more KV
// blocks than the runner has.
GenerateResult generate(ModelRunner& runner, const Tokenizer& tokenizer,
                        const std::vector<int32_t>& prompt_ids, const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text);

}  // namespace arbor
