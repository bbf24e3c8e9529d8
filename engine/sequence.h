// One sequence of tokens the scheduler moves through its states:
//
//   waiting ──admit──▶ running ──finish──▶ finished
//      ▲                  │
//      └──── preempted ◀──┘   (blocks freed; its tokens, generated ones included, are
//                              recomputed as a prompt when it is admitted again)
//
// Pure bookkeeping: tokens, how many of them have K/V in the cache, the block table. The
// engine keeps sampler and detokenizer state next to it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "engine/request.h"

namespace arbor {

enum class SequenceStatus { kWaiting, kRunning, kPreempted, kFinished };
const char* sequence_status_name(SequenceStatus status);

struct Sequence {
  Sequence(uint64_t request, int sample_index, std::vector<int32_t> prompt)
      : request_id(request),
        index(sample_index),
        tokens(std::move(prompt)),
        prompt_len(int(tokens.size())) {}

  uint64_t request_id = 0;
  int index = 0;                // which of the request's n samples
  uint64_t arrival = 0;         // set by the scheduler: FCFS order, larger is newer
  std::vector<int32_t> tokens;  // prompt, then generated ids
  int prompt_len = 0;
  int num_computed = 0;                // leading tokens whose K/V are in the cache
  std::vector<int32_t> block_table;    // blocks holding tokens [0, num_computed + ...)
  std::vector<uint64_t> block_hashes;  // prefix-cache keys of the full computed blocks
  SequenceStatus status = SequenceStatus::kWaiting;
  std::optional<FinishReason> finish_reason;
  int num_preemptions = 0;
  int num_cached_tokens = -1;  // prefix-cache hit at first admission (-1: not admitted yet)

  int num_tokens() const { return int(tokens.size()); }
  int num_output() const { return int(tokens.size()) - prompt_len; }
  std::span<const int32_t> prompt() const { return {tokens.data(), size_t(prompt_len)}; }
  std::span<const int32_t> output() const {
    return {tokens.data() + prompt_len, tokens.size() - size_t(prompt_len)};
  }
  bool is_finished() const { return status == SequenceStatus::kFinished; }
  // Waiting or preempted: in the scheduler's waiting queue, no blocks.
  bool is_waiting() const {
    return status == SequenceStatus::kWaiting || status == SequenceStatus::kPreempted;
  }
};

}  // namespace arbor
