// Flash-decoding: attention of one new query token per sequence over its paged KV cache.
//
// Each sequence's context is split into chunks processed by separate thread blocks in
// parallel; each split produces a partial (o, lse) and the partials are merged by their
// log-sum-exp. All query heads sharing a KV head are processed together, so each K/V byte
// is read once. bf16 in, fp32 accumulation. Layout of the cache: kernels/paged_kv.h.
//
// Contract (same as cpu::paged_attention with one query token per sequence): sequence s
// attends to positions [0, context_lens[s]) read through block_tables row s.
#pragma once

#include <cstddef>
#include <cstdint>

#include <cuda_runtime.h>

#include "kernels/cuda/bf16.h"

namespace arbor::cuda {

struct DecodeAttentionParams {
  const bf16* q = nullptr;                // [num_seqs][num_q_heads][head_dim]
  const bf16* k_cache = nullptr;          // [num_blocks][num_kv_heads][block_size][head_dim]
  const bf16* v_cache = nullptr;          // same layout
  const int32_t* block_tables = nullptr;  // device, [num_seqs][max_blocks_per_seq]
  const int32_t* context_lens = nullptr;  // device, [num_seqs]; 0 allowed (empty context)
  int num_seqs = 0;
  int num_q_heads = 0;
  int num_kv_heads = 0;
  int head_dim = 0;  // 64 or 128
  int block_size = 0;
  int max_blocks_per_seq = 0;
  float scale = 0;  // multiplies q·k, usually 1/sqrt(head_dim)
  // Context parallelism (kernels/paged_kv.h): the cache holds rank cp_rank's share of each
  // sequence; context_lens stay global and the kernel attends to the local_kv_len of them.
  int cp_size = 1;
  int cp_rank = 0;

  // Host-side upper bound on the (local) context lengths, used only to plan the split count; the
  // kernel reads the true lengths from device memory, so one plan (and one captured CUDA graph)
  // serves every length up to this bound.
  int max_context_len = 0;

  // Set when the kernel launched just before this one on the stream writes nothing this one
  // reads except q and at most the last K/V row of each sequence's (local) context, i.e. it
  // is the RoPE + KV write of the same step. Block tables, lengths and the earlier K/V rows
  // are then fetched while that kernel still runs (programmatic dependent launch), and the
  // last row is re-read once it has completed. Off: nothing is read before it completes.
  bool overlap_previous_kernel = false;

  // The most sequences of any plan that shares this launch's workspace (0: num_seqs alone).
  // Plans of different batch sizes or split counts lay their partials out differently; made
  // with the same workspace_num_seqs they keep every merge counter at the same place, ahead
  // of all partials, so one workspace serves them all (a model's decode steps and graphs).
  int workspace_num_seqs = 0;

  bf16* out = nullptr;  // [num_seqs][num_q_heads][head_dim], normalized attention output

  // Optional, for tree attention across GPUs (context parallel): when non-null, also the
  // fp32 normalized output and the natural-log LSE of the scaled scores per (seq, q head).
  // An empty context gives lse = -inf and o = 0 (never NaN).
  float* out_f32 = nullptr;  // [num_seqs][num_q_heads][head_dim]
  float* lse = nullptr;      // [num_seqs][num_q_heads]

