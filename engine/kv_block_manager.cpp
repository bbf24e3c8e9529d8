#include "engine/kv_block_manager.h"

#include <stdexcept>
#include <string>

namespace arbor {

KvBlockManager::KvBlockManager(int num_blocks, int block_size)
    : block_size_(block_size), in_use_(num_blocks > 0 ? num_blocks : 0, 0) {
  if (num_blocks <= 0 || block_size <= 0)
    throw std::invalid_argument("KV cache needs a positive number of blocks and block size");
  free_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

double KvBlockManager::usage() const {
  return 1.0 - double(free_.size()) / double(in_use_.size());
}

bool KvBlockManager::reserve(std::vector<int32_t>& table, int num_tokens) {
  const int needed = blocks_for(num_tokens) - int(table.size());
  if (needed <= 0) return true;
  if (needed > int(free_.size())) return false;
  for (int i = 0; i < needed; ++i) {
    int32_t b = free_.back();
    free_.pop_back();
    in_use_[b] = 1;
    table.push_back(b);
  }
  return true;
}

void KvBlockManager::release(std::vector<int32_t>& table) {
  for (int32_t b : table) {
    if (b < 0 || b >= num_blocks() || !in_use_[b])
      throw std::logic_error("KV block " + std::to_string(b) + " released but not in use");
    in_use_[b] = 0;
    free_.push_back(b);
  }
  table.clear();
}

}  // namespace arbor
