#include <catch2/catch.hpp>

#include <algorithm>
#include <random>
#include <set>

#include "engine/batch_builder.h"
#include "engine/kv_block_manager.h"

namespace arbor {

TEST_CASE("block manager hands out distinct blocks and takes them back", "[kv]") {
  KvBlockManager m(8, 4);
  CHECK(m.num_free_blocks() == 8);
  std::vector<int32_t> a, b;
  REQUIRE(m.reserve(a, 5));  // 5 tokens → 2 blocks
  CHECK(a.size() == 2);
  REQUIRE(m.reserve(a, 8));  // still 2 blocks
  CHECK(a.size() == 2);
  REQUIRE(m.reserve(b, 17));  // 5 blocks
  CHECK(m.num_free_blocks() == 1);
  std::set<int32_t> all(a.begin(), a.end());
  all.insert(b.begin(), b.end());
  CHECK(all.size() == 7);
  CHECK(m.usage() == Approx(7.0 / 8));

  SECTION("a request that does not fit changes nothing") {
    std::vector<int32_t> c;
    CHECK_FALSE(m.reserve(c, 9));
    CHECK(c.empty());
    CHECK(m.num_free_blocks() == 1);
  }
  SECTION("release returns every block; a double release is refused") {
    std::vector<int32_t> copy = a;
    m.release(a);
    CHECK(a.empty());
    CHECK(m.num_free_blocks() == 3);
    CHECK_THROWS_AS(m.release(copy), std::logic_error);
    m.release(b);
    CHECK(m.num_free_blocks() == 8);
  }
}

TEST_CASE("block manager rejects an empty pool", "[kv]") {
  CHECK_THROWS_AS(KvBlockManager(0, 16), std::invalid_argument);
  CHECK_THROWS_AS(KvBlockManager(4, 0), std::invalid_argument);
}

TEST_CASE("random reserve/release never leaks or shares a block", "[kv]") {
  KvBlockManager m(64, 16);
  std::mt19937 rng(7);
  std::vector<std::vector<int32_t>> tables(10);
  std::vector<int> lens(10, 0);
  for (int it = 0; it < 5000; ++it) {
    const size_t s = rng() % tables.size();
    if (rng() % 4 == 0) {
      m.release(tables[s]);
      lens[s] = 0;
    } else {
      const int grow = lens[s] + int(rng() % 40);
      if (m.reserve(tables[s], grow)) lens[s] = grow;
    }
    std::set<int32_t> seen;
    size_t held = 0;
    for (const auto& t : tables) {
      held += t.size();
      seen.insert(t.begin(), t.end());
    }
    REQUIRE(seen.size() == held);  // no block in two tables
    REQUIRE(int(held) + m.num_free_blocks() == m.num_blocks());
  }
  for (auto& t : tables) m.release(t);
  CHECK(m.num_free_blocks() == m.num_blocks());
}

TEST_CASE("forward batch from mixed prefill and decode chunks", "[batch]") {
  const std::vector<int32_t> seq_a = {1, 10, 11, 12, 13, 14};  // prefill of 4 after 2 cached
  const std::vector<int32_t> seq_b = {1, 20, 21};              // decode of its last token
  const std::vector<int32_t> table_a = {5, 2}, table_b = {7};
  const int block_size = 4;
  std::vector<ScheduledChunk> chunks = {{seq_a, table_a, 2, 4, true}, {seq_b, table_b, 2, 1, true}};
  ForwardBatch b = build_forward_batch(chunks, block_size);
  CHECK(b.token_ids == std::vector<int32_t>{11, 12, 13, 14, 21});
  CHECK(b.positions == std::vector<int32_t>{2, 3, 4, 5, 2});
  // position p → block_table[p / 4] * 4 + p % 4
  CHECK(b.slot_mapping ==
        std::vector<int32_t>{5 * 4 + 2, 5 * 4 + 3, 2 * 4 + 0, 2 * 4 + 1, 7 * 4 + 2});
  CHECK(b.query_start == std::vector<int32_t>{0, 4, 5});
  CHECK(b.context_lens == std::vector<int32_t>{6, 3});
  CHECK(b.max_blocks_per_seq == 2);
  CHECK(b.block_tables == std::vector<int32_t>{5, 2, 7, -1});
  CHECK(b.logits_rows == std::vector<int32_t>{3, 4});
  CHECK(build_forward_batch(chunks, block_size, true).logits_rows ==
        std::vector<int32_t>{0, 1, 2, 3, 4});

  SECTION("chunks that do not fit their sequence or block table are refused") {
    std::vector<ScheduledChunk> bad = {{seq_a, table_a, 4, 3, true}};
    CHECK_THROWS_AS(build_forward_batch(bad, block_size), std::invalid_argument);
    const std::vector<int32_t> short_table = {5};
    bad = {{seq_a, short_table, 2, 4, true}};
    CHECK_THROWS_AS(build_forward_batch(bad, block_size), std::invalid_argument);
  }
}

}  // namespace arbor

