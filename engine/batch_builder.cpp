#include "engine/batch_builder.h"

#include <algorithm>
#include <stdexcept>

namespace arbor {

ForwardBatch build_forward_batch(std::span<const ScheduledChunk> chunks, int block_size,
                                 bool all_logits) {
  ForwardBatch b;
  int max_blocks = 1;
  for (const ScheduledChunk& c : chunks) {
    if (c.count <= 0 || c.start < 0 || c.start + c.count > int(c.tokens.size()))
      throw std::invalid_argument("scheduled chunk outside its sequence");
    if (int64_t(c.block_table.size()) * block_size < c.start + c.count)
      throw std::invalid_argument("block table too short for scheduled chunk");
    max_blocks = std::max(max_blocks, int(c.block_table.size()));
  }
  b.max_blocks_per_seq = max_blocks;
  b.query_start.push_back(0);
  for (const ScheduledChunk& c : chunks) {
    for (int i = 0; i < c.count; ++i) {
      const int pos = c.start + i;
      b.token_ids.push_back(c.tokens[pos]);
      b.positions.push_back(pos);
      b.slot_mapping.push_back(c.block_table[pos / block_size] * block_size + pos % block_size);
      if (all_logits || (c.want_logits && i == c.count - 1))
        b.logits_rows.push_back(int32_t(b.token_ids.size()) - 1);
    }
    b.query_start.push_back(int32_t(b.token_ids.size()));
    b.context_lens.push_back(c.start + c.count);
    const size_t row = b.block_tables.size();
    b.block_tables.resize(row + max_blocks, -1);
    std::copy(c.block_table.begin(), c.block_table.end(), b.block_tables.begin() + row);
  }
  return b;
}

}  // namespace arbor
