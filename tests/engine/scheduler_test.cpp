// Scheduler without a model: budgets, FCFS, chunked prefill, preemption, no leaked blocks.
#include "engine/scheduler.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <memory>
#include <random>
#include <vector>

namespace arbor {
namespace {

// Owns sequences; "runs" steps the way the engine does: complete, then append a token to
// every sequence that sampled.
struct Harness {
  Harness(int num_blocks, int block_size, SchedulerConfig config, bool caching = true)
      : blocks(num_blocks, block_size, caching), sched(config, blocks) {}

  Sequence* add(int prompt_len, int32_t first_token = 100) {
    std::vector<int32_t> prompt(prompt_len);
    for (int i = 0; i < prompt_len; ++i) prompt[i] = first_token + i;
    seqs.push_back(std::make_unique<Sequence>(seqs.size(), 0, prompt));
    sched.add(seqs.back().get());
    return seqs.back().get();
  }
  SchedulerOutput step() {
    SchedulerOutput out = sched.schedule();
    sched.complete_step(out);
    for (size_t i = 0; i < out.seqs.size(); ++i)
      if (out.chunks[i].want_logits) out.seqs[i]->tokens.push_back(7);
    sched.check_invariants();
    return out;
  }
  int count_of(const SchedulerOutput& out, const Sequence* s) const {
    for (size_t i = 0; i < out.seqs.size(); ++i)
      if (out.seqs[i] == s) return out.chunks[i].count;
    return 0;
  }

