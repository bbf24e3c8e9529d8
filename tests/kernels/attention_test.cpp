// kv_cache_write and paged_attention against a dense, non-paged double-precision attention.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/ops.h"
#include "tests/kernels/check.h"
#include "tests/test_util.h"

using arbor::PagedKvShape;
using arbor::test::random_floats;
using arbor::test::require_close;

namespace {

// Index of (block, kv head, row in block, 0) in one layer's cache, written out here rather
// than taken from PagedKvShape::offset so the layout itself is under test.
size_t cache_index(const PagedKvShape& s, int block, int head, int row) {
  return ((size_t(block) * s.num_kv_heads + head) * s.block_size + row) * s.head_dim;
}

struct SeqSpec {
  int context_len;  // tokens in the cache, including the new ones
  int n_query;      // new tokens: the last n_query positions
};

// A batch laid out in a paged cache: dense per-sequence K/V (the reference's view), the same
// values scattered over randomly shuffled blocks, and the batch arrays.
struct PagedBatch {
  PagedKvShape shape;
  std::vector<std::vector<float>> k_dense, v_dense;  // [seq][pos][kv_head][head_dim]
  std::vector<float> k_cache, v_cache;
  std::vector<int32_t> query_start, context_lens, block_tables;
  int max_blocks_per_seq = 0;

  arbor::AttentionBatch view() const {
    arbor::AttentionBatch b;
    b.num_seqs = int(context_lens.size());
    b.query_start = query_start.data();
    b.context_lens = context_lens.data();
    b.block_tables = block_tables.data();
    b.max_blocks_per_seq = max_blocks_per_seq;
    return b;
  }
};

PagedBatch make_batch(const std::vector<SeqSpec>& seqs, int num_kv_heads, int block_size,
                      int head_dim, uint64_t seed) {
  PagedBatch pb;
  int total_blocks = 0;
  for (const auto& s : seqs) {
    const int blocks = (s.context_len + block_size - 1) / block_size;
    total_blocks += blocks;
    pb.max_blocks_per_seq = std::max(pb.max_blocks_per_seq, blocks + 1);  // +1: unused tail
  }
  pb.shape = {total_blocks + 3, num_kv_heads, block_size, head_dim};  // 3 never-used blocks
  // NaN everywhere a sequence does not own: reading past a context or into a foreign block
  // turns the output into NaN, which the comparison rejects.
  pb.k_cache.assign(pb.shape.layer_elements(), NAN);
  pb.v_cache.assign(pb.shape.layer_elements(), NAN);

  std::vector<int32_t> free_blocks(size_t(pb.shape.num_blocks));
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);

  pb.block_tables.assign(seqs.size() * size_t(pb.max_blocks_per_seq), -1);
  pb.query_start.push_back(0);
  size_t next_free = 0;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const int ctx = seqs[s].context_len;
    pb.context_lens.push_back(ctx);
    pb.query_start.push_back(pb.query_start.back() + seqs[s].n_query);
    const size_t row = size_t(num_kv_heads) * head_dim;
    pb.k_dense.push_back(random_floats(size_t(ctx) * row, seed * 31 + 2 * s));
    pb.v_dense.push_back(random_floats(size_t(ctx) * row, seed * 31 + 2 * s + 1));
    int32_t* table = pb.block_tables.data() + s * pb.max_blocks_per_seq;
    for (int p = 0; p < ctx; ++p) {
      if (p % block_size == 0) table[p / block_size] = free_blocks[next_free++];
      for (int h = 0; h < num_kv_heads; ++h) {
        const size_t dst = cache_index(pb.shape, table[p / block_size], h, p % block_size);
        const size_t src = size_t(p) * row + size_t(h) * head_dim;
        std::copy_n(pb.k_dense[s].begin() + src, head_dim, pb.k_cache.begin() + dst);
        std::copy_n(pb.v_dense[s].begin() + src, head_dim, pb.v_cache.begin() + dst);
      }
    }
  }
  return pb;
}

