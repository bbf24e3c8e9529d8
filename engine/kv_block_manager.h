// Bookkeeping of the paged KV cache: a pool of fixed-size blocks and, per sequence, a block
// table (the blocks holding its tokens, in order). Pure CPU state, no device memory: the
// backend's cache storage is indexed by the block ids handed out here.
//
// Blocks are reference-counted, so sequences can share the blocks of a common prefix:
//  - prefix caching (on by default): a full, computed block is keyed by
//    hash(parent block's key, its tokens). A new sequence starts with the cached blocks that
//    match its first tokens. A cached block nobody uses any more goes to an LRU list of
//    evictable blocks: still found by later sequences, reused for new data only when no
//    never-cached block is free (least recently freed first).
//  - fork: a sequence can share another's full blocks (n > 1 samples of one prompt).
// Only full blocks are ever shared, and the engine never writes into a full block, so a
// shared block needs no copy-on-write.
#pragma once

#include <cstdint>
#include <list>
#include <span>
#include <unordered_map>
#include <vector>

namespace arbor {

struct KvCacheUsage {
  int num_blocks = 0;
  int used_blocks = 0;    // referenced by at least one sequence
  int cached_blocks = 0;  // holding a prefix-cache key (used or evictable)
  int free_blocks = 0;    // allocatable: never-cached free blocks + evictable cached ones
  uint64_t prefix_query_tokens = 0;  // tokens looked up in the prefix cache
  uint64_t prefix_hit_tokens = 0;    // of those, found there

  double usage() const { return num_blocks ? double(used_blocks) / num_blocks : 0.0; }
  double hit_rate() const {
    return prefix_query_tokens ? double(prefix_hit_tokens) / double(prefix_query_tokens) : 0.0;
  }
};

class KvBlockManager {
 public:
  KvBlockManager(int num_blocks, int block_size, bool enable_prefix_caching = true);

  int num_blocks() const { return int(blocks_.size()); }
  int block_size() const { return block_size_; }
  bool prefix_caching() const { return prefix_caching_; }
  // Blocks a new allocation can take (free + evictable).
  int num_free_blocks() const { return int(free_.size() + evictable_.size()); }
  int num_used_blocks() const { return num_blocks() - num_free_blocks(); }
  int num_cached_blocks() const { return int(cached_.size()); }
  // Fraction of blocks referenced by sequences, [0, 1].
  double usage() const;
  KvCacheUsage usage_stats() const;
  int ref_count(int32_t block) const { return blocks_.at(block).ref_count; }

  // Blocks needed to hold num_tokens tokens.
  int blocks_for(int num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

  // Grows `table` until it covers num_tokens tokens. Returns false, changing nothing, when
  // the pool has too few free blocks.
  bool reserve(std::vector<int32_t>& table, int num_tokens);
  // Drops the references of `table` (last block first, so that a prefix's tail is evicted
  // before its head) and clears it. Throws std::logic_error on a block that is not in use (a
  // double free is a bug that would corrupt other sequences).
  void release(std::vector<int32_t>& table);

  // For a sequence with an empty table: takes the cached blocks matching the longest prefix
  // of `tokens` made of full blocks, short of its last token (which must be computed to get
  // logits), then fresh blocks until the table covers num_tokens. Fills `hashes` with the
  // matched blocks' keys. Returns the number of tokens found in the cache, or -1, changing
  // nothing, when the pool has too few free blocks.
  int allocate_with_prefix(std::vector<int32_t>& table, std::vector<uint64_t>& hashes,
                           std::span<const int32_t> tokens, int num_tokens);
  // After a step computed tokens [.., num_computed): keys every newly full block (appending
  // to `hashes`) and enters it in the prefix cache unless an equal block is already there.
  void commit(std::span<const int32_t> table, std::vector<uint64_t>& hashes,
              std::span<const int32_t> tokens, int num_computed);
  // Makes `child` share the full blocks of `parent` that hold its first num_tokens tokens
  // (`child` must be empty). Returns the number of tokens shared.
  int fork(std::span<const int32_t> parent, std::span<const uint64_t> parent_hashes, int num_tokens,
           std::vector<int32_t>& child, std::vector<uint64_t>& child_hashes);

  // Throws std::logic_error unless the free/evictable/cached structures agree with the
  // reference counts (for tests).
  void check_consistency() const;

 private:
  struct Block {
    int ref_count = 0;
    bool cached = false;  // entered in cached_ under `hash`
    uint64_t hash = 0;
    uint64_t parent_hash = 0;
    std::list<int32_t>::iterator lru;  // valid while evictable
  };

  uint64_t block_hash(uint64_t parent, std::span<const int32_t> tokens) const;
  bool same_content(int32_t block, uint64_t parent, std::span<const int32_t> tokens) const;
  int32_t take_block();  // a free block, else the least recently used evictable one
  void add_ref(int32_t block);
  void drop_ref(int32_t block);

  int block_size_;
  bool prefix_caching_;
  std::vector<Block> blocks_;
  std::vector<int32_t> block_tokens_;  // [num_blocks][block_size]: content of cached blocks
  std::vector<int32_t> free_;          // stack of never-cached free blocks; lowest id on top
  std::list<int32_t> evictable_;       // cached, unreferenced; front = least recently freed
  std::unordered_map<uint64_t, int32_t> cached_;  // key → block
  uint64_t query_tokens_ = 0;
  uint64_t hit_tokens_ = 0;
};

}  // namespace arbor
