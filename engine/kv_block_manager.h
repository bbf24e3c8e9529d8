// Bookkeeping of the paged KV cache: a pool of fixed-size blocks and, per sequence, a block
// table (the blocks holding its tokens, in order). Pure CPU state, no device memory: the
// backend's cache storage is indexed by the block ids handed out here.
#pragma once

#include <cstdint>
#include <vector>

namespace arbor {

class KvBlockManager {
 public:
  KvBlockManager(int num_blocks, int block_size);

  int num_blocks() const { return int(in_use_.size()); }
  int block_size() const { return block_size_; }
  int num_free_blocks() const { return int(free_.size()); }
  // Fraction of blocks in use, [0, 1].
  double usage() const;

  // Blocks needed to hold num_tokens tokens.
  int blocks_for(int num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

  // Grows `table` until it covers num_tokens tokens. Returns false, changing nothing, when
  // the pool has too few free blocks.
  bool reserve(std::vector<int32_t>& table, int num_tokens);
  // Returns every block of `table` to the pool and clears it. Throws std::logic_error on a
  // block that is not in use (a double free is a bug that would corrupt other sequences).
  void release(std::vector<int32_t>& table);

 private:
  int block_size_;
  std::vector<int32_t> free_;  // stack of free block ids; lowest ids handed out first
  std::vector<uint8_t> in_use_;
};

}  // namespace arbor