// Dense causal GQA attention in double. Fills out [tokens][q_heads][head_dim] and
// lse [tokens][q_heads].
void reference_attention(const PagedBatch& pb, const std::vector<float>& q, int num_q_heads,
                         double scale, std::vector<double>& out, std::vector<double>& lse) {
  const int kvh = pb.shape.num_kv_heads, d = pb.shape.head_dim;
  const int group = num_q_heads / kvh;
  const int n_tokens = pb.query_start.back();
  out.assign(size_t(n_tokens) * num_q_heads * d, 0.0);
  lse.assign(size_t(n_tokens) * num_q_heads, 0.0);
  for (size_t s = 0; s < pb.context_lens.size(); ++s) {
    const int ctx = pb.context_lens[s];
    const int first = pb.query_start[s], n = pb.query_start[s + 1] - first;
    for (int i = 0; i < n; ++i) {
      const int pos = ctx - n + i;
      const int t = first + i;
      for (int h = 0; h < num_q_heads; ++h) {
        const float* qv = q.data() + (size_t(t) * num_q_heads + h) * d;
        std::vector<double> scores(size_t(pos) + 1);
        for (int j = 0; j <= pos; ++j) {
          const float* kv = pb.k_dense[s].data() + (size_t(j) * kvh + h / group) * d;
          double dot = 0.0;
          for (int e = 0; e < d; ++e) dot += double(qv[e]) * kv[e];
          scores[j] = dot * scale;
        }
        const double mx = *std::max_element(scores.begin(), scores.end());
        double sum = 0.0;
        double* o = out.data() + (size_t(t) * num_q_heads + h) * d;
        for (int j = 0; j <= pos; ++j) {
          const double p = std::exp(scores[j] - mx);
          sum += p;
          const float* vv = pb.v_dense[s].data() + (size_t(j) * kvh + h / group) * d;
          for (int e = 0; e < d; ++e) o[e] += p * vv[e];
        }
        for (int e = 0; e < d; ++e) o[e] /= sum;
        lse[size_t(t) * num_q_heads + h] = mx + std::log(sum);
      }
    }
  }
}

// Runs paged_attention on `pb` and compares output and LSE with the reference.
void check_attention(const PagedBatch& pb, int num_q_heads, float q_range, uint64_t seed) {
  const int d = pb.shape.head_dim;
  const int n_tokens = pb.query_start.back();
  const auto q = random_floats(size_t(n_tokens) * num_q_heads * d, seed, -q_range, q_range);
  const float scale = 1.0f / std::sqrt(float(d));
  std::vector<float> out(q.size(), NAN), lse(size_t(n_tokens) * num_q_heads, NAN);
  arbor::cpu::paged_attention(q.data(), num_q_heads, pb.shape, pb.k_cache.data(), pb.v_cache.data(),
                              pb.view(), scale, out.data(), lse.data());
  std::vector<double> want_out, want_lse;
  reference_attention(pb, q, num_q_heads, scale, want_out, want_lse);

  // The output is a convex combination of V rows with |v| <= 1. fp32 scores (d-term dots,
  // ~1e-7 relative), exp, and a weighted sum over <= 100 rows err by ~1e-6 in absolute
  // terms; 1e-5 catches any wrong weight (a misplaced or missing row moves the output by
  // ~1/context ≥ 1e-2).
  require_close(out, want_out, std::vector<double>(want_out.size(), 1e-5));
  // LSE = max + log(sum): absolute error of a few ulps of its magnitude, plus the score
  // errors above; 1e-5 relative with a floor of 1.
  require_close(lse, want_lse, arbor::test::relative_tol(want_lse, 1e-5, 1.0));

  // Without lse the output is the same.
  std::vector<float> out2(q.size(), NAN);
  arbor::cpu::paged_attention(q.data(), num_q_heads, pb.shape, pb.k_cache.data(), pb.v_cache.data(),
                              pb.view(), scale, out2.data());
  REQUIRE(out2 == out);
}

}  // namespace

TEST_CASE("paged_attention matches dense attention on a mixed ragged batch",
          "[kernels][attention]") {
  // (block size, head dim, GQA ratio) with 2 kv heads: block size 1 (every row its own
  // block), small odd and typical 16; head dims 32/64/128; ratios 1, 2 and 4.
  const auto [block_size, head_dim, group] = GENERATE(table<int, int, int>(
      {{1, 32, 1}, {3, 64, 2}, {16, 128, 4}, {16, 32, 2}, {5, 128, 1}, {2, 64, 4}}));
  CAPTURE(block_size, head_dim, group);
  const int num_kv_heads = 2;
  // A full prefill, a prefill chunk after a cached prefix, decodes (one at a block boundary,
  // one with a partial last block), a context shorter than one block, the very first token,
  // and a sequence with no new token this step.
  const std::vector<SeqSpec> seqs = {{37, 37}, {50, 1}, {45, 13}, {5, 5},
                                     {1, 1},   {48, 1}, {20, 0},  {33, 1}};
  const auto pb = make_batch(seqs, num_kv_heads, block_size, head_dim, 7 + block_size);
  check_attention(pb, num_kv_heads * group, 1.0f, 11 + head_dim);
}

TEST_CASE("paged_attention stays finite and exact for large scores", "[kernels][attention]") {
  // Scores of several hundred overflow exp() in fp32 unless the max is subtracted first.
  const auto pb = make_batch({{40, 3}, {17, 1}}, 1, 4, 64, 99);
  check_attention(pb, 2, 200.0f, 5);
}

