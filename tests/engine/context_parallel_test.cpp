// Context parallelism end to end on the CPU: p simulated ranks (threads, local-cpu
// communicator), each holding a stripe of every sequence's KV cache, driven through the
// engine, give the single-device model's logits and greedy tokens.
#include <catch2/catch.hpp>

#include <cmath>
#include <memory>
#include <random>

#include "engine/engine.h"
#include "models/context_parallel_runner.h"
#include "models/llama.h"
#include "models/model_runner.h"
#include "tests/engine/engine_fakes.h"
#include "tests/test_util.h"

namespace arbor {
namespace {

using test::run_checked;

const LlamaCpu& tiny_model() {
  static const LlamaCpu m = LlamaCpu::load(test::fixtures_dir() / "models" / "tiny-llama");
  return m;
}

const Tokenizer& tiny_tokenizer() {
  static const std::unique_ptr<Tokenizer> t =
      load_tokenizer(test::fixtures_dir() / "models" / "tiny-llama");
  return *t;
}

// A whole prompt as one prefill step for a sequence whose blocks are 0, 1, 2, ...
ForwardBatch prefill_batch(const std::vector<int32_t>& ids, int block_size) {
  ForwardBatch b;
  const int n = int(ids.size());
  b.token_ids = ids;
  for (int i = 0; i < n; ++i) {
    b.positions.push_back(i);
    b.slot_mapping.push_back(i);  // block i / bs, offset i % bs
  }
  b.query_start = {0, n};
  b.context_lens = {n};
  b.max_blocks_per_seq = (n + block_size - 1) / block_size;
  for (int i = 0; i < b.max_blocks_per_seq; ++i) b.block_tables.push_back(i);
  for (int i = 0; i < n; ++i) b.logits_rows.push_back(i);
  return b;
}

TEST_CASE("context-parallel forward: logits at every position equal one device", "[engine][cp]") {
  std::mt19937 rng(3);
  std::vector<int32_t> ids = {1};
  while (ids.size() < 45) ids.push_back(int32_t(3 + rng() % 509));
  CpuModelRunner single(tiny_model(), 16, 4);
  std::vector<float> want, got;
  single.forward(prefill_batch(ids, 4), want);
  for (CpCombine combine : {CpCombine::allgather, CpCombine::allreduce}) {
    for (int p : {1, 2, 3, 4, 8}) {
      auto runner = make_cpu_context_parallel_runner(tiny_model(), p, 16, 4, combine);
      REQUIRE(runner->block_size() == 4 * p);
      runner->forward(prefill_batch(ids, 4 * p), got);
      REQUIRE(got.size() == want.size());
      // fp32 model, combine in fp32: only the summation order of the attention differs, so
      // logits agree to ~1e-6 (the golden tests' bound against transformers is 1e-4).
      float worst = 0;
      for (size_t i = 0; i < got.size(); ++i) worst = std::max(worst, std::abs(got[i] - want[i]));
      INFO("p=" << p << " combine=" << to_string(combine) << " max |Δlogit|=" << worst);
      REQUIRE(worst <= 1e-4f);
    }
  }
}

Request greedy(std::vector<int32_t> prompt, int max_tokens) {
  Request r;
  r.prompt_ids = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  return r;
}

std::vector<std::vector<int32_t>> run(ModelRunner& runner, const std::vector<Request>& reqs,
                                      EngineConfig options) {
  Engine engine(runner, tiny_tokenizer(), options);
  const auto sinks = run_checked(engine, reqs);
  REQUIRE(engine.stats().kv.used_blocks == 0);
  std::vector<std::vector<int32_t>> out;
  for (auto& s : sinks) out.push_back(s->tokens());
  return out;
}

TEST_CASE("context-parallel engine: greedy output with p = 2 and 4 equals p = 1", "[engine][cp]") {
  std::mt19937 rng(11);
  std::vector<Request> reqs;
  for (int len : {2, 7, 19, 33, 50}) {
    std::vector<int32_t> ids = {1};
    while (int(ids.size()) < len) ids.push_back(int32_t(3 + rng() % 509));
    reqs.push_back(greedy(ids, 24));
  }
  CpuModelRunner single(tiny_model(), 64, 4);
  // 8-token steps: chunked prefill, chunks straddling the ranks' stripes.
  const auto want = run(single, reqs, {8, 8, false});
  for (int p : {2, 4}) {
    for (CpCombine combine : {CpCombine::allgather, CpCombine::allreduce}) {
      // Few super-blocks: sequences share the pool and get preempted, and prefix caching
      // reuses striped blocks.
      auto runner = make_cpu_context_parallel_runner(tiny_model(), p, 64 / p, 4, combine);
      for (bool caching : {false, true}) {
        INFO("p=" << p << " combine=" << to_string(combine) << " caching=" << caching);
        CHECK(run(*runner, reqs, {8, 8, caching}) == want);
      }
    }
  }
}

TEST_CASE("context-parallel runner: a bad batch is rejected and the ranks go on", "[engine][cp]") {
  auto runner = make_cpu_context_parallel_runner(tiny_model(), 3, 8, 4, CpCombine::allgather);
  ForwardBatch bad = prefill_batch({1, 5, 9}, 12);
  bad.token_ids[1] = 1 << 20;  // outside the vocabulary
  std::vector<float> logits;
  REQUIRE_THROWS_WITH(runner->forward(bad, logits), Catch::Contains("outside the vocabulary"));
  // The followers rejected the same batch and wait for the next one.
  runner->forward(prefill_batch({1, 5, 9}, 12), logits);
  REQUIRE(logits.size() == 3 * size_t(tiny_model().config().vocab_size));
}

TEST_CASE("forward batch messages round-trip and reject bad bytes", "[engine][cp]") {
  ForwardBatch b = prefill_batch({1, 2, 3, 4, 5}, 4);
  std::vector<uint8_t> bytes;
  serialize_forward_batch(b, bytes);
  ForwardBatch c = deserialize_forward_batch(bytes);
  CHECK(c.token_ids == b.token_ids);
  CHECK(c.positions == b.positions);
  CHECK(c.slot_mapping == b.slot_mapping);
  CHECK(c.query_start == b.query_start);
  CHECK(c.context_lens == b.context_lens);
  CHECK(c.block_tables == b.block_tables);
  CHECK(c.logits_rows == b.logits_rows);
  CHECK(c.max_blocks_per_seq == b.max_blocks_per_seq);
  for (size_t cut = 0; cut < bytes.size(); ++cut)
    CHECK_THROWS_AS(deserialize_forward_batch(std::span<const uint8_t>(bytes.data(), cut)),
                    std::invalid_argument);
  bytes[4] ^= 0xff;  // max_blocks_per_seq no longer matches the table size
  CHECK_THROWS_AS(deserialize_forward_batch(bytes), std::invalid_argument);
}

}  // namespace
}  // namespace arbor
