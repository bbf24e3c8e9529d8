// cuda::prefill_attention against cpu::paged_attention on the same bf16-rounded inputs:
// single-sequence prefills of awkward lengths, chunked prefill after a cached prefix, ragged
// batches mixing prefill chunks and decode tokens, head dims 64/128, GQA 1/4/8, block sizes
// 16/32/64, with and without LSE. Unused cache slots and the outputs are NaN-poisoned, so a
// read past a context or an unwritten output fails the comparison.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/bf16.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/prefill_attention.h"
#include "tests/test_util.h"

namespace {

using arbor::PagedKvShape;
using arbor::cuda::bf16;
using arbor::cuda::bf16_bits_to_float;
using arbor::cuda::DeviceArray;
using arbor::cuda::float_to_bf16_bits;

struct SeqSpec {
  int context_len;  // tokens in the cache, the new ones included
  int n_query;      // new tokens: the last n_query positions
};

struct Config {
  int head_dim;
  int num_q_heads;
  int num_kv_heads;
  int block_size;
};

std::string describe(const std::vector<SeqSpec>& seqs, const Config& c) {
  std::ostringstream os;
  os << "head_dim " << c.head_dim << ", q heads " << c.num_q_heads << ", kv heads "
     << c.num_kv_heads << ", block " << c.block_size << ", seqs (ctx/new):";
  for (const auto& s : seqs) os << ' ' << s.context_len << '/' << s.n_query;
  return os.str();
}

std::vector<uint16_t> to_bits(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = float_to_bf16_bits(v[i]);
  return bits;
}

template <typename T>
DeviceArray<T> upload(const std::vector<T>& host) {
  DeviceArray<T> d(std::max<size_t>(host.size(), 1));
  if (!host.empty()) d.upload(host.data(), host.size());
  return d;
}

DeviceArray<bf16> upload_bf16(const std::vector<float>& host) {
  const auto bits = to_bits(host);
  DeviceArray<bf16> d(std::max<size_t>(bits.size(), 1));
  if (!bits.empty()) d.upload(reinterpret_cast<const bf16*>(bits.data()), bits.size());
  return d;
}

// A ragged batch in a paged cache: random bf16-representable K/V scattered over shuffled
// blocks, NaN in every slot no sequence owns (tails of last blocks, spare blocks), and
// random bf16-representable queries (never zeros: uniform in ±q_range).
struct Batch {
  PagedKvShape shape;
  int num_q_heads = 0;
  std::vector<float> q, k_cache, v_cache;
  std::vector<int32_t> query_start, context_lens, block_tables;
  int max_blocks_per_seq = 0;
  int max_query_len = 0;