TEST_CASE("paged_attention rejects batches that would read out of bounds", "[kernels][attention]") {
  auto pb = make_batch({{10, 2}, {6, 1}}, 2, 4, 32, 3);
  const auto q = random_floats(3 * 2 * 32, 1);
  std::vector<float> out(q.size());
  auto run = [&](const PagedBatch& b, int num_q_heads) {
    arbor::cpu::paged_attention(q.data(), num_q_heads, b.shape, b.k_cache.data(), b.v_cache.data(),
                                b.view(), 0.1f, out.data());
  };
  REQUIRE_NOTHROW(run(pb, 2));
  REQUIRE_THROWS_AS(run(pb, 3), std::invalid_argument);  // not a multiple of kv heads

  SECTION("more query tokens than context") {
    pb.context_lens[1] = 0;
    REQUIRE_THROWS_AS(run(pb, 2), std::invalid_argument);
  }
  SECTION("context longer than the block table") {
    pb.context_lens[0] = pb.max_blocks_per_seq * pb.shape.block_size + 1;
    REQUIRE_THROWS_AS(run(pb, 2), std::invalid_argument);
  }
  SECTION("block id outside the cache") {
    pb.block_tables[1] = pb.shape.num_blocks;
    REQUIRE_THROWS_AS(run(pb, 2), std::invalid_argument);
  }
  SECTION("unset block table entry within the context") {
    pb.context_lens[0] = 13;  // needs a 4th block; the table holds -1 there
    REQUIRE_THROWS_AS(run(pb, 2), std::invalid_argument);
  }
  SECTION("decreasing query_start") {
    pb.query_start = {0, 2, 1};
    REQUIRE_THROWS_AS(run(pb, 2), std::invalid_argument);
  }
}

TEST_CASE("kv_cache_write puts each token's rows at its slot", "[kernels][kv_cache]") {
  const PagedKvShape shape{5, 2, 4, 8};
  const int n_tokens = 6;
  const auto k = random_floats(size_t(n_tokens) * 2 * 8, 1);
  const auto v = random_floats(size_t(n_tokens) * 2 * 8, 2);
  // Slots in several blocks, out of order; slot -1 is a padding token and is skipped.
  const std::vector<int32_t> slots = {13, 14, 2, 19, -1, 0};
  std::vector<float> k_cache(shape.layer_elements(), -7.0f), v_cache = k_cache;
  arbor::cpu::kv_cache_write(k.data(), v.data(), slots.data(), n_tokens, shape, k_cache.data(),
                             v_cache.data());

  std::vector<float> want_k(shape.layer_elements(), -7.0f), want_v = want_k;
  for (int t = 0; t < n_tokens; ++t) {
    if (slots[t] < 0) continue;
    for (int h = 0; h < 2; ++h) {
      const size_t dst = cache_index(shape, slots[t] / 4, h, slots[t] % 4);
      for (int e = 0; e < 8; ++e) {
        want_k[dst + e] = k[(size_t(t) * 2 + h) * 8 + e];
        want_v[dst + e] = v[(size_t(t) * 2 + h) * 8 + e];
      }
    }
  }
  REQUIRE(k_cache == want_k);
  REQUIRE(v_cache == want_v);

  SECTION("a slot past the cache throws and writes nothing") {
    const std::vector<int32_t> bad = {3, 20};
    auto k2 = want_k;
    REQUIRE_THROWS_AS(arbor::cpu::kv_cache_write(k.data(), v.data(), bad.data(), 2, shape,
                                                 k2.data(), v_cache.data()),
                      std::invalid_argument);
    REQUIRE(k2 == want_k);
  }
}

TEST_CASE("kv_cache_write then paged_attention attends to the written tokens",
          "[kernels][attention][kv_cache]") {
  // Prefill 6 tokens, then decode 1, through kv_cache_write, against the dense reference.
  auto pb = make_batch({{7, 7}}, 1, 4, 32, 21);
  const std::vector<float> k_row_major = pb.k_dense[0], v_row_major = pb.v_dense[0];
  std::fill(pb.k_cache.begin(), pb.k_cache.end(), NAN);
  std::fill(pb.v_cache.begin(), pb.v_cache.end(), NAN);
  std::vector<int32_t> slots;
  for (int p = 0; p < 7; ++p) slots.push_back(pb.block_tables[p / 4] * 4 + p % 4);
  arbor::cpu::kv_cache_write(k_row_major.data(), v_row_major.data(), slots.data(), 6, pb.shape,
                             pb.k_cache.data(), pb.v_cache.data());
  arbor::cpu::kv_cache_write(k_row_major.data() + 6 * 32, v_row_major.data() + 6 * 32,
                             slots.data() + 6, 1, pb.shape, pb.k_cache.data(), pb.v_cache.data());
  check_attention(pb, 2, 1.0f, 4);
}
