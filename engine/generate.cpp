#include "engine/generate.h"

#include <algorithm>
#include <chrono>
#include <stdexcept>

#include "engine/batch_builder.h"
#include "engine/kv_block_manager.h"
#include "tokenizer/incremental_detokenizer.h"

namespace arbor {

GenerateResult generate(ModelRunner& runner, const Tokenizer& tokenizer,
                        const std::vector<int32_t>& prompt_ids, const GenerateOptions& options,
                        const std::function<void(std::string_view)>& on_text) {
  using Clock = std::chrono::steady_clock;
  const LlamaConfig& config = runner.config();
  const int context_limit = config.max_position_embeddings;
  const int prompt_len = int(prompt_ids.size());
  if (prompt_len == 0) throw std::invalid_argument("the prompt is empty");
  if (prompt_len >= context_limit)
    throw std::invalid_argument("the prompt has " + std::to_string(prompt_len) +
                                " tokens; the model's context is " + std::to_string(context_limit) +
                                " tokens");
  if (options.max_tokens < 0) throw std::invalid_argument("max_tokens must be >= 0");
  options.sampling.validate(config.vocab_size);
  const int max_new = std::min(options.max_tokens, context_limit - prompt_len);

  const int block_size = runner.block_size();
  KvBlockManager blocks(runner.num_kv_blocks(), block_size);
  std::vector<int32_t> block_table;
  std::vector<int32_t> tokens = prompt_ids;
  if (!blocks.reserve(block_table, prompt_len + max_new))
    throw std::invalid_argument("the prompt and max_tokens need " +
                                std::to_string(blocks.blocks_for(prompt_len + max_new)) +
                                " KV cache blocks of " + std::to_string(block_size) +
                                " tokens; the cache has " + std::to_string(blocks.num_blocks()));
  const int chunk_size = std::max(1, std::min(options.prefill_chunk, runner.max_batch_tokens()));

  GenerateResult result;
  result.prompt_tokens = prompt_len;
  Sampler sampler(options.sampling);
  IncrementalDetokenizer detok(tokenizer, prompt_ids);
  std::vector<float> logits;
  // Runners that sample on their device draw there, as the serving engine does (the same
  // generator and keys): each step that wants logits returns the next token instead.
  const bool on_device = runner.samples_on_device();
  const SamplingParams& sp = options.sampling;
  DeviceSamplingRow row = device_sampling_row(sp, sp.seed ? *sp.seed : random_sampling_seed());
  row.prompt_ids = prompt_ids;
  std::vector<DeviceSampledToken> drawn;
  // One model step: logits for the host sampler, or the token drawn on the device.
  const auto run = [&](const ScheduledChunk& chunk) {
    const ForwardBatch batch = build_forward_batch({&chunk, 1}, block_size);
    if (!on_device || !chunk.want_logits) return runner.forward(batch, logits);
    row.output_ids = std::span<const int32_t>(tokens).subspan(size_t(prompt_len));
    row.step = row.output_ids.size();
    runner.forward_sample(batch, {&row, 1}, drawn);
  };

  const auto stop_requested = [&] { return options.stop_requested && options.stop_requested(); };
  const auto seconds_since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };

  // Chunked prefill: only the last chunk's last token needs logits.
  const auto t0 = Clock::now();
  for (int start = 0; start < prompt_len; start += chunk_size) {
    if (stop_requested()) {
      result.finish_reason = FinishReason::kAbort;
      result.prefill_seconds = seconds_since(t0);
      blocks.release(block_table);
      return result;
    }
    ScheduledChunk chunk{tokens, block_table, start, std::min(chunk_size, prompt_len - start),
                         false};
    chunk.want_logits = start + chunk.count == prompt_len;
    run(chunk);
  }
  const auto t1 = Clock::now();
  result.prefill_seconds = std::chrono::duration<double>(t1 - t0).count();

  const std::vector<int>& eos = config.eos_token_ids;
  std::span<const int32_t> prompt_span(prompt_ids);
  for (int step = 0; step < max_new; ++step) {
    std::span<const int32_t> output_span(tokens.data() + prompt_len, tokens.size() - prompt_len);
    SampledToken tok = on_device ? take_device_token(drawn.at(0))
                                 : sampler.sample(logits, prompt_span, output_span);
    tokens.push_back(tok.id);
    result.output_ids.push_back(tok.id);
    result.sampled.push_back(std::move(tok));
    const int32_t id = result.output_ids.back();
    if (!options.ignore_eos && std::find(eos.begin(), eos.end(), id) != eos.end()) {
      result.finish_reason = FinishReason::kStop;
      break;
    }
    if (std::string text = detok.push(id); !text.empty()) on_text(text);
    if (step + 1 == max_new) break;  // no logits needed after the last token
    if (stop_requested()) {
      result.finish_reason = FinishReason::kAbort;
      break;
    }
    ScheduledChunk chunk{tokens, block_table, int(tokens.size()) - 1, 1, true};
    run(chunk);
  }
  if (std::string rest = detok.flush(); !rest.empty()) on_text(rest);
  result.decode_seconds = seconds_since(t1);
  blocks.release(block_table);
  return result;
}

}  // namespace arbor
