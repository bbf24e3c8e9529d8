// Layout of the paged KV cache, shared by the CPU reference ops and the CUDA kernels.
//
// One layer's cache is two arrays (K and V), each laid out as
//   [num_blocks][num_kv_heads][block_size][head_dim]
// so that one (block, kv head) tile of block_size × head_dim values is contiguous: a
// decode kernel reads whole tiles. K is stored after RoPE. A token at position `p` of a
// sequence lives in block `block_table[p / block_size]`, at offset `p % block_size`; its
// "slot" is `block * block_size + offset`.
#pragma once

#include <cstddef>
#include <cstdint>

namespace arbor {

struct PagedKvShape {
  int num_blocks = 0;
  int num_kv_heads = 0;
  int block_size = 0;
  int head_dim = 0;

  // Elements in one layer's K (or V) array.
  size_t layer_elements() const {
    return size_t(num_blocks) * num_kv_heads * block_size * head_dim;
  }
  // Element offset of (block, kv_head, offset_in_block, 0).
  size_t offset(int block, int kv_head, int offset_in_block) const {
    return ((size_t(block) * num_kv_heads + kv_head) * block_size + offset_in_block) * head_dim;
  }
};

// Describes which cache rows a ragged batch of query tokens attends to. Sequence `s` owns
// query tokens [query_start[s], query_start[s+1]) of the flat token list; the last of them
// sits at position context_lens[s] - 1, so a prefill chunk of n tokens attends causally to
// the context_lens[s] - n earlier tokens plus itself, and a decode token (n = 1) to all.
// block_tables is num_seqs × max_blocks_per_seq (row-major, int32).
struct AttentionBatch {
  int num_seqs = 0;
  const int32_t* query_start = nullptr;   // [num_seqs + 1]
  const int32_t* context_lens = nullptr;  // [num_seqs]
  const int32_t* block_tables = nullptr;  // [num_seqs][max_blocks_per_seq]
  int max_blocks_per_seq = 0;
};

}  // namespace arbor
