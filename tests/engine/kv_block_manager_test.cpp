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
