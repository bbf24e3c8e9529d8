// Context-parallel attention on the CPU reference: each of p ranks holds its stripe of every
// sequence (kernels/paged_kv.h), computes a partial (o, lse), and the partials merged by
// their LSE (kernels/cpu/ops.h, both combine strategies' math) equal single-device attention.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/check.h"
#include "tests/test_util.h"

namespace arbor {
namespace {

using test::random_floats;

TEST_CASE("local_kv_len and local_slot describe a round-robin striping", "[kernels][cp]") {
  for (int p : {1, 2, 3, 4, 8}) {
    for (int bs : {1, 4, 16}) {
      for (int len = 0; len <= 3 * p * bs + 5; ++len) {
        int total = 0;
        for (int r = 0; r < p; ++r) {
          // Count by brute force: the positions < len whose stripe is r.
          int want = 0;
          for (int pos = 0; pos < len; ++pos) want += (pos / bs) % p == r;
          REQUIRE(local_kv_len(len, p, r, bs) == want);
          total += want;
        }
        REQUIRE(total == len);
      }
      // Engine slot (super-block of p·bs) → exactly one rank's local slot, in its block.
      for (int32_t slot = 0; slot < 5 * p * bs; ++slot) {
        int owners = 0;
        for (int r = 0; r < p; ++r) {
          const int32_t local = local_slot(slot, p, r, bs);
          if (local < 0) continue;
          ++owners;
          REQUIRE(local / bs == slot / (p * bs));
          REQUIRE(local % bs == slot % bs);
          REQUIRE(r == (slot % (p * bs)) / bs);
        }
        REQUIRE(owners == 1);
      }
      REQUIRE(local_slot(-1, p, 0, bs) == -1);
    }
  }
}

struct Seq {
  int context_len, n_query;
};

// One sequence set, written both as a single-device cache and as p rank caches.
struct ShardedBatch {
  int p = 1, bs = 1, kvh = 1, d = 1;
  std::vector<int32_t> query_start{0}, context_lens, tables;  // tables: super-block ids
  int max_blocks = 0;
  PagedKvShape single_shape, rank_shape;
  std::vector<float> single_k, single_v;
  std::vector<int32_t> single_tables;
  int single_max_blocks = 0;
  std::vector<std::vector<float>> rank_k, rank_v;
};

ShardedBatch make_sharded(const std::vector<Seq>& seqs, int p, int bs, int kvh, int d,
                          uint64_t seed) {
  ShardedBatch b;
  b.p = p;
  b.bs = bs;
  b.kvh = kvh;
  b.d = d;
  std::mt19937_64 rng(seed);
  int super_blocks = 0, single_blocks = 0;
  for (const Seq& s : seqs) {
    b.max_blocks = std::max(b.max_blocks, (s.context_len + p * bs - 1) / (p * bs));
    b.single_max_blocks = std::max(b.single_max_blocks, (s.context_len + bs - 1) / bs);
    super_blocks += (s.context_len + p * bs - 1) / (p * bs);
    single_blocks += (s.context_len + bs - 1) / bs;
  }
  b.rank_shape = {super_blocks + 2, kvh, bs, d};
  b.single_shape = {single_blocks + 2, kvh, bs, d};
  // NaN where nothing was written: a read of a foreign or missing row poisons the output.
  b.single_k.assign(b.single_shape.layer_elements(), NAN);
  b.single_v = b.single_k;
  b.rank_k.assign(size_t(p), std::vector<float>(b.rank_shape.layer_elements(), NAN));
  b.rank_v = b.rank_k;
  std::vector<int32_t> super_ids(size_t(b.rank_shape.num_blocks)),
      single_ids(size_t(b.single_shape.num_blocks));
  std::iota(super_ids.begin(), super_ids.end(), 0);
  std::iota(single_ids.begin(), single_ids.end(), 0);
  std::shuffle(super_ids.begin(), super_ids.end(), rng);
  std::shuffle(single_ids.begin(), single_ids.end(), rng);
  b.tables.assign(seqs.size() * size_t(b.max_blocks), -1);
  b.single_tables.assign(seqs.size() * size_t(b.single_max_blocks), -1);
  size_t next_super = 0, next_single = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const int ctx = seqs[s].context_len;
    b.context_lens.push_back(ctx);
    b.query_start.push_back(b.query_start.back() + seqs[s].n_query);
    const auto k = random_floats(size_t(ctx) * kvh * d, seed * 7 + 2 * s);
    const auto v = random_floats(size_t(ctx) * kvh * d, seed * 7 + 2 * s + 1);
    int32_t* table = b.tables.data() + s * b.max_blocks;
    int32_t* single = b.single_tables.data() + s * b.single_max_blocks;
    for (int pos = 0; pos < ctx; ++pos) {
      if (pos % (p * bs) == 0) table[pos / (p * bs)] = super_ids[next_super++];
      if (pos % bs == 0) single[pos / bs] = single_ids[next_single++];
      const int32_t engine_slot = table[pos / (p * bs)] * (p * bs) + pos % (p * bs);
      for (int r = 0; r < p; ++r) {
        const int32_t slot = local_slot(engine_slot, p, r, bs);
        if (slot < 0) continue;
        for (int h = 0; h < kvh; ++h) {
          const size_t src = (size_t(pos) * kvh + h) * d;
          const size_t dst = b.rank_shape.offset(slot / bs, h, slot % bs);
          std::copy_n(k.begin() + src, d, b.rank_k[r].begin() + dst);
          std::copy_n(v.begin() + src, d, b.rank_v[r].begin() + dst);
        }
      }
      for (int h = 0; h < kvh; ++h) {
        const size_t src = (size_t(pos) * kvh + h) * d;
        const size_t dst = b.single_shape.offset(single[pos / bs], h, pos % bs);
        std::copy_n(k.begin() + src, d, b.single_k.begin() + dst);
        std::copy_n(v.begin() + src, d, b.single_v.begin() + dst);
      }
    }
  }
  return b;
}

void check_context_parallel(const std::vector<Seq>& seqs, int p, int bs, int hq, int kvh, int d,
                            uint64_t seed) {
  const ShardedBatch b = make_sharded(seqs, p, bs, kvh, d, seed);
  const int n = b.query_start.back();
  const size_t rows = size_t(n) * hq;
  const auto q = random_floats(rows * d, seed + 99);
  const float scale = 1.0f / std::sqrt(float(d));

  AttentionBatch single{int(seqs.size()), b.query_start.data(), b.context_lens.data(),
                        b.single_tables.data(), b.single_max_blocks};
  std::vector<float> want(rows * d), want_lse(rows);
  cpu::paged_attention(q.data(), hq, b.single_shape, b.single_k.data(), b.single_v.data(), single,
                       scale, want.data(), want_lse.data());

  // Every rank's partial, packed as an all-gather would deliver them.
  std::vector<float> gathered(size_t(p) * rows * (d + 1)), o(rows * d), lse(rows);
  std::vector<std::vector<float>> partial_o(p), partial_lse(p);
  for (int r = 0; r < p; ++r) {
    AttentionBatch shard{int(seqs.size()), b.query_start.data(), b.context_lens.data(),
                         b.tables.data(), b.max_blocks};
    shard.cp_size = p;
    shard.cp_rank = r;
    cpu::paged_attention(q.data(), hq, b.rank_shape, b.rank_k[r].data(), b.rank_v[r].data(), shard,
                         scale, o.data(), lse.data());
    for (float x : o) REQUIRE(std::isfinite(x));  // empty shards give 0, never NaN
    cpu::pack_partials(o.data(), lse.data(), rows, d, gathered.data() + size_t(r) * rows * (d + 1));
    partial_o[r] = o;
    partial_lse[r] = lse;
  }
  // fp32 tolerance: the merge re-weights p partials (exp of lse differences, ~1e-7 relative)
  // of outputs with |o| ≤ 1; 1e-5 absolute is far below a misplaced key (~1/context).
  std::vector<float> merged(rows * d), merged_lse(rows);
  cpu::merge_packed_partials(gathered.data(), p, rows, d, merged.data(), merged_lse.data());
  for (size_t i = 0; i < merged.size(); ++i) REQUIRE(std::abs(merged[i] - want[i]) <= 1e-5f);
  for (size_t i = 0; i < rows; ++i)
    REQUIRE(std::abs(merged_lse[i] - want_lse[i]) <= 1e-5f * std::max(1.0f, std::abs(want_lse[i])));

  // The all-reduce strategy's steps: max of lse, sum of weighted partials, divide.
  std::vector<float> max_lse(rows, -INFINITY);
  for (int r = 0; r < p; ++r)
    for (size_t i = 0; i < rows; ++i) max_lse[i] = std::max(max_lse[i], partial_lse[r][i]);
  std::vector<float> sum(rows * (d + 1), 0.0f), weighted(rows * (d + 1));
  for (int r = 0; r < p; ++r) {
    cpu::weight_partials(partial_o[r].data(), partial_lse[r].data(), max_lse.data(), rows, d,
                         weighted.data());
    for (size_t i = 0; i < sum.size(); ++i) sum[i] += weighted[i];
  }
  std::vector<float> reduced(rows * d);
  cpu::normalize_weighted(sum.data(), rows, d, reduced.data());
  for (size_t i = 0; i < reduced.size(); ++i) REQUIRE(std::abs(reduced[i] - want[i]) <= 1e-5f);
}

TEST_CASE("context-parallel partials merged equal single-device attention, p = 1..8",
          "[kernels][cp]") {
  std::mt19937 rng(7);
  for (int p = 1; p <= 8; ++p) {
    for (int trial = 0; trial < 4; ++trial) {
      const int bs = trial % 2 ? 4 : 16;
      const int d = trial < 2 ? 16 : 32;
      const int kvh = 1 + int(rng() % 2), hq = kvh * (1 + int(rng() % 4));
      std::vector<Seq> seqs;
      const int n_seqs = 1 + int(rng() % 3);
      for (int s = 0; s < n_seqs; ++s) {
        const int ctx = 1 + int(rng() % 200);
        // decode tokens, whole prompts and chunks of a prompt
        const int nq = s == 0 ? 1 : std::min(ctx, 1 + int(rng() % 40));
        seqs.push_back({ctx, nq});
      }
      INFO("p=" << p << " bs=" << bs << " d=" << d << " hq=" << hq << " kvh=" << kvh);
      check_context_parallel(seqs, p, bs, hq, kvh, d, 1000 * p + trial);
    }
  }
}

TEST_CASE("context-parallel attention with contexts shorter than p blocks (empty shards)",
          "[kernels][cp]") {
  // 3 positions over 8 ranks of 4-position blocks: ranks 1..7 hold nothing.
  check_context_parallel({{3, 3}, {1, 1}, {5, 2}}, 8, 4, 4, 2, 16, 5);
  check_context_parallel({{17, 17}}, 4, 16, 2, 2, 16, 6);  // rank 1 holds one position
}

TEST_CASE("merge of partials that are all empty is zero, not NaN", "[kernels][cp]") {
  const int d = 4;
  std::vector<float> gathered = {1, 2, 3, 4, -INFINITY, 5, 6, 7, 8, -INFINITY};
  std::vector<float> out(d, NAN), lse(1, 0.0f);
  cpu::merge_packed_partials(gathered.data(), 2, 1, d, out.data(), lse.data());
  REQUIRE(out == std::vector<float>(d, 0.0f));
  REQUIRE(lse[0] == -INFINITY);
  std::vector<float> weighted(d + 1), max_lse = {-INFINITY}, o = {1, 2, 3, 4}, l = {-INFINITY};
  cpu::weight_partials(o.data(), l.data(), max_lse.data(), 1, d, weighted.data());
  REQUIRE(weighted == std::vector<float>(d + 1, 0.0f));
  cpu::normalize_weighted(weighted.data(), 1, d, out.data());
  REQUIRE(out == std::vector<float>(d, 0.0f));
}

}  // namespace
}  // namespace arbor
