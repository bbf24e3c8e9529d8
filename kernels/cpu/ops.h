// CPU reference ops (fp32). Each op is the contract a CUDA kernel must match; the GPU tests
// compare against these. Plain loops, parallelized with OpenMP where it pays.
//
// Conventions: activations are row-major [tokens][features]; linear weights are stored as
// Hugging Face stores them, [out_features][in_features], so `y = x · Wᵀ`.
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/paged_kv.h"

namespace arbor::cpu {

// out[t] = table[ids[t]] for t < n_tokens; table is [vocab][hidden]. Ids must be in range
// (the caller validates them against the vocabulary).
void embedding(const float* table, const int32_t* ids, int n_tokens, int hidden, float* out);

// out[r] = x[r] / sqrt(mean(x[r]²) + eps) * weight, for each of n_rows rows of `dim` values.
// `out` may alias `x`.
void rmsnorm(const float* x, const float* weight, int n_rows, int dim, float eps, float* out);

// In place: x[r] += y[r], then out[r] = rmsnorm(x[r]). The fused "residual add + norm" that
// the decoder layer uses between blocks. `x` keeps the summed residual stream.
void add_rmsnorm(float* x, const float* y, const float* weight, int n_rows, int dim, float eps,
                 float* out);

// out[m][n] = sum_k x[m][k] * w[n][k]   (x: [m][k], w: [n][k], out: [m][n]).
// Each output is summed in a fixed order that does not depend on m or on the thread count, so
// a row's result is the same whether it is computed alone (decode) or in a batch.
void matmul(const float* x, const float* w, int m, int n, int k, float* out);

// gate_up is [n_rows][2 * dim] with the gate half first; out[r][i] = silu(gate) * up.
void silu_mul(const float* gate_up, int n_rows, int dim, float* out);

// RoPE frequencies. Default Llama rope: inv_freq[i] = theta^(-2i/head_dim) for
// i < head_dim/2. With llama3 scaling (rope_type "llama3"), the frequencies are rescaled by
// wavelength exactly as Hugging Face's _compute_llama3_parameters does (same fp32 steps).
// Throws std::invalid_argument for an odd head_dim or inconsistent llama3 parameters.
struct RopeScaling {
  bool llama3 = false;
  float factor = 1.0f;
  float low_freq_factor = 1.0f;
  float high_freq_factor = 4.0f;
  int original_max_position = 8192;
};
std::vector<float> rope_inv_freq(int head_dim, float theta, const RopeScaling& scaling);

// Rotates, in place, `n_heads` heads of `head_dim` values for each token, in the
// Hugging Face "rotate half" convention: element i pairs with element i + head_dim/2.
// x is [n_tokens][n_heads][head_dim]; positions[t] is the token's position. The angle is
// float(position) * inv_freq[i] rounded to fp32, as in Hugging Face.
void rope(float* x, const int32_t* positions, int n_tokens, int n_heads, int head_dim,
          const float* inv_freq);

// Writes the K and V rows of n_tokens new tokens into one layer's paged cache:
// token t goes to slot slot_mapping[t] (= block * block_size + offset). k and v are
// [n_tokens][num_kv_heads][head_dim]. A negative slot marks a padding token and is skipped
// (vLLM's convention, for padded batches); a slot past the cache throws
// std::invalid_argument before anything is written.
void kv_cache_write(const float* k, const float* v, const int32_t* slot_mapping, int n_tokens,
                    const PagedKvShape& shape, float* k_cache, float* v_cache);

// Causal attention of a ragged batch of query tokens over the paged cache (which must
// already hold the new tokens' K/V). q is [n_tokens][num_q_heads][head_dim], out has the
// same shape. num_q_heads must be a multiple of shape.num_kv_heads (GQA: query head h reads
// kv head h / (num_q_heads / num_kv_heads)). scale multiplies q·k (normally 1/sqrt(head_dim)).
// If lse is not null it receives, per [token][q_head], the natural-log log-sum-exp of the
// scaled scores — the quantity flash-decoding partials are merged with.
// Throws std::invalid_argument (before computing anything) for a batch that would read out of
// bounds: more query tokens than context, a block table too short for the context or naming
// a block outside the cache, decreasing query_start, or a bad head count.
void paged_attention(const float* q, int num_q_heads, const PagedKvShape& shape,
                     const float* k_cache, const float* v_cache, const AttentionBatch& batch,
                     float scale, float* out, float* lse = nullptr);

// ---- Merging partial attentions (context parallelism: one partial per rank).
// A partial is, per row (token × query head), the attention output o normalized over its own
// keys and the natural-log LSE of its scaled scores; partials over disjoint key sets merge
// exactly: M = max lse_p, w_p = exp(lse_p − M), out = Σ w_p·o_p / Σ w_p, lse = M + ln Σ w_p.
// A partial with no keys has lse = -inf and weight 0; if every partial is empty the output is
// 0 and its lse -inf (never NaN). The "packed" row layout is [head_dim values][1 value].

// packed[r] = (o[r], lse[r]): what ranks exchange in the all-gather strategy.
void pack_partials(const float* o, const float* lse, size_t rows, int head_dim, float* packed);

// Merges `parts` packed partials, part p's row r at gathered[(p·rows + r)·(head_dim + 1)]
// (what an all-gather of pack_partials returns). out is [rows][head_dim]; out_lse optional.
void merge_packed_partials(const float* gathered, int parts, size_t rows, int head_dim, float* out,
                           float* out_lse = nullptr);

// All-reduce strategy, step 2 (after an all-reduce max of lse into max_lse):
// weighted[r] = (w·o[r], w) with w = exp(lse[r] − max_lse[r]) (0 when lse is -inf), to be
// summed over ranks by an all-reduce.
void weight_partials(const float* o, const float* lse, const float* max_lse, size_t rows,
                     int head_dim, float* weighted);

// All-reduce strategy, step 4 (after the sum): out[r] = Σ w·o / Σ w (0 when Σ w = 0).
void normalize_weighted(const float* weighted, size_t rows, int head_dim, float* out);

}  // namespace arbor::cpu