namespace arbor {
namespace {

std::vector<int32_t> iota_tokens(int n, int32_t first = 100) {
  std::vector<int32_t> t(n);
  for (int i = 0; i < n; ++i) t[i] = first + i;
  return t;
}

}  // namespace

TEST_CASE("prefix cache: a repeated prompt reuses its full blocks", "[kv][prefix]") {
  KvBlockManager m(16, 4);
  const std::vector<int32_t> prompt = iota_tokens(14);  // 3 full blocks + 2 tokens
  std::vector<int32_t> a, b;
  std::vector<uint64_t> ha, hb;
  CHECK(m.allocate_with_prefix(a, ha, prompt, 14) == 0);  // cold cache
  CHECK(a.size() == 4);
  m.commit(a, ha, prompt, 14);
  CHECK(ha.size() == 3);
  CHECK(m.num_cached_blocks() == 3);

  SECTION("shared while the first sequence still runs") {
    CHECK(m.allocate_with_prefix(b, hb, prompt, 14) == 12);
    CHECK(std::equal(a.begin(), a.begin() + 3, b.begin()));
    CHECK(b[3] != a[3]);  // the partial block is never shared
    CHECK(m.ref_count(a[0]) == 2);
    CHECK(m.num_used_blocks() == 5);
    m.check_consistency();
  }
  SECTION("found again after the first sequence freed it") {
    m.release(a);
    CHECK(m.num_free_blocks() == 16);  // evictable blocks count as free
    CHECK(m.num_cached_blocks() == 3);
    CHECK(m.allocate_with_prefix(b, hb, prompt, 14) == 12);
    CHECK(m.num_used_blocks() == 4);
    m.check_consistency();
  }
  SECTION("the last token is always computed") {
    const std::vector<int32_t> twelve(prompt.begin(), prompt.begin() + 12);
    CHECK(m.allocate_with_prefix(b, hb, twelve, 12) == 8);
  }
  SECTION("a different token in block 1 stops the match there") {
    std::vector<int32_t> other = prompt;
    other[5] = 7;
    CHECK(m.allocate_with_prefix(b, hb, other, 14) == 4);
    CHECK(b[0] == a[0]);
  }
  SECTION("hit accounting counts looked-up and found tokens") {
    m.allocate_with_prefix(b, hb, prompt, 14);
    const KvCacheUsage u = m.usage_stats();
    CHECK(u.prefix_query_tokens == 28);
    CHECK(u.prefix_hit_tokens == 12);
    CHECK(u.hit_rate() == Approx(12.0 / 28));
  }
  m.release(a);
  m.release(b);
  CHECK(m.num_free_blocks() == 16);
  CHECK(m.num_used_blocks() == 0);
  m.check_consistency();
}

TEST_CASE("prefix cache: evictable blocks are reused least recently freed first", "[kv][prefix]") {
  KvBlockManager m(4, 2);
  const std::vector<int32_t> p1 = {1, 2, 3}, p2 = {4, 5, 6};
  std::vector<int32_t> a, b, c;
  std::vector<uint64_t> ha, hb, hc;
  REQUIRE(m.allocate_with_prefix(a, ha, p1, 3) == 0);
  m.commit(a, ha, p1, 3);
  REQUIRE(m.allocate_with_prefix(b, hb, p2, 3) == 0);
  m.commit(b, hb, p2, 3);
  const int32_t cached1 = a[0], cached2 = b[0];
  m.release(a);  // p1's block is freed first → evicted first
  m.release(b);
  CHECK(m.num_cached_blocks() == 2);
  // 3 blocks: the 2 never-cached free blocks, then p1's cached block.
  REQUIRE(m.reserve(c, 6));
  CHECK(std::find(c.begin(), c.end(), cached1) != c.end());
  CHECK(std::find(c.begin(), c.end(), cached2) == c.end());
  CHECK(m.num_cached_blocks() == 1);
  m.check_consistency();
  m.release(c);
  std::vector<int32_t> d;
  std::vector<uint64_t> hd;
  CHECK(m.allocate_with_prefix(d, hd, p2, 3) == 2);  // p2 survived
  CHECK(d[0] == cached2);
  std::vector<int32_t> e;
  std::vector<uint64_t> he;
  CHECK(m.allocate_with_prefix(e, he, p1, 3) == 0);  // p1 was evicted
  m.release(d);
  m.release(e);
  m.check_consistency();
}

TEST_CASE("prefix cache: a matched evictable block is not evicted for the same request",
          "[kv][prefix]") {
  KvBlockManager m(3, 2);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5};
  std::vector<int32_t> a;
  std::vector<uint64_t> ha;
  REQUIRE(m.allocate_with_prefix(a, ha, p, 5) == 0);
  m.commit(a, ha, p, 5);
  m.release(a);
  // 2 cached evictable blocks + 1 free; a hit on both leaves 1 fresh block: fits exactly.
  CHECK(m.allocate_with_prefix(a, ha, p, 5) == 4);
  CHECK(m.num_free_blocks() == 0);
  std::vector<int32_t> b;
  std::vector<uint64_t> hb;
  CHECK(m.allocate_with_prefix(b, hb, std::vector<int32_t>{9, 9, 9}, 3) == -1);
  CHECK(b.empty());
  m.release(a);
  m.check_consistency();
}

