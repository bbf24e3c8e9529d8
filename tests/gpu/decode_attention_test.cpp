// Flash-decoding (cuda::decode_attention) against the CPU reference (cpu::paged_attention)
// run on the same bf16-rounded q, K and V. Random inputs, shuffled block tables, NaN in
// every cache slot the kernel must not read, in every output and in all shared memory before
// the run.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <cuda_runtime.h>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/bf16.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/device_buffer.h"
#include "tests/gpu/late_row_writer.h"
#include "tests/gpu/shared_poison.h"

namespace {

using arbor::cuda::bf16;
using arbor::cuda::bf16_bits_to_float;
using arbor::cuda::DecodeAttentionParams;
using arbor::cuda::DecodeAttentionPlan;
using arbor::cuda::DeviceArray;
using arbor::cuda::DeviceBuffer;
using arbor::cuda::float_to_bf16_bits;

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

// splitmix64: fast enough to fill caches of 10^8 values in a test.
struct Rng {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  float uniform(float lo, float hi) { return lo + (hi - lo) * float(next() >> 40) * 0x1p-24f; }
  int below(int n) { return int(next() % uint64_t(n)); }
};

// A value a bf16 tensor can hold, never zero (zeros hide unwritten or misindexed data).
float random_bf16_value(Rng& rng) {
  float x = rng.uniform(-2.0f, 2.0f);
  if (std::fabs(x) < 1e-3f) x = 0.5f;
  return bf16_bits_to_float(float_to_bf16_bits(x));
}

struct Shape {
  int hq = 8, hkv = 2, d = 128, bs = 16;
};

// Host copy of one test's inputs. The cache holds random values at positions < lens[s] of
// each sequence and NaN everywhere else (the tail of each last block, spare blocks).
struct Inputs {
  Shape shape;
  std::vector<int> lens;  // lengths the cache was filled for
  int max_blocks_per_seq = 0;
  int num_blocks = 0;
  std::vector<float> q, k, v;  // fp32 copies of bf16 values
  std::vector<int32_t> tables;
  float scale = 0;

