// One model step's input: a flat, ragged list of tokens from several sequences. Each
// sequence contributes either a prefill chunk (several new tokens) or one decode token; all
// new tokens' K/V are written to the cache slots given by slot_mapping before attention.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "kernels/paged_kv.h"

namespace arbor {

struct ForwardBatch {
  std::vector<int32_t> token_ids;     // [n_tokens]
  std::vector<int32_t> positions;     // [n_tokens], position of each token in its sequence
  std::vector<int32_t> slot_mapping;  // [n_tokens], cache slot = block * block_size + offset
  std::vector<int32_t> query_start;   // [num_seqs + 1], offsets into the token list
  std::vector<int32_t> context_lens;  // [num_seqs], tokens in cache after this step
  std::vector<int32_t> block_tables;  // [num_seqs][max_blocks_per_seq], -1 padded
  int max_blocks_per_seq = 0;
  std::vector<int32_t> logits_rows;  // token rows whose logits the caller wants

  int num_tokens() const { return int(token_ids.size()); }
  int num_seqs() const { return int(context_lens.size()); }
  AttentionBatch attention_batch() const {
    return AttentionBatch{num_seqs(), query_start.data(), context_lens.data(), block_tables.data(),
                          max_blocks_per_seq};
  }
};

// A batch as bytes and back: what the leader rank sends every other rank each step under
// context parallelism. serialize appends to `bytes` (so a caller can put a header first);
// deserialize throws std::invalid_argument for truncated or inconsistent bytes (never reads
// past the span).
void serialize_forward_batch(const ForwardBatch& batch, std::vector<uint8_t>& bytes);
ForwardBatch deserialize_forward_batch(std::span<const uint8_t> bytes);

}  // namespace arbor
