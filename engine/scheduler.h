// Iteration-level scheduler: each step it picks the work of one ragged batch.
//
//  1. Running sequences, decodes (one new token) before unfinished prefills, each in FCFS
//     order, so that a long prompt never stalls decoding. Each gets min(remaining, budget)
//     tokens; when the KV pool cannot hold them, the newest running sequence is preempted
//     by recompute (blocks freed, requeued at the front of the waiting queue) — possibly the
//     sequence itself, which then waits.
//  2. If nothing was preempted: waiting sequences in FCFS order, while there is token budget,
//     a free running slot and KV blocks for all their tokens (after prefix-cache hits). A
//     prompt longer than the budget gets a first chunk now and the rest in later steps
//     (chunked prefill). The head of the queue blocks the rest (strict FCFS).
//
// Budgets per step: max_num_batched_tokens tokens and max_num_seqs sequences. Sequences are
// owned by the caller; the scheduler keeps pointers until finish().
#pragma once

#include <cstdint>
#include <deque>
#include <vector>

#include "engine/batch_builder.h"
#include "engine/kv_block_manager.h"
#include "engine/sequence.h"

namespace arbor {

struct SchedulerConfig {
  int max_num_batched_tokens = 2048;  // tokens in one step; >= max_num_seqs
  int max_num_seqs = 256;             // sequences in one step (and running at once)
};

struct SchedulerOutput {
  std::vector<Sequence*> seqs;         // scheduled this step
  std::vector<ScheduledChunk> chunks;  // parallel to seqs; want_logits: samples this step
  std::vector<Sequence*> preempted;    // preempted this step (now waiting)
  std::vector<Sequence*> finished;     // longer than the whole KV pool: finished (kLength)
  int num_batched_tokens = 0;
  int num_prefill_seqs = 0;  // the other chunks (prompt or recompute)
  int num_decode_seqs = 0;   // chunks of one token that sample
  bool empty() const { return seqs.empty(); }
};

class Scheduler {
 public:
  Scheduler(SchedulerConfig config, KvBlockManager& blocks);

  const SchedulerConfig& config() const { return config_; }
  // Queues a new sequence (status waiting, no blocks) at the back of the waiting queue.
  void add(Sequence* seq);
  // Plans one step. The chunks' spans point into the sequences and stay valid until the
  // sequences change.
  SchedulerOutput schedule();
  // After the model ran `out`: advances each sequence's computed tokens and enters newly
  // full blocks into the prefix cache. Sampled tokens are appended by the caller afterwards.
  void complete_step(const SchedulerOutput& out);
  // Marks `seq` finished, takes it out of the queues and frees its blocks (at once: also for
  // an abort). A sequence not (or no longer) known to the scheduler is just marked.
  void finish(Sequence* seq, FinishReason reason);
  // Starts `child` (empty table, same prompt as `parent`, no output yet) as a running
  // sequence sharing the parent's full computed blocks (n > 1 samples after the prefill).
  void fork(const Sequence& parent, Sequence* child);

  int num_waiting() const { return int(waiting_.size()); }
  int num_running() const { return int(running_.size()); }
  bool has_work() const { return !waiting_.empty() || !running_.empty(); }
  uint64_t num_preemptions() const { return num_preemptions_; }
  KvBlockManager& blocks() { return blocks_; }
  const std::deque<Sequence*>& waiting() const { return waiting_; }
  const std::vector<Sequence*>& running() const { return running_; }

  // Throws std::logic_error when a sequence's state, its blocks and the pool's reference
  // counts disagree (for tests).
  void check_invariants() const;

 private:
  void preempt(Sequence* seq);

  SchedulerConfig config_;
  KvBlockManager& blocks_;
  std::deque<Sequence*> waiting_;
  std::vector<Sequence*> running_;
  uint64_t next_arrival_ = 0;
  uint64_t num_preemptions_ = 0;
};

}  // namespace arbor