  // Diagnostics, honoured only by a build with ARBOR_DECODE_TRACE=1 (bench
  // arbor_bench_attention_trace; decode_attention_trace_words() > 0 there): when non-null,
  // thread 0 of every block of the launch writes its timeline, decode_attention_trace_words()
  // words per block, block (split, kv head, seq) at ((seq * num_kv_heads + kv head) *
  // plan.num_splits + split). Layout: DecodeAttentionTracePhase below.
  uint64_t* trace = nullptr;
};

// One block's timeline in a traced launch: word 0 holds the SM id (low 32 bits) and the
// block's role (kTrace* flags, high 32 bits); words 1 and 2 %globaltimer (ns) at the block's
// start and end; then clock64() (the SM's cycle counter) at each phase, 0 where the block
// did not pass it.
enum DecodeAttentionTracePhase : int {
  kTraceStart = 0,  // first instruction
  kTraceIssued,     // prologue copies or the first step's loads requested (before the wait)
  kTraceReleased,   // griddepcontrol.wait returned: the previous kernel has completed
  kTraceLoaded,     // thread 0's warp has the data requested before the wait (its last
                    // prologue tile landed, or its ring's first steps); not on register loads
  kTraceComputed,   // every warp's steps done (the block barrier before the warps' merge)
  kTraceWritten,    // the block's partial (or its output, with one split) stored
  kTraceArrived,    // its arrival counted (first level of the merge)
  kTraceMerged,     // the merge this block ran as the last of its group (or of all) done
  kTraceArrived2,   // a group merger's second arrival counted (two-level merge)
  kTraceMerged2,    // ...and, as the last group, its merge of the groups done
  kTraceEnd,        // last instruction
  kTracePhases
};
enum DecodeAttentionTraceRole : uint32_t {
  kTraceIdle = 1,         // no tokens: split past the sequence's used splits, or empty
  kTraceSingleSplit = 2,  // wrote the output itself (one split used)
  kTraceGroupMerger = 4,  // merged a group of partials (first level of two)
  kTraceFinalMerger = 8,  // merged into the output
  kTraceLastRow = 16,     // its split holds the sequence's last row (the last split used)
};
constexpr int kDecodeAttentionTraceHeader = 3;

// Words per block of a traced launch, 0 when this build ignores DecodeAttentionParams::trace.
int decode_attention_trace_words();

struct DecodeAttentionPlan {
  int num_splits = 1;  // upper bound on splits per sequence
  // Tiles of each split streamed whole into shared memory by bulk copies before the
  // previous kernel ends (short contexts at small batch); 0 = register loads only.
  int prologue_tiles = 0;
  // Steps of K and V each warp keeps in flight in a shared-memory ring filled by cp.async
  // (2 or 3; 0 = register loads). Only for the tensor-core steps without a prologue: head
  // dim 128, GQA 4 or 8, blocks of 16 tokens or more. The plan takes 3 for short contexts at
  // batch 1-2 past the prologue's reach and for mid-sized batches (plan_decode_attention);
  // ARBOR_DECODE_RING=2 or 3, set when the plan is made, takes that many wherever there is no
  // prologue (measurements).
  int ring_stages = 0;
  // Ring plans only: the last split to arrive requests every partial at once with cp.async
  // into its ring's shared memory and merges them from there, instead of register loads in
  // rounds of 8. The plan takes it for many splits and, at batch 2 and more, for long ones
  // (plan_decode_attention).
  bool staged_merge = false;
  // Ring plans only: the steps read their stages with ldmatrix, from a swizzled layout, instead
  // of register loads that are rearranged into MMA fragments (about a quarter fewer
  // instructions a step). The plan takes it for every ring plan but batch 1 with 16 splits or
  // more (plan_decode_attention).
  bool ring_ldmatrix = false;
  // Grid order: the blocks of one split's KV heads launch next to each other (grid x = KV
  // head) instead of one KV head's splits. A cache block holds the K (and the V) of all KV
  // heads contiguously, so blocks launched together then read neighbouring bytes at about the
  // same time. Changes no result bit. The plan takes it for large batches and long contexts
  // (plan_decode_attention).
  bool kv_heads_adjacent = false;
  // Ring plans of 2-8 splits at GQA 4 with the register merge and the split-major grid only:
  // a sequence's splits for one KV head launch as one thread-block cluster, and every split
  // but the last pushes its partial into the last split's shared memory, which merges them
  // there: no atomic and no round trip through L2 after the last split's steps. The plan takes
  // it at batch 1 (plan_decode_attention); batches of 2 and more lose with it.
  bool cluster_merge = false;
  size_t workspace_bytes = 0;  // caller allocates this much, zeroed once at allocation
};

// Chooses the split count from batch, heads, max context and the SM count.
// force_splits > 0 fixes it (deterministic, batch-invariant results; tests).
DecodeAttentionPlan plan_decode_attention(const DecodeAttentionParams& p, int num_sms,
                                          int force_splits = 0);

// Where a plan's merge counters and partials lie in its workspace, in bytes from its start
// (all zero for a plan of one split, which uses none): what the sharing rule above
// (workspace_num_seqs) promises is that no plan's partials overlap another's counters.
struct DecodeAttentionWorkspaceUse {
  size_t counters_begin = 0, counters_end = 0;  // this plan's sequences' counters
  size_t partials_begin = 0, partials_end = 0;  // its partial outputs, maxima and sums
};
DecodeAttentionWorkspaceUse decode_attention_workspace_use(const DecodeAttentionParams& p,
                                                           const DecodeAttentionPlan& plan);

// Launches the attention. `workspace` holds per-split partials and merge counters; it must
// be zeroed once when allocated (the kernel leaves its counters at zero when it finishes,
// so replays of a captured graph need no reset). Plans share a workspace only when made with
// the same workspace_num_seqs (>= each one's num_seqs), and it is as large as the largest
// plan.workspace_bytes among them. Throws std::invalid_argument for
// unsupported head_dim / GQA ratio / block size, CudaError on launch failure.
void decode_attention(const DecodeAttentionParams& p, const DecodeAttentionPlan& plan,
                      void* workspace, cudaStream_t stream);

}  // namespace arbor::cuda
