// Token sampling on the GPU for a batch of fp32 logits rows: the contract of the CPU sampler
// (engine/sampler.h) with a counter-based random generator, so a row's draw depends only on
// its logits, its parameters, its seed and its step — never on the rest of the batch.
//
// Per row, in this order (exactly the CPU sampler's order and float arithmetic):
//  1. NaN logits count as -inf. logit_bias entries are added in list order (repeated ids add up).
//  2. repetition penalty over the tokens of prompt ∪ output (logit > 0 → logit / penalty, else
//     logit * penalty), then presence/frequency over output tokens
//     (logit -= frequency * count; logit -= presence).
//  3. temperature < kSamplingGreedyTemperature (or NaN): greedy argmax, ties to the lowest id.
//  4. Otherwise: with +inf logits only the +inf tokens stay (equal weights). Weights
//     w_i = exp((x_i - x_max) / T) in fp32 (the best token has w = 1). The kept set is
//       S_k = the top_k best tokens by (x desc, id asc) (all tokens when top_k <= 0 or >= vocab),
//       C   = {i in S_k : w_i >= min_p, w_i > 0},
//       N   = the smallest prefix of C ordered by (w desc, id asc) whose mass reaches
//             top_p * (mass of S_k) — renormalized over the top-k survivors, as the CPU
//             sampler — or all of C when top_p >= 1 (or the mass never reaches it).
//     The token is drawn from N with probability w_i / Σ_N w.
//
// The draw is the exponential race (Gumbel-max): token = argmax over i in N of w_i / E_i,
// ties to the lowest id, where E_i ~ Exp(1) is sampling_exponential(seed, step, i) below —
// exact for the renormalized distribution, needs no prefix sum and no sort, and the same
// (seed, step) always gives the same token. Unseeded requests get a random seed from the
// engine; `step` is the row's output index (0 for the first generated token).
//
// How (one 1024-thread block per row, no sorting): a pass for the maximum / greedy argmax;
// top-k and the nucleus boundary by a block-wide radix select over 64-bit keys
// (ordered float bits << 32 | ~id, so ties resolve to the lower id), 8-bit digits, shared-memory
// histograms, ≤ 8 passes over the row and usually 3–4; nucleus masses are summed in 2^-40
// fixed point with integer atomics, so every pass is deterministic; then one pass for the
// race. Logprobs: max, +inf count and Σ exp in double over the raw row, top-N by the same
// radix select on the raw logits.
//
// Errors: a row whose logits are all -inf (or NaN) after processing gets token -1 and a NaN
// logprob (the CPU sampler throws std::runtime_error there; the engine reports the same error).
// Ids outside [0, vocab) in the bias / penalty lists are ignored (the engine validates them with
// SamplingParams::validate first). Row parameters are expected to be valid
// (SamplingParams::validate); out-of-range values never crash the kernel.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include <cuda_runtime.h>

#if defined(__CUDACC__)
#define ARBOR_SAMPLING_HD __host__ __device__
#else
#define ARBOR_SAMPLING_HD
#endif

namespace arbor::cuda {

// Same value as arbor::kGreedyTemperature (engine/sampler.h): below it, greedy.
inline constexpr float kSamplingGreedyTemperature = 1e-5f;
// Most top logprobs a row can ask for (the OpenAI API's limit); output stride of top_ids.
inline constexpr int kMaxTopLogprobs = 20;
// Largest vocabulary the kernel accepts (ids fit the 32-bit tie-break field; nucleus masses
// in 2^-40 fixed point cannot overflow 64 bits).
inline constexpr int kMaxSamplingVocab = 1 << 23;

// One row's parameters (the engine translates arbor::SamplingParams into this).
struct SamplingRowParams {
  float temperature = 1.0f;  // < kSamplingGreedyTemperature → greedy
  int32_t top_k = 0;         // <= 0 or >= vocab → off
  float top_p = 1.0f;        // (0, 1]; >= 1 → off
  float min_p = 0.0f;        // [0, 1]; 0 → off
  float repetition_penalty = 1.0f;
  float presence_penalty = 0.0f;
  float frequency_penalty = 0.0f;
  int32_t logprobs = -1;  // -1: none; 0: chosen token only; 1..20: chosen + top N
  uint64_t seed = 0;      // random stream of the request
  uint64_t step = 0;      // output index of the token being drawn
};

// A token that the penalties touch: one entry per DISTINCT id of prompt ∪ output in a row.
struct SamplingPenaltyEntry {
  int32_t id = 0;
  int32_t output_count = 0;  // occurrences among the output tokens (frequency/presence)
  int32_t in_prompt = 0;     // nonzero when the id occurs in the prompt (repetition only)
};

// logit[id] += bias; ids may repeat (they add up, in list order).
struct SamplingBiasEntry {
  int32_t id = 0;
  float bias = 0.0f;
};

// Everything one launch reads and writes. All pointers are device pointers.
struct SamplingBatch {
  const float* logits = nullptr;  // [rows][vocab], not modified
  int rows = 0;
  int vocab = 0;
  const SamplingRowParams* params = nullptr;  // [rows]