  arbor::PagedKvShape kv_shape() const { return {num_blocks, shape.hkv, shape.bs, shape.d}; }
};

Inputs make_inputs(const Shape& shape, const std::vector<int>& lens, uint64_t seed) {
  Inputs in;
  in.shape = shape;
  in.lens = lens;
  in.scale = 1.0f / std::sqrt(float(shape.d));
  Rng rng{seed};
  const int n = int(lens.size());
  std::vector<int> nblocks(lens.size());
  int used = 0;
  for (int s = 0; s < n; ++s) {
    nblocks[size_t(s)] = (lens[size_t(s)] + shape.bs - 1) / shape.bs;
    used += nblocks[size_t(s)];
  }
  // One spare table column and three spare blocks, all poisoned.
  in.max_blocks_per_seq = *std::max_element(nblocks.begin(), nblocks.end()) + 1;
  in.num_blocks = used + 3;
  std::vector<int32_t> perm(size_t(in.num_blocks));
  std::iota(perm.begin(), perm.end(), 0);
  std::shuffle(perm.begin(), perm.end(), std::mt19937_64(seed));
  // Unused table entries name a real but NaN-filled block: reading one shows up as NaN.
  in.tables.assign(size_t(n) * size_t(in.max_blocks_per_seq), perm[size_t(used)]);
  int next = 0;
  for (int s = 0; s < n; ++s) {
    for (int b = 0; b < nblocks[size_t(s)]; ++b) {
      in.tables[size_t(s) * size_t(in.max_blocks_per_seq) + size_t(b)] = perm[size_t(next++)];
    }
  }

  const arbor::PagedKvShape kv = in.kv_shape();
  in.k.assign(kv.layer_elements(), kNaN);
  in.v.assign(kv.layer_elements(), kNaN);
  for (int s = 0; s < n; ++s) {
    const int32_t* table = in.tables.data() + size_t(s) * size_t(in.max_blocks_per_seq);
    for (int p = 0; p < lens[size_t(s)]; ++p) {
      for (int h = 0; h < shape.hkv; ++h) {
        const size_t at = kv.offset(table[p / shape.bs], h, p % shape.bs);
        for (int i = 0; i < shape.d; ++i) {
          in.k[at + size_t(i)] = random_bf16_value(rng);
          in.v[at + size_t(i)] = random_bf16_value(rng);
        }
      }
    }
  }
  in.q.resize(size_t(n) * size_t(shape.hq) * size_t(shape.d));
  for (float& x : in.q) x = random_bf16_value(rng);
  return in;
}

std::vector<uint16_t> to_bf16_bits(const std::vector<float>& v) {
  std::vector<uint16_t> bits(v.size());
  for (size_t i = 0; i < v.size(); ++i) bits[i] = float_to_bf16_bits(v[i]);
  return bits;
}

const bf16* as_bf16(const std::vector<uint16_t>& bits) {
  return reinterpret_cast<const bf16*>(bits.data());
}

int device_sm_count() {
  int device = 0, sms = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

// What the kernel wrote, as fp32.
struct Outputs {
  std::vector<float> out, out_f32, lse;
};

// Device copy of the inputs plus outputs, plan and workspace.
class GpuCase {
 public:
  // overlap: plan and launch with overlap_previous_kernel (short splits then stream into
  // shared memory first, kernels/cuda/decode_attention.cu); without a concurrent writer
  // the results are the same.
  GpuCase(const Inputs& in, bool with_f32, int force_splits, int max_context_len = -1,
          bool overlap = false, int workspace_num_seqs = 0)
      : with_f32_(with_f32) {
    const auto qb = to_bf16_bits(in.q), kb = to_bf16_bits(in.k), vb = to_bf16_bits(in.v);
    const size_t n = in.lens.size(), rows = n * size_t(in.shape.hq);
    q_ = DeviceArray<bf16>(qb.size());
    k_ = DeviceArray<bf16>(kb.size());
    v_ = DeviceArray<bf16>(vb.size());
    tables_ = DeviceArray<int32_t>(in.tables.size());
    lens_ = DeviceArray<int32_t>(std::max<size_t>(n, 1));
    out_ = DeviceArray<bf16>(rows * size_t(in.shape.d));
    out_f32_ = DeviceArray<float>(rows * size_t(in.shape.d));
    lse_ = DeviceArray<float>(rows);
    q_.upload(as_bf16(qb), qb.size());
    k_.upload(as_bf16(kb), kb.size());
    v_.upload(as_bf16(vb), vb.size());
    tables_.upload(in.tables.data(), in.tables.size());
    set_lens(in.lens);

    p_.q = q_.data();
    p_.k_cache = k_.data();
    p_.v_cache = v_.data();
    p_.block_tables = tables_.data();
    p_.context_lens = lens_.data();
    p_.num_seqs = int(n);
    p_.num_q_heads = in.shape.hq;
    p_.num_kv_heads = in.shape.hkv;
    p_.head_dim = in.shape.d;
    p_.block_size = in.shape.bs;
    p_.max_blocks_per_seq = in.max_blocks_per_seq;
    p_.scale = in.scale;
    p_.max_context_len =
        max_context_len >= 0 ? max_context_len : *std::max_element(in.lens.begin(), in.lens.end());
    p_.out = out_.data();
    p_.out_f32 = with_f32 ? out_f32_.data() : nullptr;
    p_.lse = with_f32 ? lse_.data() : nullptr;
    p_.overlap_previous_kernel = overlap;
    p_.workspace_num_seqs = workspace_num_seqs;
    plan_ = arbor::cuda::plan_decode_attention(p_, device_sm_count(), force_splits);
    // The caller zeroes the workspace once, at allocation (the merge counters start at 0).
    workspace_ = DeviceBuffer(plan_.workspace_bytes);
    if (plan_.workspace_bytes) CUDA_CHECK(cudaMemset(workspace_.get(), 0, plan_.workspace_bytes));
  }

  const DecodeAttentionParams& params() const { return p_; }
  bf16* q_data() { return q_.data(); }
  bf16* k_data() { return k_.data(); }
  bf16* v_data() { return v_.data(); }
  const DecodeAttentionPlan& plan() const { return plan_; }
  cudaStream_t stream() const { return stream_.get(); }

  // The ring variant with this many stages (0: as planned), over the whole split: it takes
  // the place of the prologue; staged_merge: its merge through shared memory.
  // A planned cluster merge is kept only where the forced ring can run it.
  void use_ring(int stages, bool staged_merge = false, bool ldmatrix = false) {
    if (stages == 0) return;
    plan_.prologue_tiles = 0;
    plan_.ring_stages = stages;
    plan_.staged_merge = staged_merge;
    plan_.ring_ldmatrix = ldmatrix;
    if (staged_merge) plan_.cluster_merge = false;
  }

  // The merge of the splits in a thread-block cluster (plan.cluster_merge, ring plans).
  void use_cluster_merge(bool on) { plan_.cluster_merge = on; }

  // The grid order (plan.kv_heads_adjacent), both with the merge through L2: the cluster
  // merge needs the split-major grid.
  void set_kv_heads_adjacent(bool adjacent) {
    plan_.kv_heads_adjacent = adjacent;
    plan_.cluster_merge = false;
  }

  // New device-side lengths (each at most what the cache was filled for).
  void set_lens(const std::vector<int>& lens) {
    lens_.upload(lens.data(), lens.size(), stream_.get());
    stream_.sync();
  }

  // NaN in every output, so that an element the kernel does not write fails the check.
  void poison_outputs() {
    const std::vector<uint16_t> nan_bits(out_.size(), float_to_bf16_bits(kNaN));
    out_.upload(as_bf16(nan_bits), nan_bits.size(), stream_.get());
    const std::vector<float> nan_f32(out_f32_.size(), kNaN), nan_lse(lse_.size(), kNaN);
    out_f32_.upload(nan_f32.data(), nan_f32.size(), stream_.get());
    lse_.upload(nan_lse.data(), nan_lse.size(), stream_.get());
    stream_.sync();
  }

  void launch() { launch_on(workspace_.get()); }
  // With a workspace shared by other cases (made with the same workspace_num_seqs).
  void launch_on(void* workspace) {
    arbor::cuda::decode_attention(p_, plan_, workspace, stream_.get());
  }

  Outputs run() { return run_on(workspace_.get()); }
  Outputs run_on(void* workspace) {
    poison_outputs();
    arbor::test::poison_shared_memory(stream_.get());
    launch_on(workspace);
    return download();
  }

  Outputs download() {
    Outputs o;
    std::vector<uint16_t> bits(out_.size());
    out_.download(as_bf16_mut(bits), bits.size(), stream_.get());
    if (with_f32_) {
      o.out_f32.resize(out_f32_.size());
      o.lse.resize(lse_.size());
      out_f32_.download(o.out_f32.data(), o.out_f32.size(), stream_.get());
      lse_.download(o.lse.data(), o.lse.size(), stream_.get());
    }
    stream_.sync();
    o.out.resize(bits.size());
    for (size_t i = 0; i < bits.size(); ++i) o.out[i] = bf16_bits_to_float(bits[i]);
    return o;
  }

 private:
  static bf16* as_bf16_mut(std::vector<uint16_t>& bits) {
    return reinterpret_cast<bf16*>(bits.data());
  }

  bool with_f32_;
  arbor::cuda::Stream stream_;
  DeviceArray<bf16> q_, k_, v_, out_;
  DeviceArray<int32_t> tables_, lens_;
  DeviceArray<float> out_f32_, lse_;
  DeviceBuffer workspace_;
  DecodeAttentionParams p_;
  DecodeAttentionPlan plan_;
};

// cpu::paged_attention over the sequences with a non-empty context (it rejects a query
// token with no context); empty ones get the contract's o = 0, lse = -inf.
struct Reference {
  std::vector<float> out, lse;
};

Reference cpu_reference(const Inputs& in, const std::vector<int>& lens) {
  const int hq = in.shape.hq, d = in.shape.d;
  const size_t n = lens.size(), row = size_t(hq) * size_t(d);
  std::vector<int> keep;
  for (size_t s = 0; s < n; ++s) {
    if (lens[s] > 0) keep.push_back(int(s));
  }
  const size_t m = keep.size();
  std::vector<float> q(m * row);
  std::vector<int32_t> query_start(m + 1), ctx(m), tables(m * size_t(in.max_blocks_per_seq));
  for (size_t i = 0; i < m; ++i) {
    const size_t s = size_t(keep[i]);
    std::copy_n(in.q.begin() + std::ptrdiff_t(s * row), row, q.begin() + std::ptrdiff_t(i * row));
    query_start[i] = int32_t(i);
    ctx[i] = lens[s];
    std::copy_n(in.tables.begin() + std::ptrdiff_t(s * size_t(in.max_blocks_per_seq)),
                in.max_blocks_per_seq,
                tables.begin() + std::ptrdiff_t(i * size_t(in.max_blocks_per_seq)));
  }
  query_start[m] = int32_t(m);
  std::vector<float> out(m * row), lse(m * size_t(hq));
  if (m > 0) {
    arbor::AttentionBatch batch{int(m), query_start.data(), ctx.data(), tables.data(),
                                in.max_blocks_per_seq};
    arbor::cpu::paged_attention(q.data(), hq, in.kv_shape(), in.k.data(), in.v.data(), batch,
                                in.scale, out.data(), lse.data());
  }
  Reference ref;
  ref.out.assign(n * row, 0.0f);
  ref.lse.assign(n * size_t(hq), -kInf);
  for (size_t i = 0; i < m; ++i) {
    const size_t s = size_t(keep[i]);
    std::copy_n(out.begin() + std::ptrdiff_t(i * row), row,
                ref.out.begin() + std::ptrdiff_t(s * row));
    std::copy_n(lse.begin() + std::ptrdiff_t(i * size_t(hq)), hq,
                ref.lse.begin() + std::ptrdiff_t(s * size_t(hq)));
  }
  return ref;
}

std::string describe(const Inputs& in, const std::vector<int>& lens,
                     const DecodeAttentionPlan& plan) {
  std::ostringstream ss;
  ss << "hq=" << in.shape.hq << " hkv=" << in.shape.hkv << " d=" << in.shape.d
     << " block_size=" << in.shape.bs << " plan.num_splits=" << plan.num_splits
     << " plan.prologue_tiles=" << plan.prologue_tiles << " plan.ring_stages=" << plan.ring_stages
     << " plan.staged_merge=" << plan.staged_merge << " plan.ring_ldmatrix=" << plan.ring_ldmatrix
     << " plan.kv_heads_adjacent=" << plan.kv_heads_adjacent
     << " plan.cluster_merge=" << plan.cluster_merge << " lens=[";
  for (size_t i = 0; i < lens.size() && i < 16; ++i) ss << (i ? "," : "") << lens[i];
  if (lens.size() > 16) ss << ",... (" << lens.size() << " sequences)";
  ss << "]";
  return ss.str();
}

// Compares every output element with the reference; reports the first one out of tolerance.
//
// Tolerances. out is bf16: rounding the fp32 result costs up to 2^-8 of its magnitude (half
// an ulp of an 8-bit significand). Both sides accumulate in fp32 but in different orders
// (the CPU sums up to 131072 terms in sequence, the GPU in splits and lanes), which moves a
// result by about sqrt(n)·2^-24 of the weighted mean of |v| (|v| <= 2): under 1e-4
// absolute; 1e-3 of the row's largest value covers the remaining exp2-vs-exp and scaling
// differences. out_f32 gets the same bound without the bf16 term. lse: 1e-3 absolute (its
// fp32 error is ~1e-5 for these magnitudes).
void check_outputs(const Inputs& in, const std::vector<int>& lens, const Reference& ref,
                   const Outputs& got, const std::string& what) {
  INFO(what);
  const int hq = in.shape.hq, d = in.shape.d;
  REQUIRE(got.out.size() == ref.out.size());
  double err2 = 0, ref2 = 0;
  for (size_t s = 0; s < lens.size(); ++s) {
    for (int h = 0; h < hq; ++h) {
      const size_t r = s * size_t(hq) + size_t(h);
      const float* want = ref.out.data() + r * size_t(d);
      float row_max = 0;
      for (int i = 0; i < d; ++i) row_max = std::max(row_max, std::fabs(want[i]));
      for (int i = 0; i < d; ++i) {
        const size_t at = r * size_t(d) + size_t(i);
        const float w = want[i];
        const float base_tol = 1e-3f * row_max + 1e-4f;
        const float e = std::fabs(got.out[at] - w);
        err2 += double(e) * e;
        ref2 += double(w) * w;
        if (!(e <= std::fabs(w) / 256.0f + base_tol)) {
          INFO("out: seq " << s << " (len " << lens[s] << ") q head " << h << " dim " << i
                           << ": got " << got.out[at] << ", want " << w << ", error " << e
                           << " > tolerance " << std::fabs(w) / 256.0f + base_tol);
          FAIL();
        }
        if (!got.out_f32.empty()) {
          const float ef = std::fabs(got.out_f32[at] - w);
          if (!(ef <= base_tol)) {
            INFO("out_f32: seq " << s << " (len " << lens[s] << ") q head " << h << " dim " << i
                                 << ": got " << got.out_f32[at] << ", want " << w << ", error "
                                 << ef << " > tolerance " << base_tol);
            FAIL();
          }
        }
      }
      if (!got.lse.empty()) {
        const float gl = got.lse[r], wl = ref.lse[r];
        const bool ok = lens[s] == 0 ? (std::isinf(gl) && gl < 0) : std::fabs(gl - wl) <= 1e-3f;
        if (!ok) {
          INFO("lse: seq " << s << " (len " << lens[s] << ") q head " << h << ": got " << gl
                           << ", want " << wl);
          FAIL();
        }
      }
      if (lens[s] == 0) {  // the contract: exactly zero, never NaN
        for (int i = 0; i < d; ++i) {
          const size_t at = r * size_t(d) + size_t(i);
          if (got.out[at] != 0.0f || (!got.out_f32.empty() && got.out_f32[at] != 0.0f)) {
            INFO("empty seq " << s << " q head " << h << " dim " << i << " is not 0");
            FAIL();
          }
        }
      }
    }
  }
  // Whole-tensor relative error: bf16 output rounding alone gives about 1e-3.
  const double rel = ref2 > 0 ? std::sqrt(err2 / ref2) : std::sqrt(err2);
  INFO("relative L2 error of out: " << rel);
  CHECK(rel < 5e-3);
}

// The largest difference between two results, relative where |a| > 1; infinite where only
// one side is infinite (lse of an empty context is -inf in both).
double worst_difference(const std::vector<float>& a, const std::vector<float>& b) {
  REQUIRE(a.size() == b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    if (std::isinf(a[i]) || std::isinf(b[i])) {
      if (a[i] != b[i]) return std::numeric_limits<double>::infinity();
      continue;
    }
    worst = std::max(worst, std::abs(double(a[i]) - b[i]) / std::max(1.0, std::abs(double(a[i]))));
  }
  return worst;
}

// Builds inputs once, then for each split setting runs the kernel and compares with the CPU.
// rings: ring stages to run each setting with (0: as planned), each with both merges (the
// register loads' and the staged one through the ring's shared memory) and both kinds of steps
// (register loads, ldmatrix).
void run_and_check(const Shape& shape, const std::vector<int>& lens,
                   const std::vector<int>& force_splits, bool with_f32, uint64_t seed,
                   const std::vector<int>& rings = {0}) {
  const Inputs in = make_inputs(shape, lens, seed);
  const Reference ref = cpu_reference(in, lens);
  for (int ring : rings) {
    for (int variant = 0; variant < (ring > 0 ? 4 : 1); ++variant) {
      const bool staged = variant % 2 == 1, ldmatrix = variant / 2 == 1;
      for (int splits : force_splits) {
        for (bool overlap : {false, true}) {
          GpuCase gpu(in, with_f32, splits, -1, overlap);
          gpu.use_ring(ring, staged, ldmatrix);
          const std::string what =
              describe(in, lens, gpu.plan()) + " force_splits=" + std::to_string(splits) +
              " overlap=" + std::to_string(overlap) + " seed=" + std::to_string(seed);
          check_outputs(in, lens, ref, gpu.run(), what);
        }
      }
    }
  }
}

}  // namespace

TEST_CASE("decode_attention matches the CPU reference from 1 to 131072 tokens", "[gpu][decode]") {
  uint64_t seed = 1;
  for (int len : {1, 2, 15, 16, 17, 1000, 4096, 32768, 131072}) {
    // Long contexts with one sequence and a small head count keep the CPU side quick.
    const Shape shape = len > 32768 ? Shape{4, 1, 128, 16} : Shape{8, 2, 128, 16};
    run_and_check(shape, {len}, {0, 1}, true, seed++);
  }
}

TEST_CASE("decode_attention covers head dims, GQA ratios and block sizes on a mixed batch",
          "[gpu][decode]") {
  const std::vector<int> lens = {0, 1, 17, 100, 513, 1000, 2049};
  uint64_t seed = 100;
  for (int d : {64, 128}) {
    for (int group : {1, 2, 4, 8}) {
      for (int bs : {8, 16, 32, 64, 128}) {
        // out_f32 and lse on every other case, so the kernel also runs without them.
        run_and_check(Shape{2 * group, 2, d, bs}, lens, {0, 1}, /*with_f32=*/seed % 2 == 0, seed);
        ++seed;
      }
    }
  }
}

TEST_CASE("decode_attention handles batches of 1 to 64 with mixed lengths and empty contexts",
          "[gpu][decode]") {
  Rng rng{7};
  uint64_t seed = 200;
  for (int batch : {1, 2, 5, 8, 33, 64}) {
    std::vector<int> lens(static_cast<size_t>(batch));
    // Shorter contexts for the large batches keep the host side of the test quick.
    const int longest = batch <= 8 ? 3000 : 500;
    for (int& len : lens) len = rng.below(4) == 0 ? rng.below(40) : rng.below(longest);
    if (batch > 1) lens[1] = 0;
    run_and_check(Shape{32, 8, 128, 16}, lens, {0, 1, 3, 64}, true, seed++);
  }
}

// From 40 used splits on, the partials are merged in two levels: by the last split to
// finish of each group of 8, then over the groups; below, in one. Split counts on both sides
// of that and around multiples of the group (a last group of one split, whole groups), with
// lengths that use only some of the splits.
TEST_CASE("decode_attention merges partials per group of splits, then across groups",
          "[gpu][decode]") {
  uint64_t seed = 800;
  for (const Shape& shape : {Shape{32, 8, 128, 16}, Shape{8, 2, 64, 8}}) {
    run_and_check(shape, {5000, 3000, 700, 129, 1, 0}, {8, 9, 16, 17, 63, 64, 65, 130}, true,
                  seed++);
  }
}

// The ring variant (plan.ring_stages: the plan takes 3 stages for short contexts at batch
// 1-2 and for mid-sized batches, ARBOR_DECODE_RING 2 or 3 anywhere without a prologue): the
// tensor-core steps fed by per-warp rings of 2 or 3 16-token steps filled by cp.async, read
// by register loads or (plan.ring_ldmatrix) by ldmatrix from a swizzled layout. Lengths
// around a step, a ring's worth of steps per warp (4 warps) and a wave of refills, in a mixed batch
// with an empty context; forced splits; pages of 16 to 128 tokens; GQA 4 and 8; up to 131072
// tokens.
TEST_CASE("decode_attention's ring variant matches the CPU reference", "[gpu][decode]") {
  const std::vector<int> lens = {0,   1,   15,  16,  17,  63,  64,   65,
                                 127, 128, 129, 191, 192, 193, 1000, 4097};
  uint64_t seed = 900;
  for (const Shape& shape : {Shape{32, 8, 128, 16}, Shape{16, 2, 128, 16}, Shape{8, 2, 128, 64},
                             Shape{16, 2, 128, 128}}) {
    run_and_check(shape, lens, {0, 1, 3, 64}, /*with_f32=*/true, seed++, {2, 3});
  }
  for (int len : {32768, 131072}) {
    run_and_check(Shape{4, 1, 128, 16}, {len}, {0, 1}, /*with_f32=*/true, seed++, {2, 3});
  }
  // The staged merge requests as many partials at a time as the ring's shared memory holds
  // (GQA 8: 15 with 2 stages, 23 with 3; GQA 4: 31 and 47): one-level merges of 32 and 39
  // partials (1248 tokens in 39 splits of 32) take two or three batches.
  for (const Shape& shape : {Shape{16, 2, 128, 16}, Shape{8, 2, 128, 16}}) {
    run_and_check(shape, {1248, 1000, 0}, {32, 39}, /*with_f32=*/true, seed++, {2, 3});
  }
}

// The cluster merge (plan.cluster_merge: ring plans of 2-8 splits at GQA 4, planned at batch
// 1): the splits of a (sequence, kv head) push their partials into the last used split's
// shared memory. Batches with empty and one-split sequences and idle splits (lengths shorter
// than the plan's splits), 2 to 8 splits, both ring depths and both kinds of steps, with and
// without the overlap, against the CPU reference and against the merge through L2, which uses
// the same formulas in the same order: they agree to fp32 rounding (the compiler may contract
// the two differently into FMAs).
TEST_CASE("decode_attention's cluster merge matches the CPU reference and the merge through L2",
          "[gpu][decode]") {
  uint64_t seed = 1200;
  struct Case {
    Shape shape;
    std::vector<int> lens;
  };
  for (const Case& c : {Case{Shape{32, 8, 128, 16}, {1024}}, Case{Shape{32, 8, 128, 16}, {2048}},
                        Case{Shape{32, 8, 128, 16}, {0, 1, 17, 129, 640, 1000, 2047}},
                        Case{Shape{16, 4, 128, 64}, {333, 64, 1, 0, 1500}},
                        Case{Shape{8, 2, 128, 16}, {4097, 15, 768}}}) {
    const Inputs in = make_inputs(c.shape, c.lens, seed++);
    const Reference ref = cpu_reference(in, c.lens);
    for (int splits : {0, 2, 3, 5, 8}) {
      for (int ring : {2, 3}) {
        for (bool ldmatrix : {false, true}) {
          for (bool overlap : {false, true}) {
            // One device copy of the inputs, run with each merge (run() poisons the outputs).
            GpuCase gpu(in, true, splits, -1, overlap);
            gpu.use_ring(ring, false, ldmatrix);
            gpu.use_cluster_merge(true);
            const std::string what = describe(in, c.lens, gpu.plan()) +
                                     " force_splits=" + std::to_string(splits) +
                                     " overlap=" + std::to_string(overlap);
            if (gpu.plan().num_splits < 2 || gpu.plan().num_splits > 8) {
              INFO(what);
              CHECK_THROWS_AS(gpu.run(), std::invalid_argument);
              continue;
            }
            const Outputs b = gpu.run();
            gpu.use_cluster_merge(false);
            const Outputs a = gpu.run();
            check_outputs(in, c.lens, ref, b, what);
            INFO(what);
            CHECK(worst_difference(a.out_f32, b.out_f32) < 1e-5);
            CHECK(worst_difference(a.lse, b.lse) < 1e-5);
          }
        }
      }
    }
  }
}

TEST_CASE("decode_attention of empty contexts writes o = 0 and lse = -inf", "[gpu][decode]") {
  for (int d : {64, 128}) run_and_check(Shape{8, 2, d, 16}, {0, 0, 0}, {0, 1, 4}, true, 300);
}

TEST_CASE(
    "one decode_attention plan and workspace serve repeated launches, shorter lengths "
    "and graph replays",
    "[gpu][decode]") {
  const Shape shape{32, 8, 128, 16};
  const Inputs in = make_inputs(shape, {8192, 5000, 4097, 33}, 400);
  GpuCase gpu(in, true, /*force_splits=*/0, /*max_context_len=*/8192);
  REQUIRE(gpu.plan().num_splits > 1);  // otherwise the merge counters are not exercised

  // Back to back with the same workspace: the second launch needs counters reset to 0.
  const Reference full = cpu_reference(in, in.lens);
  for (int run = 0; run < 3; ++run) {
    check_outputs(in, in.lens, full, gpu.run(), "repeat " + std::to_string(run));
  }

  // Shorter device-side lengths with the same plan (each at most the filled length).
  const std::vector<std::vector<int>> lens_sets = {
      {300, 4999, 17, 0}, {8192, 1, 4097, 33}, {129, 128, 127, 1}, {0, 0, 4000, 32}};
  for (const auto& lens : lens_sets) {
    gpu.set_lens(lens);
    check_outputs(in, lens, cpu_reference(in, lens), gpu.run(), "shorter lengths, same plan");
  }

  // A captured graph replayed after the lengths change in place.
  arbor::cuda::Graph graph;
  graph.capture(gpu.stream(), [&] { gpu.launch(); });
  for (const auto& lens : lens_sets) {
    gpu.set_lens(lens);
    gpu.poison_outputs();
    graph.launch(gpu.stream());
    graph.launch(gpu.stream());  // twice in a row: counters must be back at zero
    check_outputs(in, lens, cpu_reference(in, lens), gpu.download(), "graph replay");
  }
}

TEST_CASE(
    "plans of different batch sizes and split counts share one workspace "
    "(workspace_num_seqs), as a model's graphs and eager steps do",
    "[gpu][decode]") {
  // Batches of 1, 2 and 4 sequences planned for the same longest context split into
  // different counts, so their partials are laid out differently. Before workspace_num_seqs,
  // the batch-4 and batch-2 launches wrote partials over the bytes that held the batch-1
  // plan's merge counters, and the next batch-1 launch found them nonzero: no block saw
  // itself last, the outputs stayed unwritten (NaN here) and the counters never returned to
  // zero.
  const Shape shape{32, 8, 128, 16};
  const std::vector<int> lens = {4096, 3000, 2048, 1500};
  const Inputs all = make_inputs(shape, lens, 600);
  const size_t row = size_t(shape.hq) * size_t(shape.d);
  const auto first = [&](size_t n) {  // the first n sequences, same cache and tables
    Inputs in = all;
    in.lens.assign(lens.begin(), lens.begin() + std::ptrdiff_t(n));
    in.q.assign(all.q.begin(), all.q.begin() + std::ptrdiff_t(n * row));
    in.tables.assign(all.tables.begin(),
                     all.tables.begin() + std::ptrdiff_t(n * size_t(all.max_blocks_per_seq)));
    return in;
  };
  const Inputs in1 = first(1), in2 = first(2), in4 = first(4);
  GpuCase b1(in1, true, 0, /*max_context_len=*/4096, false, /*workspace_num_seqs=*/4);
  GpuCase b2(in2, true, 0, 4096, false, 4);
  GpuCase b4(in4, true, 0, 4096, false, 4);
  const int s1 = b1.plan().num_splits, s2 = b2.plan().num_splits, s4 = b4.plan().num_splits;
  INFO("splits at batch 1, 2, 4: " << s1 << ", " << s2 << ", " << s4);
  REQUIRE(s1 > 1);
  REQUIRE(s2 > 1);
  REQUIRE(s4 > 1);
  REQUIRE(s1 != s4);
  DeviceBuffer shared(
      std::max({b1.plan().workspace_bytes, b2.plan().workspace_bytes, b4.plan().workspace_bytes}));
  CUDA_CHECK(cudaMemset(shared.get(), 0, shared.bytes()));
  const Reference r1 = cpu_reference(in1, in1.lens), r2 = cpu_reference(in2, in2.lens),
                  r4 = cpu_reference(in4, in4.lens);
  for (int round = 0; round < 2; ++round) {
    const std::string at = " (round " + std::to_string(round) + ")";
    check_outputs(in1, in1.lens, r1, b1.run_on(shared.get()), "batch 1" + at);
    check_outputs(in4, in4.lens, r4, b4.run_on(shared.get()), "batch 4 after batch 1" + at);
    check_outputs(in2, in2.lens, r2, b2.run_on(shared.get()), "batch 2 after batch 4" + at);
    check_outputs(in1, in1.lens, r1, b1.run_on(shared.get()), "batch 1 after batch 2" + at);
  }
}

// The staged merge reads the same partials in the same order with the same formulas as the
// register merge; only the compiler's contraction of products and sums into FMAs differs
// between the two paths. So a ring plan gives the same result with either up to fp32
// rounding, much tighter than the CPU reference's bf16 tolerance: each merge step rounds to
// about 2^-24 relative, so even 64 partials (two levels) stay under 1e-5 (one and two levels,
// GQA 4 and 8). They are not bit-identical: the first form of this test compared bits, and
// outputs and lse differed in their last bits (H100, bench/RESULTS.md).
TEST_CASE("decode_attention's staged merge matches the register merge to fp32 rounding",
          "[gpu][decode]") {
  uint64_t seed = 950;
  for (const Shape& shape : {Shape{32, 8, 128, 16}, Shape{16, 2, 128, 16}}) {
    const std::vector<int> lens = {4097, 1000, 0, 129};
    const Inputs in = make_inputs(shape, lens, seed++);
    for (int splits : {4, 33, 64}) {
      for (int ring : {2, 3}) {
        GpuCase registers(in, true, splits), staged(in, true, splits);
        registers.use_ring(ring, false);
        staged.use_ring(ring, true);
        const Outputs a = registers.run(), b = staged.run();
        INFO("hq " << shape.hq << " splits " << splits << " ring " << ring);
        CHECK(worst_difference(a.out_f32, b.out_f32) < 1e-5);
        CHECK(worst_difference(a.lse, b.lse) < 1e-5);
      }
    }
  }
}

TEST_CASE("decode_attention with fixed splits is deterministic and batch-invariant",
          "[gpu][decode]") {
  const Shape shape{32, 8, 128, 16};
  const std::vector<int> lens = {3000, 17, 2500, 1200, 0, 4096};
  const Inputs in = make_inputs(shape, lens, 500);
  GpuCase batch(in, true, /*force_splits=*/5);
  const Outputs a = batch.run(), b = batch.run();
  CHECK(std::memcmp(a.out.data(), b.out.data(), a.out.size() * sizeof(float)) == 0);
  CHECK(std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)) == 0);

  // Sequence 3 alone (same cache, same table row) gives bit-identical results.
  Inputs one = in;
  const int s = 3;
  const size_t row = size_t(shape.hq) * size_t(shape.d);
  one.lens = {lens[s]};
  one.q.assign(in.q.begin() + std::ptrdiff_t(s * row),
               in.q.begin() + std::ptrdiff_t((s + 1) * row));
  one.tables.assign(in.tables.begin() + std::ptrdiff_t(s * size_t(in.max_blocks_per_seq)),
                    in.tables.begin() + std::ptrdiff_t((s + 1) * size_t(in.max_blocks_per_seq)));
  GpuCase alone(one, true, /*force_splits=*/5, /*max_context_len=*/4096);
  const Outputs c = alone.run();
  CHECK(std::memcmp(c.out.data(), a.out.data() + s * row, row * sizeof(float)) == 0);
  CHECK(std::memcmp(c.out_f32.data(), a.out_f32.data() + s * row, row * sizeof(float)) == 0);
}