  int num_tokens() const { return query_start.back(); }
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

Batch make_batch(const std::vector<SeqSpec>& seqs, const Config& c, float q_range, uint64_t seed) {
  Batch b;
  b.num_q_heads = c.num_q_heads;
  int total_blocks = 0;
  for (const auto& s : seqs) {
    const int blocks = (s.context_len + c.block_size - 1) / c.block_size;
    total_blocks += blocks;
    b.max_blocks_per_seq = std::max(b.max_blocks_per_seq, blocks + 1);  // +1: unused tail
    b.max_query_len = std::max(b.max_query_len, s.n_query);
  }
  b.shape = {total_blocks + 3, c.num_kv_heads, c.block_size, c.head_dim};  // 3 spare blocks
  b.k_cache.assign(b.shape.layer_elements(), NAN);
  b.v_cache.assign(b.shape.layer_elements(), NAN);

  std::vector<int32_t> free_blocks(size_t(b.shape.num_blocks));
  std::iota(free_blocks.begin(), free_blocks.end(), 0);
  std::mt19937_64 rng(seed);
  std::shuffle(free_blocks.begin(), free_blocks.end(), rng);

  // Unused table entries name a real block full of NaN: a kernel that reads past the
  // context through the table gets NaN rather than a fault.
  b.block_tables.assign(seqs.size() * size_t(b.max_blocks_per_seq), free_blocks.back());
  b.query_start.push_back(0);
  size_t next_free = 0;
  const size_t row = size_t(c.num_kv_heads) * c.head_dim;
  for (size_t s = 0; s < seqs.size(); ++s) {
    const int ctx = seqs[s].context_len;
    b.context_lens.push_back(ctx);
    b.query_start.push_back(b.query_start.back() + seqs[s].n_query);
    auto k = arbor::test::random_floats(size_t(ctx) * row, seed * 131 + 2 * s + 1);
    auto v = arbor::test::random_floats(size_t(ctx) * row, seed * 131 + 2 * s + 2);
    arbor::cuda::round_to_bf16(k);
    arbor::cuda::round_to_bf16(v);
    int32_t* table = b.block_tables.data() + s * b.max_blocks_per_seq;
    for (int p = 0; p < ctx; ++p) {
      if (p % c.block_size == 0) table[p / c.block_size] = free_blocks[next_free++];
      for (int h = 0; h < c.num_kv_heads; ++h) {
        const size_t dst = b.shape.offset(table[p / c.block_size], h, p % c.block_size);
        const size_t src = size_t(p) * row + size_t(h) * c.head_dim;
        std::copy_n(k.begin() + long(src), c.head_dim, b.k_cache.begin() + long(dst));
        std::copy_n(v.begin() + long(src), c.head_dim, b.v_cache.begin() + long(dst));
      }
    }
  }
  b.q = arbor::test::random_floats(size_t(b.num_tokens()) * c.num_q_heads * c.head_dim, seed * 131,
                                   -q_range, q_range);
  arbor::cuda::round_to_bf16(b.q);
  return b;
}

struct Result {
  std::vector<float> out, lse;
};

// Runs the CUDA kernel with NaN-poisoned outputs and returns them as floats.
// extra_query_len raises max_query_len above the true maximum (it is only an upper bound).
Result run_gpu(const Batch& b, float scale, bool want_lse, arbor::cuda::PrefillKernel kernel,
               int extra_query_len = 0) {
  const int n_tokens = b.num_tokens();
  const size_t out_elems = size_t(n_tokens) * b.num_q_heads * b.shape.head_dim;
  auto q = upload_bf16(b.q);
  auto k = upload_bf16(b.k_cache);
  auto v = upload_bf16(b.v_cache);
  auto tables = upload(b.block_tables);
  auto lens = upload(b.context_lens);
  auto starts = upload(b.query_start);
  DeviceArray<bf16> out(std::max<size_t>(out_elems, 1));
  DeviceArray<float> lse(std::max<size_t>(size_t(n_tokens) * b.num_q_heads, 1));
  CUDA_CHECK(cudaMemset(out.data(), 0xff, out.bytes()));  // bf16 0xffff: NaN
  CUDA_CHECK(cudaMemset(lse.data(), 0xff, lse.bytes()));  // fp32 0xffffffff: NaN

  arbor::cuda::PrefillAttentionParams p;
  p.q = q.data();
  p.k_cache = k.data();
  p.v_cache = v.data();
  p.block_tables = tables.data();
  p.context_lens = lens.data();
  p.query_start = starts.data();
  p.num_seqs = int(b.context_lens.size());
  p.num_tokens = n_tokens;
  p.num_q_heads = b.num_q_heads;
  p.num_kv_heads = b.shape.num_kv_heads;
  p.head_dim = b.shape.head_dim;
  p.block_size = b.shape.block_size;
  p.max_blocks_per_seq = b.max_blocks_per_seq;
  p.max_query_len = b.max_query_len + extra_query_len;
  p.scale = scale;
  p.out = out.data();
  p.lse = want_lse ? lse.data() : nullptr;
  p.kernel = kernel;
  arbor::cuda::prefill_attention(p, nullptr);
  CUDA_CHECK(cudaDeviceSynchronize());

  Result r;
  std::vector<uint16_t> bits(out_elems);
  if (out_elems) out.download(reinterpret_cast<bf16*>(bits.data()), out_elems);
  if (want_lse) {
    r.lse.resize(size_t(n_tokens) * b.num_q_heads);
    lse.download(r.lse.data(), r.lse.size());
  }
  CUDA_CHECK(cudaDeviceSynchronize());
  r.out.resize(out_elems);
  for (size_t i = 0; i < out_elems; ++i) r.out[i] = bf16_bits_to_float(bits[i]);
  return r;
}

// "token t (sequence s, query row i at position p), head h[, dim e]" for a failure message.
std::string where(const Batch& b, size_t token_head, int dim) {
  const int t = int(token_head / size_t(b.num_q_heads));
  const int h = int(token_head % size_t(b.num_q_heads));
  int s = 0;
  while (b.query_start[s + 1] <= t) ++s;
  const int n = b.query_start[s + 1] - b.query_start[s];
  const int i = t - b.query_start[s];
  std::ostringstream os;
  os << "token " << t << " (sequence " << s << ", query row " << i << " of " << n << ", position "
     << b.context_lens[s] - n + i << " of context " << b.context_lens[s] << "), head " << h;
  if (dim >= 0) os << ", dim " << dim;
  return os.str();
}

// Compares GPU and CPU outputs (and LSEs when given) and reports the first and the worst
// mismatch.
void compare(const Batch& b, const Result& got, const std::vector<float>& ref_out,
             const std::vector<float>& ref_lse) {
  const int d = b.shape.head_dim;
  float ref_max = 0.0f;
  for (float x : ref_out) ref_max = std::max(ref_max, std::fabs(x));
  // The GPU rounds the softmax weights P to bf16 for the tensor-core P·V (relative error
  // ≤ 2^-9 per weight) and rounds the output to bf16 (≤ 2^-9 · |out|); the CPU reference
  // keeps fp32 throughout. Both errors are bounded by a small multiple of 2^-9 · max|out|,
  // so 2e-2 · max|ref| (≈ 10 bf16 ulps) plus 2e-3 for outputs near zero.
  const float tol = 2e-2f * ref_max + 2e-3f;
  REQUIRE(got.out.size() == ref_out.size());
  size_t bad = 0, first = 0, worst = 0;
  float worst_err = 0.0f;
  for (size_t i = 0; i < ref_out.size(); ++i) {
    const float err = std::fabs(got.out[i] - ref_out[i]);
    if (!(err <= tol)) {  // NaN (unwritten or poisoned) fails here too
      if (bad++ == 0) first = i;
      if (!(err <= worst_err)) worst = i, worst_err = err;
    }
  }
  INFO("max |ref| " << ref_max << ", tolerance " << tol);
  if (bad) {
    const size_t fi = first, wi = worst;
    INFO(bad << " of " << ref_out.size() << " outputs off; first at "
             << where(b, fi / size_t(d), int(fi % size_t(d))) << ": got " << got.out[fi]
             << ", want " << ref_out[fi] << "; worst at "
             << where(b, wi / size_t(d), int(wi % size_t(d))) << ": got " << got.out[wi]
             << ", want " << ref_out[wi]);
    CHECK(bad == 0);
  }
  if (!ref_lse.empty()) {
    REQUIRE(got.lse.size() == ref_lse.size());
    // The LSE comes from fp32 scores of bf16 inputs on both sides; only summation order and
    // the GPU's ex2.approx differ.
    size_t lse_bad = 0, lse_first = 0;
    for (size_t i = 0; i < ref_lse.size(); ++i) {
      const float err = std::fabs(got.lse[i] - ref_lse[i]);
      if (!(err <= 1e-3f * (1.0f + std::fabs(ref_lse[i])))) {
        if (lse_bad++ == 0) lse_first = i;
      }
    }
    if (lse_bad) {
      INFO(lse_bad << " of " << ref_lse.size() << " LSEs off; first at " << where(b, lse_first, -1)
                   << ": got " << got.lse[lse_first] << ", want " << ref_lse[lse_first]);
      CHECK(lse_bad == 0);
    }
  }
}

// Both kernels where the device runs both: mma.sync everywhere, wgmma on sm_90a.
std::vector<arbor::cuda::PrefillKernel> kernels_here() {
  std::vector<arbor::cuda::PrefillKernel> k = {arbor::cuda::PrefillKernel::kMmaSync};
  if (arbor::cuda::prefill_attention_wgmma_available())
    k.push_back(arbor::cuda::PrefillKernel::kWgmma);
  return k;
}

const char* name(arbor::cuda::PrefillKernel k) {
  return k == arbor::cuda::PrefillKernel::kWgmma ? "wgmma" : "mma.sync";
}

// Builds the batch, runs the CPU reference and every kernel of this device and compares.
// Returns the last GPU result.
Result check_case(const std::vector<SeqSpec>& seqs, const Config& c, bool with_lse, uint64_t seed,
                  float q_range = 4.0f) {
  INFO(describe(seqs, c) << ", lse " << with_lse << ", q range ±" << q_range);
  const Batch b = make_batch(seqs, c, q_range, seed);
  const float scale = 1.0f / std::sqrt(float(c.head_dim));
  std::vector<float> ref_out(b.q.size()), ref_lse;
  if (with_lse) ref_lse.resize(size_t(b.num_tokens()) * c.num_q_heads);
  arbor::cpu::paged_attention(b.q.data(), c.num_q_heads, b.shape, b.k_cache.data(),
                              b.v_cache.data(), b.view(), scale, ref_out.data(),
                              with_lse ? ref_lse.data() : nullptr);
  Result got;
  for (const auto kernel : kernels_here()) {
    INFO("kernel " << name(kernel));
    got = run_gpu(b, scale, with_lse, kernel);
    compare(b, got, ref_out, ref_lse);
  }
  return got;
}

}  // namespace

TEST_CASE("prefill_attention matches the CPU reference on single-sequence prefills",
          "[gpu][prefill_attention]") {
  // GQA 1, 4 and 8; block sizes smaller than, half of and equal to the 64-key tile.
  const Config configs[] = {
      {64, 4, 4, 16},
      {128, 8, 2, 32},
      {128, 8, 1, 16},
      {64, 8, 1, 64},
  };
  uint64_t seed = 1;
  for (const Config& c : configs) {
    for (int n : {1, 15, 16, 17, 100, 1000}) {
      check_case({{n, n}}, c, /*with_lse=*/n % 2 == 0, seed++);
    }
  }
}

TEST_CASE("prefill_attention matches the CPU reference on a 4096-token prompt",
          "[gpu][prefill_attention]") {
  check_case({{4096, 4096}}, {128, 4, 1, 16}, /*with_lse=*/true, 101);
}

TEST_CASE("prefill_attention handles a chunk after a cached prefix", "[gpu][prefill_attention]") {
  // 100 new tokens at positions 3000..3099: every key tile below 3000 is unmasked, the last
  // ones straddle the diagonal.
  check_case({{3100, 100}}, {128, 8, 1, 32}, /*with_lse=*/true, 201);
  check_case({{3100, 100}}, {64, 4, 4, 16}, /*with_lse=*/false, 202);
  // A chunk whose first position is not a multiple of the tile or block size.
  check_case({{1337, 201}}, {128, 8, 2, 16}, /*with_lse=*/true, 203);
  // Cache blocks larger than the 64-key tile, and a block size that is not a power of two.
  check_case({{1337, 201}}, {128, 4, 2, 128}, /*with_lse=*/true, 204);
  check_case({{1337, 201}}, {64, 4, 1, 24}, /*with_lse=*/false, 205);
  // The wgmma kernel reads the block table once per tile for blocks of 8 or more tokens (a
  // power of two) and per row otherwise: 16 blocks per 128-key tile, blocks of 4 tokens, and
  // tiles that start inside a block.
  check_case({{1337, 201}}, {128, 8, 1, 8}, /*with_lse=*/true, 206);
  check_case({{1337, 201}}, {64, 4, 2, 4}, /*with_lse=*/false, 207);
  check_case({{1337, 201}}, {128, 4, 1, 256}, /*with_lse=*/true, 208);
}

TEST_CASE("prefill_attention handles ragged batches of prefill chunks and decode tokens",
          "[gpu][prefill_attention]") {
  const std::vector<SeqSpec> seqs = {
      {300, 300},   // whole prompt
      {500, 1},     // decode token
      {1200, 77},   // chunk after a prefix
      {64, 64},     // exactly one tile
      {17, 1},      // decode in a short context
      {2000, 130},  // chunk spanning three query tiles
      {1, 1},       // first token of a sequence
      {129, 65},    // chunk crossing a tile boundary by one
  };
  for (const Config& c : {Config{64, 8, 2, 16}, Config{128, 8, 2, 32}, Config{128, 16, 2, 16}}) {
    check_case(seqs, c, /*with_lse=*/true, 301 + uint64_t(c.head_dim));
    // Same inputs again, twice per kernel: a race (missing barrier, stage overwritten early)
    // shows up as results that differ from run to run. The second run has a loose
    // max_query_len: the extra query tiles of the grid must exit without writing.
    const Batch b = make_batch(seqs, c, 4.0f, 301 + uint64_t(c.head_dim));
    const float scale = 1.0f / std::sqrt(float(c.head_dim));
    for (const auto kernel : kernels_here()) {
      INFO(describe(seqs, c) << ", kernel " << name(kernel));
      const Result first = run_gpu(b, scale, true, kernel);
      const Result second = run_gpu(b, scale, true, kernel, 200);
      CHECK(std::memcmp(first.out.data(), second.out.data(), first.out.size() * sizeof(float)) ==
            0);
      CHECK(std::memcmp(first.lse.data(), second.lse.data(), first.lse.size() * sizeof(float)) ==
            0);
    }
  }
}

TEST_CASE("prefill_attention stays finite and accurate for large scores",
          "[gpu][prefill_attention]") {
  // q in ±40 gives scaled scores with a spread of about ±13 (std 40/3): near-one-hot softmax
  // rows, where a wrong running max or rescale shows at once.
  check_case({{200, 200}, {700, 33}}, {128, 8, 2, 16}, /*with_lse=*/true, 401, 40.0f);
  check_case({{200, 200}}, {64, 4, 1, 32}, /*with_lse=*/true, 402, 40.0f);
}

TEST_CASE("prefill_attention rejects unsupported parameters", "[gpu][prefill_attention]") {
  arbor::cuda::DeviceArray<bf16> buf(1024);
  arbor::cuda::DeviceArray<int32_t> ints(16);
  arbor::cuda::PrefillAttentionParams p;
  p.q = p.k_cache = p.v_cache = buf.data();
  p.out = buf.data();
  p.block_tables = p.context_lens = p.query_start = ints.data();
  p.num_seqs = 1;
  p.num_tokens = 1;
  p.num_q_heads = 8;
  p.num_kv_heads = 2;
  p.head_dim = 128;
  p.block_size = 16;
  p.max_blocks_per_seq = 1;
  p.max_query_len = 1;
  p.scale = 0.125f;

  SECTION("head dim") {
    p.head_dim = 96;
    CHECK_THROWS_AS(arbor::cuda::prefill_attention(p, nullptr), std::invalid_argument);
  }
  SECTION("GQA ratio") {
    p.num_kv_heads = 3;
    CHECK_THROWS_AS(arbor::cuda::prefill_attention(p, nullptr), std::invalid_argument);
  }
  SECTION("block size") {
    p.block_size = 0;
    CHECK_THROWS_AS(arbor::cuda::prefill_attention(p, nullptr), std::invalid_argument);
  }
  SECTION("scale") {
    p.scale = 0.0f;
    CHECK_THROWS_AS(arbor::cuda::prefill_attention(p, nullptr), std::invalid_argument);
  }
  SECTION("null pointer") {
    p.query_start = nullptr;
    CHECK_THROWS_AS(arbor::cuda::prefill_attention(p, nullptr), std::invalid_argument);
  }
  SECTION("max_query_len") {
    p.max_query_len = 0;
    CHECK_THROWS_AS(arbor::cuda::prefill_attention(p, nullptr), std::invalid_argument);
  }
  SECTION("an empty batch is a no-op") {
    p.num_seqs = 0;
    p.num_tokens = 0;
    CHECK_NOTHROW(arbor::cuda::prefill_attention(p, nullptr));
  }
}