  // Penalty and bias lists in CSR form: row r's entries are
  // entries[offsets[r] .. offsets[r + 1]). Either offsets pointer may be null (no entries
  // for any row); when given, its entries pointer must be too. Rows with no entries read
  // the logits directly; rows with entries get a processed copy in the workspace.
  const int32_t* penalty_offsets = nullptr;  // [rows + 1]
  const SamplingPenaltyEntry* penalty_entries = nullptr;
  const int32_t* bias_offsets = nullptr;  // [rows + 1]
  const SamplingBiasEntry* bias_entries = nullptr;

  int32_t* tokens = nullptr;  // [rows], required; -1 for a row with nothing to draw from
  // Optional (null → not written). For rows with params.logprobs >= 0: log_softmax of the RAW
  // logits (NaN as -inf; with +inf logits the +inf tokens share the mass) at the chosen token.
  float* logprobs = nullptr;  // [rows]
  // Optional, both or neither. For rows with params.logprobs = N >= 1: the min(N, vocab) most
  // likely raw tokens, best first (ties to the lower id), then (-1, -inf) up to the stride.
  // Rows with logprobs <= 0 are not written.
  int32_t* top_ids = nullptr;     // [rows][kMaxTopLogprobs]
  float* top_logprobs = nullptr;  // [rows][kMaxTopLogprobs]
};

// Workspace bytes `sample` needs for this shape when a bias or penalty list is given:
// one processed fp32 copy of each row (row stride rounded up to 4 floats). Without lists the
// workspace may be null.
size_t sampling_workspace_bytes(int rows, int vocab);

// Samples one token per row on `stream`. Never allocates, never synchronizes. Throws
// std::invalid_argument for bad shapes, missing pointers or a missing / too small workspace.
void sample(const SamplingBatch& batch, void* workspace, size_t workspace_bytes,
            cudaStream_t stream);

// Host helper for the engine: appends the penalty entries of one row (distinct ids of
// prompt ∪ output, with output counts and prompt flags, sorted by id) to `out`. Ids are
// taken as given (validate them first).
void append_penalty_entries(std::span<const int32_t> prompt_ids,
                            std::span<const int32_t> output_ids,
                            std::vector<SamplingPenaltyEntry>& out);

// ---- The random generator (host and device, so tests can reproduce a draw exactly) ----

// Philox4x32-10 (Salmon et al., SC'11; Random123's philox4x32_R(10, ...)).
struct Philox4x32Result {
  uint32_t v[4];
};
ARBOR_SAMPLING_HD inline Philox4x32Result philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2,
                                                        uint32_t c3, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    if (round > 0) {
      k0 += 0x9E3779B9u;
      k1 += 0xBB67AE85u;
    }
    const uint64_t p0 = uint64_t{0xD2511F53u} * c0;
    const uint64_t p1 = uint64_t{0xCD9E8D57u} * c2;
    const uint32_t hi0 = uint32_t(p0 >> 32), lo0 = uint32_t(p0);
    const uint32_t hi1 = uint32_t(p1 >> 32), lo1 = uint32_t(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
  }
  return {{c0, c1, c2, c3}};
}

// E ~ Exp(1) for token `id` of the draw (seed, step): Philox with key = seed and
// counter = (id, step_lo, step_hi, 0); u = (53 random bits + 0.5) / 2^53 in (0, 1);
// E = -log(u) in double (never 0, never inf).
ARBOR_SAMPLING_HD inline double sampling_exponential(uint64_t seed, uint64_t step, int32_t id) {
  const Philox4x32Result r = philox4x32_10(uint32_t(id), uint32_t(step), uint32_t(step >> 32), 0u,
                                           uint32_t(seed), uint32_t(seed >> 32));
  const uint64_t bits = ((uint64_t{r.v[0]} << 32) | r.v[1]) >> 11;
  const double u = (static_cast<double>(bits) + 0.5) * 0x1.0p-53;
  return -log(u);
}

}  // namespace arbor::cuda

#undef ARBOR_SAMPLING_HD
