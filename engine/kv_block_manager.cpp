#include "engine/kv_block_manager.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace arbor {
namespace {

constexpr uint64_t kRootHash = 0x6a09e667f3bcc908ull;  // parent key of a sequence's first block

uint64_t mix(uint64_t x) {  // splitmix64's finalizer
  x ^= x >> 30;
  x *= 0xbf58476d1ce4e5b9ull;
  x ^= x >> 27;
  x *= 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

}  // namespace

KvBlockManager::KvBlockManager(int num_blocks, int block_size, bool enable_prefix_caching)
    : block_size_(block_size), prefix_caching_(enable_prefix_caching) {
  if (num_blocks <= 0 || block_size <= 0)
    throw std::invalid_argument("KV cache needs a positive number of blocks and block size");
  blocks_.resize(num_blocks);
  if (prefix_caching_) block_tokens_.resize(size_t(num_blocks) * block_size);
  free_.reserve(num_blocks);
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

double KvBlockManager::usage() const {
  return double(num_used_blocks()) / num_blocks();
}

KvCacheUsage KvBlockManager::usage_stats() const {
  KvCacheUsage u;
  u.num_blocks = num_blocks();
  u.used_blocks = num_used_blocks();
  u.cached_blocks = num_cached_blocks();
  u.free_blocks = num_free_blocks();
  u.prefix_query_tokens = query_tokens_;
  u.prefix_hit_tokens = hit_tokens_;
  return u;
}

uint64_t KvBlockManager::block_hash(uint64_t parent, std::span<const int32_t> tokens) const {
  uint64_t h = mix(parent ^ 0x9e3779b97f4a7c15ull);
  for (int32_t t : tokens) h = mix(h ^ uint32_t(t)) + 0x9e3779b97f4a7c15ull;
  return h;
}

bool KvBlockManager::same_content(int32_t block, uint64_t parent,
                                  std::span<const int32_t> tokens) const {
  const int32_t* stored = block_tokens_.data() + size_t(block) * block_size_;
  return blocks_[block].parent_hash == parent && std::equal(tokens.begin(), tokens.end(), stored);
}

int32_t KvBlockManager::take_block() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else {
    b = evictable_.front();  // callers checked num_free_blocks()
    evictable_.pop_front();
    Block& blk = blocks_[b];
    cached_.erase(blk.hash);
    blk.cached = false;
  }
  blocks_[b].ref_count = 1;
  return b;
}

void KvBlockManager::add_ref(int32_t block) {
  Block& blk = blocks_[block];
  if (blk.ref_count == 0) evictable_.erase(blk.lru);  // only cached blocks are shared at 0
  ++blk.ref_count;
}

void KvBlockManager::drop_ref(int32_t block) {
  if (block < 0 || block >= num_blocks() || blocks_[block].ref_count <= 0)
    throw std::logic_error("KV block " + std::to_string(block) + " released but not in use");
  Block& blk = blocks_[block];
  if (--blk.ref_count > 0) return;
  if (blk.cached) {
    blk.lru = evictable_.insert(evictable_.end(), block);
  } else {
    free_.push_back(block);
  }
}

bool KvBlockManager::reserve(std::vector<int32_t>& table, int num_tokens) {
  const int needed = blocks_for(num_tokens) - int(table.size());
  if (needed <= 0) return true;
  if (needed > num_free_blocks()) return false;
  for (int i = 0; i < needed; ++i) table.push_back(take_block());
  return true;
}

void KvBlockManager::release(std::vector<int32_t>& table) {
  for (auto it = table.rbegin(); it != table.rend(); ++it) drop_ref(*it);
  table.clear();
}

int KvBlockManager::allocate_with_prefix(std::vector<int32_t>& table, std::vector<uint64_t>& hashes,
                                         std::span<const int32_t> tokens, int num_tokens) {
  if (!table.empty()) throw std::logic_error("allocate_with_prefix needs an empty block table");
  std::vector<int32_t> matched;
  std::vector<uint64_t> matched_hashes;
  int reused_evictable = 0;
  if (prefix_caching_ && !tokens.empty()) {
    const int max_blocks = (int(tokens.size()) - 1) / block_size_;
    uint64_t parent = kRootHash;
    for (int i = 0; i < max_blocks; ++i) {
      std::span<const int32_t> content = tokens.subspan(size_t(i) * block_size_, block_size_);
      const uint64_t h = block_hash(parent, content);
      auto it = cached_.find(h);
      if (it == cached_.end() || !same_content(it->second, parent, content)) break;
      matched.push_back(it->second);
      matched_hashes.push_back(h);
      if (blocks_[it->second].ref_count == 0) ++reused_evictable;
      parent = h;
    }
  }
  const int fresh = std::max(0, blocks_for(num_tokens) - int(matched.size()));
  if (fresh + reused_evictable > num_free_blocks()) return -1;
  for (int32_t b : matched) add_ref(b);  // before take_block() so they are not evicted
  table = std::move(matched);
  for (int i = 0; i < fresh; ++i) table.push_back(take_block());
  hashes = std::move(matched_hashes);
  const int hit = int(hashes.size()) * block_size_;
  if (prefix_caching_) {
    query_tokens_ += tokens.size();
    hit_tokens_ += hit;
  }
  return hit;
}

void KvBlockManager::commit(std::span<const int32_t> table, std::vector<uint64_t>& hashes,
                            std::span<const int32_t> tokens, int num_computed) {
  if (!prefix_caching_) return;
  const int full = std::min(num_computed / block_size_, int(table.size()));
  for (int i = int(hashes.size()); i < full; ++i) {
    const uint64_t parent = i == 0 ? kRootHash : hashes[i - 1];
    std::span<const int32_t> content = tokens.subspan(size_t(i) * block_size_, block_size_);
    const uint64_t h = block_hash(parent, content);
    hashes.push_back(h);
    const int32_t b = table[i];
    Block& blk = blocks_[b];
    if (blk.cached || cached_.count(h)) continue;  // an equal block is already cached
    blk.cached = true;
    blk.hash = h;
    blk.parent_hash = parent;
    std::copy(content.begin(), content.end(), block_tokens_.begin() + size_t(b) * block_size_);
    cached_.emplace(h, b);
  }
}

int KvBlockManager::fork(std::span<const int32_t> parent, std::span<const uint64_t> parent_hashes,
                         int num_tokens, std::vector<int32_t>& child,
                         std::vector<uint64_t>& child_hashes) {
  if (!child.empty()) throw std::logic_error("fork needs an empty child block table");
  const int shared = std::min(num_tokens / block_size_, int(parent.size()));
  for (int i = 0; i < shared; ++i) {
    add_ref(parent[i]);
    child.push_back(parent[i]);
  }
  child_hashes.assign(parent_hashes.begin(),
                      parent_hashes.begin() + std::min<size_t>(shared, parent_hashes.size()));
  return shared * block_size_;
}

void KvBlockManager::check_consistency() const {
  auto fail = [](const std::string& what) {
    throw std::logic_error("KV block manager inconsistent: " + what);
  };
  std::vector<uint8_t> where(blocks_.size(), 0);  // 1 free, 2 evictable
  for (int32_t b : free_) {
    if (where[b]) fail("block " + std::to_string(b) + " twice in the free list");
    where[b] = 1;
    if (blocks_[b].ref_count != 0 || blocks_[b].cached) fail("free block in use or cached");
  }
  for (int32_t b : evictable_) {
    if (where[b]) fail("block " + std::to_string(b) + " both free and evictable");
    where[b] = 2;
    if (blocks_[b].ref_count != 0 || !blocks_[b].cached) fail("evictable block not cached");
  }
  for (size_t b = 0; b < blocks_.size(); ++b) {
    const Block& blk = blocks_[b];
    if (blk.ref_count < 0) fail("negative reference count");
    if (blk.ref_count == 0 && !where[b]) fail("unreferenced block " + std::to_string(b) + " lost");
    if (blk.cached) {
      auto it = cached_.find(blk.hash);
      if (it == cached_.end() || it->second != int32_t(b)) fail("cached block not in the map");
    }
  }
  for (const auto& [h, b] : cached_)
    if (!blocks_[b].cached || blocks_[b].hash != h) fail("map entry for an uncached block");
}

}  // namespace arbor