  KvBlockManager blocks;
  Scheduler sched;
  std::vector<std::unique_ptr<Sequence>> seqs;
};

}  // namespace

TEST_CASE("scheduler: budgets of tokens and sequences are respected", "[scheduler]") {
  Harness h(64, 4, {16, 3});
  for (int i = 0; i < 5; ++i) h.add(10, 100 * i);
  SchedulerOutput out = h.step();
  CHECK(out.num_batched_tokens == 16);
  CHECK(out.seqs.size() == 2);  // 10 + the first 6 tokens of the second prompt
  CHECK(out.chunks[1].count == 6);
  CHECK(out.chunks[1].want_logits == false);
  for (int s = 0; s < 20; ++s) {
    out = h.step();
    CHECK(out.num_batched_tokens <= 16);
    CHECK(out.seqs.size() <= 3);
    CHECK(h.sched.num_running() <= 3);
  }
}

TEST_CASE("scheduler: decodes go first; a long prompt is chunked around them", "[scheduler]") {
  Harness h(64, 4, {8, 4});
  Sequence* a = h.add(3);
  Sequence* b = h.add(3, 200);
  h.step();  // both prefilled (6 tokens)
  CHECK(a->num_output() == 1);
  CHECK(b->num_output() == 1);
  Sequence* big = h.add(40, 300);
  int prefilled = 0;
  while (big->num_computed < 40) {
    SchedulerOutput out = h.step();
    CHECK(h.count_of(out, a) == 1);  // decodes never stall
    CHECK(h.count_of(out, b) == 1);
    const int c = h.count_of(out, big);
    CHECK(c == std::min(6, 40 - prefilled));  // chunk = budget left after the decodes
    // Chunk boundaries: each chunk starts where the previous one ended.
    for (size_t i = 0; i < out.seqs.size(); ++i)
      if (out.seqs[i] == big) CHECK(out.chunks[i].start == prefilled);
    prefilled += c;
  }
  CHECK(big->num_output() == 1);  // sampled exactly when the last chunk ran
}

TEST_CASE("scheduler: FCFS — the head of the queue is admitted first and blocks the rest",
          "[scheduler]") {
  Harness h(10, 4, {64, 8});  // 40 token slots
  Sequence* a = h.add(30);
  Sequence* big = h.add(20, 200);   // does not fit next to a
  Sequence* small = h.add(2, 300);  // would fit, but arrived later
  h.step();
  CHECK(a->status == SequenceStatus::kRunning);
  CHECK(big->is_waiting());
  CHECK(small->is_waiting());
  h.sched.finish(a, FinishReason::kStop);
  h.step();
  CHECK(big->status == SequenceStatus::kRunning);
  CHECK(small->status == SequenceStatus::kRunning);
  h.sched.finish(big, FinishReason::kStop);
  h.sched.finish(small, FinishReason::kAbort);
  CHECK(h.blocks.num_used_blocks() == 0);
}

TEST_CASE("scheduler: out of blocks, the newest sequence is preempted and recomputed",
          "[scheduler]") {
  Harness h(6, 4, {64, 8}, /*caching=*/false);  // 24 token slots
  Sequence* old_seq = h.add(7);
  Sequence* new_seq = h.add(7, 200);
  h.step();  // 2 + 2 blocks
  REQUIRE(old_seq->status == SequenceStatus::kRunning);
  REQUIRE(new_seq->status == SequenceStatus::kRunning);
  int preemptions = 0;
  for (int s = 0; s < 12 && preemptions == 0; ++s) {
    SchedulerOutput out = h.step();
    preemptions += int(out.preempted.size());
    if (!out.preempted.empty()) {
      CHECK(out.preempted[0] == new_seq);
      CHECK(new_seq->status == SequenceStatus::kPreempted);
      CHECK(new_seq->block_table.empty());
      CHECK(h.sched.waiting().front() == new_seq);
      CHECK(h.count_of(out, old_seq) == 1);
    }
  }
  REQUIRE(preemptions == 1);
  const std::vector<int32_t> kept = new_seq->tokens;  // generated tokens are kept
  CHECK(new_seq->num_output() > 0);
  h.sched.finish(old_seq, FinishReason::kStop);
  SchedulerOutput out = h.step();
  // Readmitted: prompt and generated tokens recomputed as one prefill, then it samples.
  REQUIRE(h.count_of(out, new_seq) == int(kept.size()));
  CHECK(std::equal(kept.begin(), kept.end(), new_seq->tokens.begin()));
  CHECK(new_seq->num_preemptions == 1);
  h.sched.finish(new_seq, FinishReason::kStop);
  CHECK(h.blocks.num_free_blocks() == 6);
}

TEST_CASE("scheduler: a sequence alone outgrowing the pool ends with kLength", "[scheduler]") {
  Harness h(2, 4, {64, 8});
  Sequence* s = h.add(6);
  for (int i = 0; i < 10 && !s->is_finished(); ++i) h.step();
  CHECK(s->is_finished());
  CHECK(s->finish_reason == FinishReason::kLength);
  CHECK(s->num_tokens() == 9);  // 8 tokens of KV + the last sampled one
  CHECK(h.blocks.num_used_blocks() == 0);
}

TEST_CASE("scheduler: prefix hits skip computed tokens", "[scheduler][prefix]") {
  Harness h(32, 4, {64, 8});
  Sequence* a = h.add(18);
  h.step();
  Sequence* b = h.add(18);  // the same prompt
  SchedulerOutput out = h.step();
  CHECK(b->num_cached_tokens == 16);
  CHECK(h.count_of(out, b) == 2);
  CHECK(h.blocks.usage_stats().prefix_hit_tokens == 16);
  CHECK(a->block_table[0] == b->block_table[0]);
  h.sched.finish(a, FinishReason::kStop);
  h.sched.finish(b, FinishReason::kStop);
  CHECK(h.blocks.num_used_blocks() == 0);
}

TEST_CASE("scheduler: fork shares the prompt's full blocks", "[scheduler][prefix]") {
  Harness h(32, 4, {64, 8});
  Sequence* p = h.add(10);
  h.sched.complete_step(h.sched.schedule());  // prefill, no token appended yet
  Sequence child(99, 1, p->tokens);
  h.sched.fork(*p, &child);
  CHECK(child.num_computed == 8);
  CHECK(child.block_table.size() == 2);
  CHECK(h.blocks.ref_count(p->block_table[0]) == 2);
  p->tokens.push_back(5);
  child.tokens.push_back(6);
  SchedulerOutput out = h.sched.schedule();
  CHECK(h.count_of(out, p) == 1);
  CHECK(h.count_of(out, &child) == 3);  // 2 tail prompt tokens + its own first token
  h.sched.complete_step(out);
  h.sched.check_invariants();
  h.sched.finish(p, FinishReason::kStop);
  h.sched.finish(&child, FinishReason::kStop);
  CHECK(h.blocks.num_used_blocks() == 0);
}

TEST_CASE("scheduler: random finish/abort/preempt mixes never leak a block", "[scheduler]") {
  for (bool caching : {true, false}) {
    Harness h(24, 4, {12, 5}, caching);
    std::mt19937 rng(caching ? 3 : 4);
    std::vector<Sequence*> live;
    for (int it = 0; it < 3000; ++it) {
      if (rng() % 3 == 0) live.push_back(h.add(1 + int(rng() % 40), int32_t(100 * (rng() % 4))));
      SchedulerOutput out = h.step();
      REQUIRE(out.num_batched_tokens <= 12);
      REQUIRE(out.seqs.size() <= 5);
      for (Sequence* s : out.finished) live.erase(std::find(live.begin(), live.end(), s));
      if (!live.empty() && rng() % 4 == 0) {
        const size_t k = rng() % live.size();
        h.sched.finish(live[k], rng() % 2 ? FinishReason::kStop : FinishReason::kAbort);
        live.erase(live.begin() + k);
      }
      for (size_t k = 0; k < live.size();)  // a length limit
        if (live[k]->num_output() >= 25) {
          h.sched.finish(live[k], FinishReason::kLength);
          live.erase(live.begin() + k);
        } else {
          ++k;
        }
      h.sched.check_invariants();
    }
    for (Sequence* s : live) h.sched.finish(s, FinishReason::kAbort);
    h.sched.check_invariants();
    CHECK(h.sched.num_preemptions() > 0);
    CHECK(h.blocks.num_used_blocks() == 0);
    CHECK(h.blocks.num_free_blocks() == 24);
  }
}

}  // namespace arbor