TEST_CASE("decode_attention's grid order changes no bit of the result", "[gpu][decode]") {
  // The two orders run the same blocks over the same splits; only where they are launched
  // differs, so every output, fp32 output and lse is bit-identical: single, one-level and
  // two-level merges, over global memory, through rings (register and staged merges, register
  // and ldmatrix steps) and with the prologue (the plan for batch 1 x 300). run_both_orders:
  // the outputs of the split-major and of the kv-head-major launch of the same plan, in that
  // order.
  auto run_both_orders = [](const Inputs& in, int splits, int ring, bool ldmatrix = false) {
    GpuCase split_major(in, true, splits), kv_major(in, true, splits);
    split_major.use_ring(ring, splits >= 33, ldmatrix);
    kv_major.use_ring(ring, splits >= 33, ldmatrix);
    split_major.set_kv_heads_adjacent(false);
    kv_major.set_kv_heads_adjacent(true);
    return std::pair<Outputs, Outputs>(split_major.run(), kv_major.run());
  };
  uint64_t seed = 1200;
  for (const Shape& shape : {Shape{32, 8, 128, 16}, Shape{64, 8, 128, 16}, Shape{8, 8, 64, 16}}) {
    const std::vector<int> lens = {5000, 1, 0, 300, 2049};
    const Inputs in = make_inputs(shape, lens, seed++);
    for (int splits : {0, 1, 5, 33, 66}) {
      for (int variant : {0, 3, 4}) {  // no ring; 3 stages with register or ldmatrix steps
        const int ring = variant > 0 ? 3 : 0;
        if (ring > 0 && (shape.d != 128 || splits == 0)) continue;
        const auto [a, b] = run_both_orders(in, splits, ring, variant == 4);
        INFO("hq " << shape.hq << " d " << shape.d << " splits " << splits << " ring " << ring
                   << " ldmatrix " << (variant == 4));
        CHECK(std::memcmp(a.out.data(), b.out.data(), a.out.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(a.out_f32.data(), b.out_f32.data(), a.out_f32.size() * sizeof(float)) ==
              0);
        CHECK(std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * sizeof(float)) == 0);
      }
    }
  }
  const auto [a, b] = run_both_orders(make_inputs(Shape{32, 8, 128, 16}, {300}, seed), 0, 0);
  CHECK(std::memcmp(a.out_f32.data(), b.out_f32.data(), a.out_f32.size() * sizeof(float)) == 0);
}

