// Prefill (and mixed) attention on tensor cores: a ragged batch of query tokens, each
// sequence's new tokens attending causally to all its earlier tokens and to themselves,
// reading K/V from the paged cache (the new tokens' K/V already written there).
//
// Contract: identical to cpu::paged_attention (kernels/cpu/ops.h): sequence s owns query
// tokens [query_start[s], query_start[s+1]); its last query token sits at position
// context_lens[s] - 1. Works for any query length ≥ 1 (decode tokens too, just slower than
// decode_attention).
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

namespace arbor::cuda {

// Which kernel runs: kAuto takes wgmma (Hopper warpgroup MMAs) where it can run and the
// mma.sync kernel elsewhere (ARBOR_PREFILL_KERNEL=mma in the environment forces mma.sync, for
// before/after measurements); the others pick one (tests), kWgmma throwing where it cannot.
enum class PrefillKernel { kAuto, kMmaSync, kWgmma };

struct PrefillAttentionParams {
  const bf16* q = nullptr;                // [num_tokens][num_q_heads][head_dim]
  const bf16* k_cache = nullptr;          // [num_blocks][num_kv_heads][block_size][head_dim]
  const bf16* v_cache = nullptr;          // same layout
  const int32_t* block_tables = nullptr;  // device, [num_seqs][max_blocks_per_seq]
  const int32_t* context_lens = nullptr;  // device, [num_seqs]
  const int32_t* query_start = nullptr;   // device, [num_seqs + 1]
  int num_seqs = 0;
  int num_tokens = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // 64 or 128
  int block_size = 0;
  int max_blocks_per_seq = 0;
  int max_query_len = 0;  // host-side upper bound on query tokens of one sequence
  float scale = 0;
  // Context parallelism (kernels/paged_kv.h): the cache holds rank cp_rank's share of each
  // sequence; context_lens stay global, a query at position p attends to this rank's local
  // keys [0, local_kv_len(p + 1)). A query with no local keys gets o = 0 and lse = -inf.
  int cp_size = 1;
  int cp_rank = 0;

  bf16* out = nullptr;       // [num_tokens][num_q_heads][head_dim]
  float* lse = nullptr;      // optional [num_tokens][num_q_heads], natural log
  float* out_f32 = nullptr;  // optional fp32 copy of out (partials for tree attention)

  PrefillKernel kernel = PrefillKernel::kAuto;
};

// True when PrefillKernel::kWgmma can run on the current device.
bool prefill_attention_wgmma_available();

// No workspace. Throws std::invalid_argument for unsupported shapes.
void prefill_attention(const PrefillAttentionParams& p, cudaStream_t stream);

}  // namespace arbor::cuda