TEST_CASE("prefix cache off: nothing is keyed or reused", "[kv][prefix]") {
  KvBlockManager m(8, 2, /*enable_prefix_caching=*/false);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5};
  std::vector<int32_t> a, b;
  std::vector<uint64_t> ha, hb;
  CHECK(m.allocate_with_prefix(a, ha, p, 5) == 0);
  m.commit(a, ha, p, 5);
  CHECK(m.num_cached_blocks() == 0);
  CHECK(m.allocate_with_prefix(b, hb, p, 5) == 0);
  CHECK(m.usage_stats().prefix_query_tokens == 0);
  m.release(a);
  m.release(b);
  CHECK(m.num_free_blocks() == 8);
}

TEST_CASE("fork shares the full blocks only", "[kv][prefix]") {
  for (bool caching : {true, false}) {
    KvBlockManager m(8, 4, caching);
    const std::vector<int32_t> p = iota_tokens(10);
    std::vector<int32_t> a, c;
    std::vector<uint64_t> ha, hc;
    REQUIRE(m.allocate_with_prefix(a, ha, p, 10) == 0);
    m.commit(a, ha, p, 10);
    CHECK(m.fork(a, ha, 10, c, hc) == 8);
    CHECK(c == std::vector<int32_t>{a[0], a[1]});
    CHECK(hc.size() == (caching ? 2u : 0u));
    CHECK(m.ref_count(a[1]) == 2);
    REQUIRE(m.reserve(c, 11));
    CHECK(c[2] != a[2]);
    m.release(a);
    CHECK(m.ref_count(c[0]) == 1);
    m.release(c);
    CHECK(m.num_free_blocks() == 8);
    m.check_consistency();
  }
}

TEST_CASE("random prefix sharing never leaks a block", "[kv][prefix]") {
  KvBlockManager m(48, 4);
  std::mt19937 rng(11);
  struct Seq {
    std::vector<int32_t> tokens, table;
    std::vector<uint64_t> hashes;
  };
  std::vector<Seq> seqs(8);
  for (int it = 0; it < 4000; ++it) {
    Seq& s = seqs[rng() % seqs.size()];
    const unsigned op = rng() % 5;
    if (op == 0 || s.table.empty()) {
      m.release(s.table);
      s.hashes.clear();
      s.tokens.clear();
      const int len = 1 + int(rng() % 30);
      const int32_t family = int32_t(rng() % 3);  // few distinct prefixes → many hits
      for (int i = 0; i < len; ++i)
        s.tokens.push_back(i < 12 ? family * 100 + i : int32_t(rng() % 50));
      if (m.allocate_with_prefix(s.table, s.hashes, s.tokens, len) < 0)
        s.tokens.clear();
      else
        m.commit(s.table, s.hashes, s.tokens, len);
    } else {
      s.tokens.push_back(int32_t(rng() % 50));
      if (m.reserve(s.table, int(s.tokens.size())))
        m.commit(s.table, s.hashes, s.tokens, int(s.tokens.size()));
      else
        s.tokens.pop_back();
    }
    std::vector<int> refs(m.num_blocks(), 0);
    for (const Seq& q : seqs)
      for (int32_t b : q.table) ++refs[b];
    for (int b = 0; b < m.num_blocks(); ++b) REQUIRE(refs[b] == m.ref_count(b));
    m.check_consistency();
  }
  for (Seq& s : seqs) m.release(s.table);
  CHECK(m.num_free_blocks() == m.num_blocks());
  CHECK(m.num_used_blocks() == 0);
  CHECK(m.usage_stats().prefix_hit_tokens > 0);
}

}  // namespace arbor