// The model's step launches decode attention right after the RoPE + KV write with
// overlap_previous_kernel set: K/V pages are fetched while that kernel still runs, and the
// last row of each sequence, which it writes, must be read again after it completes. Here a
// stand-in writer sleeps 50 us after releasing the attention, then writes new last rows and
// a new q; the attention must see only the new values (and the stale inputs differ).
TEST_CASE("decode_attention with overlap_previous_kernel sees the previous kernel's last rows",
          "[gpu][decode]") {
  uint64_t seed = 700;
  int with_prologue = 0, without_prologue = 0, with_ring = 0;
  // Last rows at every position in a block and a tile, one split or several, one empty:
  // short contexts (whole splits streamed into shared memory before the writer is done)
  // and long ones (register loads, after it).
  const std::vector<std::vector<int>> len_sets = {{1, 16, 17, 33, 64, 100, 0, 129},
                                                  {1000, 4097, 17, 0}};
  for (const Shape& shape : {Shape{32, 8, 128, 16}, Shape{8, 2, 64, 8}, Shape{16, 2, 128, 128}}) {
    for (const std::vector<int>& lens : len_sets) {
      const Inputs fresh = make_inputs(shape, lens, seed);
      const Reference ref = cpu_reference(fresh, lens);
      Inputs stale = fresh;
      Rng rng{seed + 1};
      for (float& x : stale.q) x = random_bf16_value(rng);
      const arbor::PagedKvShape kv = fresh.kv_shape();
      std::vector<int64_t> offsets;
      std::vector<float> k_rows, v_rows;
      for (size_t s = 0; s < lens.size(); ++s) {
        if (lens[s] == 0) continue;
        const int p = lens[s] - 1;
        const int block = fresh.tables[s * size_t(fresh.max_blocks_per_seq) + size_t(p / shape.bs)];
        for (int h = 0; h < shape.hkv; ++h) {
          const size_t at = kv.offset(block, h, p % shape.bs);
          offsets.push_back(int64_t(at));
          for (int i = 0; i < shape.d; ++i) {
            k_rows.push_back(fresh.k[at + size_t(i)]);
            v_rows.push_back(fresh.v[at + size_t(i)]);
            stale.k[at + size_t(i)] = random_bf16_value(rng);
            stale.v[at + size_t(i)] = random_bf16_value(rng);
          }
        }
      }
      const auto kb = to_bf16_bits(k_rows), vb = to_bf16_bits(v_rows), qb = to_bf16_bits(fresh.q);
      DeviceArray<int64_t> d_offsets(offsets.size());
      DeviceArray<bf16> d_k(kb.size()), d_v(vb.size()), d_q(qb.size());
      d_offsets.upload(offsets.data(), offsets.size());
      d_k.upload(as_bf16(kb), kb.size());
      d_v.upload(as_bf16(vb), vb.size());
      d_q.upload(as_bf16(qb), qb.size());

      // The ring variant (head dim 128 only) too: it requests the steps holding the last
      // rows after the wait, the others before.
      for (int ring : shape.d == 128 ? std::vector<int>{0, 2, 3} : std::vector<int>{0}) {
        for (int splits : {0, 1, 7}) {
          GpuCase gpu(stale, /*with_f32=*/true, splits, /*max_context_len=*/-1, /*overlap=*/true);
          gpu.use_ring(ring);
          (gpu.plan().ring_stages > 0      ? with_ring
           : gpu.plan().prologue_tiles > 0 ? with_prologue
                                           : without_prologue)++;
          arbor::test::LateRowWrite w;
          w.k_cache = gpu.k_data();
          w.v_cache = gpu.v_data();
          w.row_offsets = d_offsets.data();
          w.k_rows = d_k.data();
          w.v_rows = d_v.data();
          w.num_rows = int(offsets.size());
          w.head_dim = shape.d;
          w.q = gpu.q_data();
          w.q_new = d_q.data();
          w.q_elements = qb.size();
          w.delay_us = 50;
          gpu.poison_outputs();
          arbor::test::launch_late_row_write(w, gpu.stream());
          gpu.launch();
          check_outputs(fresh, lens, ref, gpu.download(),
                        describe(fresh, lens, gpu.plan()) + " force_splits=" +
                            std::to_string(splits) + ", attention overlapping the writer");
        }
      }
      ++seed;
    }
  }
  CHECK(with_prologue > 0);
  CHECK(without_prologue > 0);
  CHECK(with_ring > 0);
}

// The argument checks (shapes, plans, pointers, workspace) run before any launch and are
// tested without a device in tests/cuda_host; here, what needs one.
TEST_CASE("decode_attention with one split launches without a workspace", "[gpu][decode]") {
  const std::vector<int> lens = {100, 50};
  const Inputs in = make_inputs(Shape{8, 2, 128, 16}, lens, 600);
  GpuCase gpu(in, true, /*force_splits=*/1);
  REQUIRE(gpu.plan().workspace_bytes == 0);
  gpu.poison_outputs();
  CHECK_NOTHROW(arbor::cuda::decode_attention(gpu.params(), gpu.plan(), nullptr, gpu.stream()));
  check_outputs(in, lens, cpu_reference(in, lens), gpu.download(),
                describe(in, lens, gpu.plan()) + ", no workspace");
}
