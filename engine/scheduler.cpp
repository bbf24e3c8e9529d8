#include "engine/scheduler.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <unordered_set>

namespace arbor {

Scheduler::Scheduler(SchedulerConfig config, KvBlockManager& blocks)
    : config_(config), blocks_(blocks) {
  if (config_.max_num_seqs < 1 || config_.max_num_batched_tokens < config_.max_num_seqs)
    throw std::invalid_argument("scheduler needs max_num_seqs >= 1 and max_num_batched_tokens (" +
                                std::to_string(config_.max_num_batched_tokens) +
                                ") >= max_num_seqs (" + std::to_string(config_.max_num_seqs) + ")");
}

void Scheduler::add(Sequence* seq) {
  if (seq->status != SequenceStatus::kWaiting || !seq->block_table.empty() || seq->tokens.empty())
    throw std::logic_error("only a new, non-empty sequence can be added to the scheduler");
  seq->arrival = next_arrival_++;
  waiting_.push_back(seq);
}

void Scheduler::preempt(Sequence* seq) {
  running_.erase(std::find(running_.begin(), running_.end(), seq));
  blocks_.release(seq->block_table);
  seq->block_hashes.clear();
  seq->num_computed = 0;
  seq->status = SequenceStatus::kPreempted;
  ++seq->num_preemptions;
  ++num_preemptions_;
  waiting_.push_front(seq);
}

SchedulerOutput Scheduler::schedule() {
  SchedulerOutput out;
  struct Planned {
    Sequence* seq;
    int count;
  };
  std::vector<Planned> planned;
  int budget = config_.max_num_batched_tokens;

  // 1. Running sequences: decodes first, then unfinished prefills; FCFS within each.
  std::vector<Sequence*> order = running_;
  std::stable_sort(order.begin(), order.end(), [](const Sequence* a, const Sequence* b) {
    const bool a_decode = a->num_tokens() - a->num_computed == 1;
    const bool b_decode = b->num_tokens() - b->num_computed == 1;
    if (a_decode != b_decode) return a_decode;
    return a->arrival < b->arrival;
  });
  for (Sequence* seq : order) {
    if (seq->status != SequenceStatus::kRunning) continue;  // preempted below
    if (int(planned.size()) >= config_.max_num_seqs || budget == 0) break;
    const int count = std::min(seq->num_tokens() - seq->num_computed, budget);
    if (count <= 0) continue;
    bool fits = true;
    while (!blocks_.reserve(seq->block_table, seq->num_computed + count)) {
      Sequence* victim = *std::max_element(
          running_.begin(), running_.end(),
          [](const Sequence* a, const Sequence* b) { return a->arrival < b->arrival; });
      auto it = std::find_if(planned.begin(), planned.end(),
                             [&](const Planned& p) { return p.seq == victim; });
      if (it != planned.end()) {  // already planned this step: take it back
        budget += it->count;
        planned.erase(it);
      }
      preempt(victim);
      out.preempted.push_back(victim);
      if (victim == seq) {
        fits = false;
        break;
      }
    }
    if (!fits) continue;
    planned.push_back({seq, count});
    budget -= count;
  }

  // 2. Waiting sequences, FCFS, when nothing had to be preempted.
  while (out.preempted.empty() && !waiting_.empty() && budget > 0 &&
         int(running_.size()) < config_.max_num_seqs &&
         int(planned.size()) < config_.max_num_seqs) {
    Sequence* seq = waiting_.front();
    if (blocks_.blocks_for(seq->num_tokens()) > blocks_.num_blocks()) {
      // Its tokens alone exceed the whole pool (it grew while running alone): it can never
      // run again.
      finish(seq, FinishReason::kLength);
      out.finished.push_back(seq);
      continue;
    }
    const int cached = blocks_.allocate_with_prefix(seq->block_table, seq->block_hashes,
                                                    seq->tokens, seq->num_tokens());
    if (cached < 0) break;  // not enough free blocks: the head waits, and so does the rest
    waiting_.pop_front();
    if (seq->num_cached_tokens < 0) seq->num_cached_tokens = cached;
    seq->num_computed = cached;
    seq->status = SequenceStatus::kRunning;
    running_.push_back(seq);
    const int count = std::min(seq->num_tokens() - cached, budget);
    planned.push_back({seq, count});
    budget -= count;
  }

  for (const Planned& p : planned) {
    Sequence* seq = p.seq;
    ScheduledChunk c{seq->tokens, seq->block_table, seq->num_computed, p.count, false};
    c.want_logits = seq->num_computed + p.count == seq->num_tokens();
    out.seqs.push_back(seq);
    out.chunks.push_back(c);
    out.num_batched_tokens += p.count;
    if (c.want_logits && p.count == 1)
      ++out.num_decode_seqs;
    else
      ++out.num_prefill_seqs;
  }
  return out;
}

void Scheduler::complete_step(const SchedulerOutput& out) {
  for (size_t i = 0; i < out.seqs.size(); ++i) {
    Sequence* seq = out.seqs[i];
    if (seq->status != SequenceStatus::kRunning) continue;
    seq->num_computed += out.chunks[i].count;
    blocks_.commit(seq->block_table, seq->block_hashes, seq->tokens, seq->num_computed);
  }
}

void Scheduler::finish(Sequence* seq, FinishReason reason) {
  if (seq->status == SequenceStatus::kFinished) return;
  if (auto it = std::find(running_.begin(), running_.end(), seq); it != running_.end())
    running_.erase(it);
  if (auto it = std::find(waiting_.begin(), waiting_.end(), seq); it != waiting_.end())
    waiting_.erase(it);
  blocks_.release(seq->block_table);
  seq->block_hashes.clear();
  seq->status = SequenceStatus::kFinished;
  seq->finish_reason = reason;
}

void Scheduler::fork(const Sequence& parent, Sequence* child) {
  if (parent.status != SequenceStatus::kRunning || !child->block_table.empty() ||
      child->tokens != parent.tokens)
    throw std::logic_error("fork needs a running parent and a fresh child with its tokens");
  child->num_computed = blocks_.fork(parent.block_table, parent.block_hashes, parent.num_computed,
                                     child->block_table, child->block_hashes);
  child->num_cached_tokens = parent.num_cached_tokens;
  child->arrival = next_arrival_++;
  child->status = SequenceStatus::kRunning;
  running_.push_back(child);
}

void Scheduler::check_invariants() const {
  auto fail = [](const std::string& what) {
    throw std::logic_error("scheduler inconsistent: " + what);
  };
  blocks_.check_consistency();
  std::vector<int> refs(blocks_.num_blocks(), 0);
  for (const Sequence* seq : running_) {
    if (seq->status != SequenceStatus::kRunning) fail("a non-running sequence in running");
    if (seq->num_computed > seq->num_tokens()) fail("more tokens computed than exist");
    if (int(seq->block_table.size()) < blocks_.blocks_for(seq->num_computed))
      fail("block table shorter than the computed tokens");
    if (int(seq->block_hashes.size()) > seq->num_computed / blocks_.block_size())
      fail("a prefix key for an unfinished block");
    for (int32_t b : seq->block_table) ++refs.at(b);
  }
  for (const Sequence* seq : waiting_) {
    if (!seq->is_waiting()) fail("a non-waiting sequence in waiting");
    if (!seq->block_table.empty() || seq->num_computed != 0)
      fail("a waiting sequence holds blocks");
  }
  std::unordered_set<const Sequence*> seen;  // every sequence is in exactly one queue
  for (const Sequence* seq : running_)
    if (!seen.insert(seq).second) fail("a sequence queued twice");
  for (const Sequence* seq : waiting_)
    if (!seen.insert(seq).second) fail("a sequence queued twice");
  for (int b = 0; b < blocks_.num_blocks(); ++b)
    if (refs[b] != blocks_.ref_count(b))
      fail("block " + std::to_string(b) + " has " + std::to_string(blocks_.ref_count(b)) +
           " references, the sequences hold " + std::to_string(refs[b]));
}

}  // namespace arbor
