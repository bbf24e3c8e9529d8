// Bytes of a Llama model for rooflines (bf16): its weights, what one decode step reads of
// them, and its KV cache per token.
#pragma once

#include "models/config.h"

namespace arbor::bench {

// Every weight stored: embedding table, lm_head unless tied, each layer's norms and
// projections (arbor_bench_decode's and arbor_bench_tree's roofline).
inline double weight_bytes(const LlamaConfig& c) {
  const double h = c.hidden_size;
  const double per_layer = 2.0 * h + h * (c.num_heads + 2 * c.num_kv_heads) * c.head_dim +
                           h * c.num_heads * c.head_dim + 3.0 * h * c.intermediate_size;
  return 2.0 * (double(c.vocab_size) * h * (c.tie_word_embeddings ? 1 : 2) +
                double(c.num_layers) * per_layer);
}

// What one decode step reads: every matrix once, lm_head whole (tied or not), the final
// norm; the embedding only for the batch's rows, ignored (arbor_bench_serve_offline).
inline double weight_bytes_read_per_step(const LlamaConfig& c) {
  const double h = c.hidden_size, d = c.head_dim, q = c.num_heads, kv = c.num_kv_heads,
               inter = c.intermediate_size;
  const double per_layer = h * (q + 2 * kv) * d + q * d * h + 2 * inter * h + inter * h + 2 * h;
  return 2.0 * (c.num_layers * per_layer + double(c.vocab_size) * h + h);
}

// K and V of one token over all layers.
inline double kv_bytes_per_token(const LlamaConfig& c) {
  return 2.0 * 2.0 * c.num_layers * c.num_kv_heads * c.head_dim;
}

}  // namespace arbor::bench
