// Turns the work of one step (a chunk of new tokens per sequence) into a ForwardBatch.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "models/forward_batch.h"

namespace arbor {

struct ScheduledChunk {
  std::span<const int32_t> tokens;       // all tokens of the sequence so far
  std::span<const int32_t> block_table;  // must already cover start + count tokens
  int start = 0;                         // tokens already in the KV cache
  int count = 0;                         // new tokens computed this step
  bool want_logits = true;               // logits of the chunk's last token
};

// all_logits: every new token's logits (for tests and prompt logprobs), not only the last.
ForwardBatch build_forward_batch(std::span<const ScheduledChunk> chunks, int block_size,
                                 bool all_logits = false);

}  // namespace arbor
