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

#if defined(__CUDACC__)
#define ARBOR_HOST_DEVICE __host__ __device__
#else
#define ARBOR_HOST_DEVICE
#endif

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
  // Context parallelism (tree attention across ranks): this cache holds only rank cp_rank's
  // share of each sequence. See local_kv_len below; context_lens stay global.
  int cp_size = 1;
  int cp_rank = 0;
};

// Context-parallel KV layout. The engine allocates "super-blocks" of cp_size × block_size
// positions; super-block j of a sequence (block table entry j) is striped over the ranks:
// positions [j·cp_size·bs + r·bs, j·cp_size·bs + (r+1)·bs) live on rank r, in block
// block_tables[j] of rank r's own cache (every rank uses the same table). So rank r's local
// keys, in order, are its share of super-blocks 0, 1, 2, ...: all full blocks except the
// last, the local key index k maps to block table entry k / bs, and positions increase with
// k. A sequence grows round-robin over the ranks, block by block, so shards stay balanced.
//
// Number of the first `global_len` positions of a sequence that rank `cp_rank` holds. A query
// at position p sees exactly local keys [0, local_kv_len(p + 1)) of this rank (causality in
// local-index space). With cp_size = 1 this is global_len.
ARBOR_HOST_DEVICE inline int local_kv_len(int global_len, int cp_size, int cp_rank,
                                          int block_size) {
  if (cp_size == 1) return global_len;
  const int stripe = cp_size * block_size;
  const int full = global_len / stripe;
  const int rem = global_len - full * stripe - cp_rank * block_size;
  return full * block_size + (rem < 0 ? 0 : rem > block_size ? block_size : rem);
}

// The engine's cache slot (super-block · cp_size·bs + offset) of a new token, as a slot of
// rank cp_rank's cache (block · bs + offset), or -1 when another rank holds that position.
ARBOR_HOST_DEVICE inline int32_t local_slot(int32_t engine_slot, int cp_size, int cp_rank,
                                            int block_size) {
  if (cp_size == 1 || engine_slot < 0) return engine_slot;
  const int stripe = cp_size * block_size;
  const int32_t block = engine_slot / stripe, offset = engine_slot % stripe;
  if (offset / block_size != cp_rank) return -1;
  return block * block_size + offset % block_size;
}

}  // namespace arbor
