// Paged KV cache write and causal paged attention over a ragged batch (see
// kernels/paged_kv.h for the layout and the batch description).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/dot.h"
#include "kernels/cpu/ops.h"

namespace arbor::cpu {

namespace {

void check_shape(const PagedKvShape& shape, const char* op) {
  if (shape.num_blocks <= 0 || shape.num_kv_heads <= 0 || shape.block_size <= 0 ||
      shape.head_dim <= 0) {
    throw std::invalid_argument(std::string(op) + ": cache shape has a non-positive dimension");
  }
}

}  // namespace

void kv_cache_write(const float* k, const float* v, const int32_t* slot_mapping, int n_tokens,
                    const PagedKvShape& shape, float* k_cache, float* v_cache) {
  check_shape(shape, "kv_cache_write");
  const int64_t num_slots = int64_t(shape.num_blocks) * shape.block_size;
  // Check every slot before writing any, so a bad batch leaves the cache untouched.
  for (int t = 0; t < n_tokens; ++t) {
    if (slot_mapping[t] >= num_slots) {
      throw std::invalid_argument("kv_cache_write: token " + std::to_string(t) + " maps to slot " +
                                  std::to_string(slot_mapping[t]) + " but the cache has " +
                                  std::to_string(num_slots));
    }
  }
  const size_t row = size_t(shape.head_dim);
  for (int t = 0; t < n_tokens; ++t) {
    const int32_t slot = slot_mapping[t];
    if (slot < 0) continue;  // padding token
    const int block = slot / shape.block_size, offset = slot % shape.block_size;
    for (int h = 0; h < shape.num_kv_heads; ++h) {
      const size_t src = (size_t(t) * shape.num_kv_heads + h) * row;
      const size_t dst = shape.offset(block, h, offset);
      std::memcpy(k_cache + dst, k + src, sizeof(float) * row);
      std::memcpy(v_cache + dst, v + src, sizeof(float) * row);
    }
  }
}

namespace {

// Rejects batches that would read outside q, the block tables or the cache. Linear in the
// number of sequences plus blocks in use, so cheap next to the attention itself.
void check_batch(int num_q_heads, const PagedKvShape& shape, const AttentionBatch& b) {
  auto fail = [](const std::string& what) {
    throw std::invalid_argument("paged_attention: " + what);
  };
  check_shape(shape, "paged_attention");
  if (num_q_heads <= 0 || num_q_heads % shape.num_kv_heads != 0) {
    fail("num_q_heads (" + std::to_string(num_q_heads) + ") is not a positive multiple of " +
         "num_kv_heads (" + std::to_string(shape.num_kv_heads) + ")");
  }
  if (b.cp_size < 1 || b.cp_rank < 0 || b.cp_rank >= b.cp_size) {
    fail("context-parallel rank " + std::to_string(b.cp_rank) + " of " + std::to_string(b.cp_size) +
         " is invalid");
  }
  if (b.num_seqs < 0) fail("negative num_seqs");
  if (b.num_seqs == 0) return;
  if (!b.query_start || !b.context_lens || !b.block_tables) fail("null batch array");
  if (b.query_start[0] < 0) fail("query_start[0] is negative");
  for (int s = 0; s < b.num_seqs; ++s) {
    const int n = b.query_start[s + 1] - b.query_start[s];
    const int ctx = b.context_lens[s];
    const std::string seq = "sequence " + std::to_string(s) + ": ";
    if (n < 0) fail(seq + "query_start decreases");
    if (n > ctx) {
      fail(seq + std::to_string(n) + " query tokens but context length " + std::to_string(ctx));
    }
    // Blocks this rank holds (all of them without context parallelism).
    const int local = local_kv_len(ctx, b.cp_size, b.cp_rank, shape.block_size);
    const int blocks = (local + shape.block_size - 1) / shape.block_size;
    if (blocks > b.max_blocks_per_seq) {
      fail(seq + "context length " + std::to_string(ctx) + " needs " + std::to_string(blocks) +
           " blocks, block table has " + std::to_string(b.max_blocks_per_seq));
    }
    const int32_t* table = b.block_tables + size_t(s) * b.max_blocks_per_seq;
    for (int i = 0; i < blocks; ++i) {
      if (table[i] < 0 || table[i] >= shape.num_blocks) {
        fail(seq + "block table entry " + std::to_string(i) + " is " + std::to_string(table[i]) +
             ", cache has " + std::to_string(shape.num_blocks) + " blocks");
      }
    }
  }
}

// Attention of one query head of one token over cache rows [0, len) of its sequence (local
// rows under context parallelism), in two passes: scores and their max, then exp(score - max)
// weights summed with V. `scores` holds at least `len` floats. Writes head_dim outputs and
// returns the natural-log LSE; no rows (an empty shard) gives o = 0 and lse = -inf.
float attend_one(const float* q, const float* k_cache, const float* v_cache,
                 const PagedKvShape& shape, const int32_t* table, int kv_head, int len, float scale,
                 float* scores, float* out) {
  const int bs = shape.block_size, d = shape.head_dim;
  if (len == 0) {
    std::fill(out, out + d, 0.0f);
    return -std::numeric_limits<float>::infinity();
  }
  float max_score = -std::numeric_limits<float>::infinity();
  for (int start = 0; start < len; start += bs) {
    const float* k_tile = k_cache + shape.offset(table[start / bs], kv_head, 0);
    const int rows = std::min(bs, len - start);
    for (int j = 0; j < rows; ++j) {
      const float s = detail::dot(q, k_tile + size_t(j) * d, d) * scale;
      scores[start + j] = s;
      max_score = std::max(max_score, s);
    }
  }
  std::fill(out, out + d, 0.0f);
  float sum = 0.0f;
  for (int start = 0; start < len; start += bs) {
    const float* v_tile = v_cache + shape.offset(table[start / bs], kv_head, 0);
    const int rows = std::min(bs, len - start);
    for (int j = 0; j < rows; ++j) {
      const float p = std::exp(scores[start + j] - max_score);
      sum += p;
      const float* v = v_tile + size_t(j) * d;
      for (int i = 0; i < d; ++i) out[i] += p * v[i];
    }
  }
  const float inv_sum = 1.0f / sum;  // sum >= 1: the max term contributes exp(0)
  for (int i = 0; i < d; ++i) out[i] *= inv_sum;
  return max_score + std::log(sum);
}

}  // namespace

void paged_attention(const float* q, int num_q_heads, const PagedKvShape& shape,
                     const float* k_cache, const float* v_cache, const AttentionBatch& batch,
                     float scale, float* out, float* lse) {
  check_batch(num_q_heads, shape, batch);
  if (batch.num_seqs == 0) return;

  // Flat work list: one entry per query token, naming its sequence and its position.
  struct TokenWork {
    int token, seq, len;  // cache rows the token attends to: position + 1 (local share)
  };
  std::vector<TokenWork> work;
  int max_len = 1;
  for (int s = 0; s < batch.num_seqs; ++s) {
    const int first = batch.query_start[s], n = batch.query_start[s + 1] - first;
    for (int i = 0; i < n; ++i) {
      const int position = batch.context_lens[s] - n + i;
      const int len = local_kv_len(position + 1, batch.cp_size, batch.cp_rank, shape.block_size);
      work.push_back({first + i, s, len});
      max_len = std::max(max_len, len);
    }
  }

  const int group = num_q_heads / shape.num_kv_heads;
  const int d = shape.head_dim;
  const long long items = (long long)work.size() * num_q_heads;
#pragma omp parallel if (items > 1)
  {
    std::vector<float> scores(static_cast<size_t>(max_len));
    // Items differ in length (a prefill chunk's tokens see growing prefixes), so hand them
    // out dynamically.
#pragma omp for schedule(dynamic, 4)
    for (long long item = 0; item < items; ++item) {
      const TokenWork& w = work[size_t(item / num_q_heads)];
      const int h = int(item % num_q_heads);
      const size_t row = (size_t(w.token) * num_q_heads + h) * d;
      const int32_t* table = batch.block_tables + size_t(w.seq) * batch.max_blocks_per_seq;
      const float l = attend_one(q + row, k_cache, v_cache, shape, table, h / group, w.len, scale,
                                 scores.data(), out + row);
      if (lse) lse[size_t(w.token) * num_q_heads + h] = l;
    }
  }
}

}  // namespace arbor::cpu
