// Host side of the CUDA decode attention (kernels/cuda/decode_attention.h): the plan and the
// argument checks, which run before anything touches a device. They run here in every CUDA
// build, CI's GPU-less machine included; the kernel itself is tested in tests/gpu.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "kernels/cuda/decode_attention.h"

namespace {

using arbor::cuda::DecodeAttentionParams;
using arbor::cuda::DecodeAttentionPlan;
using arbor::cuda::plan_decode_attention;

DecodeAttentionParams params(int seqs, int hq, int hkv, int d, int bs, int len, bool overlap) {
  DecodeAttentionParams p;
  p.num_seqs = seqs;
  p.num_q_heads = hq;
  p.num_kv_heads = hkv;
  p.head_dim = d;
  p.block_size = bs;
  p.max_blocks_per_seq = (len + bs - 1) / bs + 1;
  p.max_context_len = len;
  p.scale = 0.125f;
  p.overlap_previous_kernel = overlap;
  return p;
}

// Stand-ins for device pointers: decode_attention only checks them (non-null, aligned) before
// it launches, and every call below is rejected before that.
template <typename T>
T* fake_device_pointer(uintptr_t at) {
  return reinterpret_cast<T*>(at);
}

DecodeAttentionParams launchable(const DecodeAttentionParams& shape) {
  DecodeAttentionParams p = shape;
  p.q = fake_device_pointer<arbor::cuda::bf16>(0x10000);
  p.k_cache = fake_device_pointer<arbor::cuda::bf16>(0x20000);
  p.v_cache = fake_device_pointer<arbor::cuda::bf16>(0x30000);
  p.block_tables = fake_device_pointer<int32_t>(0x40000);
  p.context_lens = fake_device_pointer<int32_t>(0x50000);
  p.out = fake_device_pointer<arbor::cuda::bf16>(0x60000);
  return p;
}

}  // namespace

TEST_CASE("decode_attention plans use one wave of blocks and give every split tokens",
          "[cuda-host][decode]") {
  for (int sms : {1, 16, 132}) {
    for (int d : {64, 128}) {
      for (int group : {1, 2, 4, 8}) {
        for (int bs : {8, 16, 128}) {
          for (int seqs : {1, 2, 8, 32, 64}) {
            for (int len : {1, 15, 16, 100, 1000, 4096, 32768, 131072}) {
              for (bool overlap : {false, true}) {
                const int hkv = 8;
                const DecodeAttentionParams p = params(seqs, hkv * group, hkv, d, bs, len, overlap);
                const DecodeAttentionPlan plan = plan_decode_attention(p, sms);
                const int64_t pairs = int64_t(seqs) * hkv;
                INFO("sms " << sms << " d " << d << " group " << group << " block " << bs
                            << " seqs " << seqs << " len " << len << " overlap " << overlap << ": "
                            << plan.num_splits << " splits, prologue " << plan.prologue_tiles);
                REQUIRE(plan.num_splits >= 1);
                // Each split covers at least 16 tokens of the longest context...
                CHECK(plan.num_splits <= (len + 15) / 16);
                // ...and the splits of all sequences fit one wave of resident blocks (at most
                // 4 per SM), unless one split per sequence and head already does not.
                CHECK((plan.num_splits == 1 || pairs * plan.num_splits <= 4 * int64_t(sms)));
                // Long contexts fill the GPU when there are fewer (sequence, head) pairs
                // than SMs.
                if (len >= 32768 && pairs <= sms) CHECK(pairs * plan.num_splits >= sms);
                // Partials and counters only with several splits, sized for all of them.
                if (plan.num_splits == 1) {
                  CHECK(plan.workspace_bytes == 0);
                } else {
                  const size_t partial_floats =
                      size_t(seqs) * size_t(hkv * group) * size_t(plan.num_splits) * (d + 2);
                  CHECK(plan.workspace_bytes >= partial_floats * sizeof(float));
                }
                // Splits stream through shared memory before the wait only with the overlap.
                if (!overlap) CHECK(plan.prologue_tiles == 0);
              }
            }
          }
        }
      }
    }
  }
}

// The plan's rules do not apply while ARBOR_DECODE_RING overrides them; the test says so.
bool ring_setting_overrides_rules() {
  if (!std::getenv("ARBOR_DECODE_RING")) return false;
  WARN("skipped: ARBOR_DECODE_RING overrides the rule");
  return true;
}

// Short contexts at batch 1-2 on the tensor-core shapes (with the overlap): at most 8 splits
// that each fit the prologue up to 1024 tokens (through 3-stage rings from 513 tokens at batch
// 1, from 256 at batch 2), then splits of at least 256 tokens (8 to 16) through rings up to
// 7168, at batch 1 and GQA 4 24 splits from 5632 to 9216; past that, and for other batches and
// shapes, the mid-sized rule or one block per SM.
TEST_CASE("decode_attention plans short contexts at batch 1-2 for latency", "[cuda-host][decode]") {
  if (ring_setting_overrides_rules()) return;
  struct Case {
    int seqs, len, splits, ring;
    bool prologue;
  };
  for (const Case& c :
       {Case{1, 100, 4, 0, true}, Case{1, 512, 8, 0, true}, Case{1, 513, 8, 3, false},
        Case{1, 1024, 8, 3, false}, Case{2, 255, 8, 0, true}, Case{2, 256, 8, 3, false},
        Case{2, 1024, 8, 3, false}, Case{1, 1025, 8, 3, false}, Case{1, 2048, 8, 3, false},
        Case{1, 3000, 12, 3, false}, Case{2, 4096, 16, 3, false}, Case{1, 5120, 16, 3, false},
        Case{1, 5631, 16, 3, false}, Case{1, 5632, 24, 3, false}, Case{1, 9216, 24, 3, false},
        Case{2, 6144, 16, 3, false}, Case{2, 7168, 16, 3, false}}) {
    const DecodeAttentionPlan plan =
        plan_decode_attention(params(c.seqs, 32, 8, 128, 16, c.len, true), 132);
    INFO("seqs " << c.seqs << " len " << c.len);
    CHECK(plan.num_splits == c.splits);
    CHECK(plan.ring_stages == c.ring);
    CHECK((plan.prologue_tiles > 0) == c.prologue);
  }
  // Outside the rule the plan is the one made without the overlap (which the rule needs):
  // 17 splits at 1024 tokens for batch 1 on 132 SMs, no ring; so for other shapes, for
  // batch 3-4 below the mid-sized rule's 8192 tokens where the splits do not fit the prologue
  // (batch 3 x 2048's do: see the next test case).
  CHECK(plan_decode_attention(params(1, 32, 8, 128, 16, 1024, false), 132).num_splits == 17);
  struct Outside {
    int seqs, hq, d, len;
  };
  for (const Outside& c : {Outside{1, 16, 128, 1024}, Outside{1, 32, 64, 1024},
                           Outside{4, 32, 128, 2047}, Outside{3, 32, 128, 2730}}) {
    INFO("seqs " << c.seqs << " hq " << c.hq << " d " << c.d << " len " << c.len);
    const DecodeAttentionPlan with =
        plan_decode_attention(params(c.seqs, c.hq, 8, c.d, 16, c.len, true), 132);
    const DecodeAttentionPlan without =
        plan_decode_attention(params(c.seqs, c.hq, 8, c.d, 16, c.len, false), 132);
    CHECK(with.num_splits == without.num_splits);
    CHECK(with.ring_stages == 0);
  }
}

// Splits that fit the prologue, at any batch, take 3-stage rings instead when one wave of ring
// blocks (2 per SM) holds them, except the shortest contexts (up to 512 tokens at batch 1,
// below 256 at larger batches); grids too large for that wave take as many splits as it holds
// below 8192 tokens over the batch, and keep their path from there.
TEST_CASE("decode_attention plans rings where the prologue fits and one ring wave holds the grid",
          "[cuda-host][decode]") {
  if (ring_setting_overrides_rules()) return;
  struct Case {
    int hq, seqs, len, ring;
    bool prologue;
  };
  for (const Case& c :
       {Case{32, 4, 255, 0, true}, Case{32, 4, 256, 3, false}, Case{32, 4, 1024, 3, false},
        Case{32, 8, 256, 3, false}, Case{32, 8, 512, 3, false}, Case{32, 16, 256, 3, false},
        Case{32, 3, 700, 3, false}, Case{32, 8, 1024, 0, false}, Case{64, 1, 512, 0, true},
        Case{64, 1, 768, 3, false}, Case{64, 8, 512, 3, false}, Case{64, 4, 128, 0, true}}) {
    const DecodeAttentionPlan plan =
        plan_decode_attention(params(c.seqs, c.hq, 8, 128, 16, c.len, true), 132);
    INFO("hq " << c.hq << " seqs " << c.seqs << " len " << c.len << ": " << plan.num_splits
               << " splits");
    CHECK(plan.ring_stages == c.ring);
    CHECK((plan.prologue_tiles > 0) == c.prologue);
    // Every block of a ring plan is resident at once: 2 ring blocks per SM.
    if (plan.ring_stages > 0) CHECK(int64_t(c.seqs) * 8 * plan.num_splits <= 2 * 132);
    // The splits are the ones the prologue would have taken (those made without the ring)
    // where that wave holds them.
    const DecodeAttentionPlan no_overlap =
        plan_decode_attention(params(c.seqs, c.hq, 8, 128, 16, c.len, false), 132);
    if (c.seqs > 2 && c.seqs * 8 * no_overlap.num_splits <= 2 * 132) {
      CHECK(plan.num_splits == no_overlap.num_splits);
    }
  }
  // Too many prologue splits for one ring wave: as many as it holds, below 8192 tokens over
  // the batch.
  struct Fewer {
    int seqs, len, splits, ring;
  };
  for (const Fewer& c :
       {Fewer{8, 768, 4, 3}, Fewer{16, 384, 2, 3}, Fewer{8, 640, 4, 3}, Fewer{6, 1024, 5, 3},
        Fewer{3, 2048, 11, 3}, Fewer{8, 1024, 8, 0}, Fewer{16, 512, 4, 0}}) {
    const DecodeAttentionPlan plan =
        plan_decode_attention(params(c.seqs, 32, 8, 128, 16, c.len, true), 132);
    INFO("seqs " << c.seqs << " len " << c.len);
    CHECK(plan.num_splits == c.splits);
    CHECK(plan.ring_stages == c.ring);
  }
  // Without the overlap, or off the tensor-core shapes, there is no prologue and no ring.
  CHECK(plan_decode_attention(params(4, 32, 8, 128, 16, 512, false), 132).ring_stages == 0);
  CHECK(plan_decode_attention(params(4, 32, 8, 64, 16, 512, true), 132).ring_stages == 0);
}

// Mid-sized batches (8192 to 65536 tokens over the batch, 131072 at GQA 8; at GQA 4 below
// 16384 only with contexts over 1024) on the tensor-core shapes, with the overlap: 3-stage
// rings, split for their 2 blocks per SM; larger batches, smaller ones whose splits do not fit
// the prologue (see the test case above), other shapes and launches without the overlap keep
// the register loads.
TEST_CASE("decode_attention plans mid-sized batches through rings", "[cuda-host][decode]") {
  if (ring_setting_overrides_rules()) return;
  struct Case {
    int seqs, len, splits, ring;
  };
  // Each case planned at `hq` query heads over 8 kv heads (head dim 128, pages of 16).
  const auto expect = [](int hq, std::initializer_list<Case> cases, bool check_no_prologue) {
    for (const Case& c : cases) {
      const DecodeAttentionPlan plan =
          plan_decode_attention(params(c.seqs, hq, 8, 128, 16, c.len, true), 132);
      INFO("hq " << hq << " seqs " << c.seqs << " len " << c.len);
      CHECK(plan.num_splits == c.splits);
      CHECK(plan.ring_stages == c.ring);
      if (check_no_prologue) CHECK(plan.prologue_tiles == 0);
    }
  };
  expect(32,
         {Case{1, 16384, 33, 3}, Case{1, 65536, 33, 3}, Case{2, 8192, 16, 3}, Case{8, 4096, 4, 3},
          Case{32, 1024, 1, 3}, Case{32, 2048, 1, 3}, Case{1, 9217, 33, 3}, Case{4, 2048, 8, 3},
          Case{8, 1025, 4, 3}, Case{8, 1024, 8, 0}, Case{16, 512, 4, 0}, Case{3, 2730, 22, 0},
          Case{1, 65537, 66, 0}, Case{8, 16384, 8, 0}, Case{32, 4096, 2, 0}},
         true);
  // GQA 8 (64 query heads): up to 131072 tokens; its steps over global memory are planned
  // for 4 blocks per SM, as GQA 4's; batch 1 keeps 16 short-context splits up to 7168 tokens
  // and 33 mid-sized ones from 8192 (no 24).
  expect(64,
         {Case{1, 16384, 33, 3}, Case{32, 4096, 1, 3}, Case{8, 1024, 4, 3}, Case{16, 512, 2, 3},
          Case{1, 6144, 16, 3}, Case{1, 8192, 33, 3}, Case{4, 2047, 16, 0}, Case{1, 131073, 66, 0},
          Case{8, 32768, 8, 0}},
         false);
  struct Outside {
    int hq, d, bs;
    bool overlap;
  };
  for (const Outside& c : {Outside{32, 128, 16, false}, Outside{16, 128, 16, true},
                           Outside{32, 64, 16, true}, Outside{32, 128, 8, true}}) {
    INFO("hq " << c.hq << " d " << c.d << " block size " << c.bs << " overlap " << c.overlap);
    CHECK(plan_decode_attention(params(8, c.hq, 8, c.d, c.bs, 4096, c.overlap), 132).ring_stages ==
          0);
  }
}

// Ring plans merge through shared memory (plan.staged_merge) with more than 16 splits, and at
// batch 2 and more with at least 4 splits of at least 256 tokens; other plans with register
// loads.
TEST_CASE("decode_attention plans the staged merge for many or long ring splits",
          "[cuda-host][decode]") {
  struct Case {
    int hq, seqs, len;
    bool staged;
  };
  for (const Case& c :
       {Case{32, 1, 1024, false}, Case{32, 1, 4096, false}, Case{32, 1, 6144, true},
        Case{32, 1, 32768, true}, Case{32, 2, 1024, false}, Case{32, 2, 4096, true},
        Case{32, 8, 4096, true}, Case{32, 8, 1025, true}, Case{32, 16, 4096, false},
        Case{32, 32, 1024, false}, Case{64, 1, 4096, false}, Case{64, 1, 16384, true},
        Case{64, 2, 4096, true}, Case{32, 8, 16384, false}, Case{32, 1, 131072, false}}) {
    const DecodeAttentionPlan plan =
        plan_decode_attention(params(c.seqs, c.hq, 8, 128, 16, c.len, true), 132);
    INFO("hq " << c.hq << " seqs " << c.seqs << " len " << c.len << ": " << plan.num_splits
               << " splits, ring " << plan.ring_stages);
    CHECK(plan.staged_merge == c.staged);
    if (plan.staged_merge) CHECK(plan.ring_stages > 0);
  }
  // Forced splits follow the same rule; without a ring there is no staged merge.
  const DecodeAttentionParams p = params(1, 32, 8, 128, 16, 32768, true);
  CHECK(plan_decode_attention(p, 132, 17).staged_merge ==
        (plan_decode_attention(p, 132, 17).ring_stages > 0));
  CHECK_FALSE(plan_decode_attention(params(1, 32, 8, 128, 16, 32768, false), 132).staged_merge);
}

// Ring plans read their stages with ldmatrix (plan.ring_ldmatrix), except at batch 1 with 16
// splits or more; plans without a ring never do.
TEST_CASE("decode_attention plans ldmatrix ring steps", "[cuda-host][decode]") {
  struct Case {
    int hq, seqs, len;
    bool ldmatrix;
  };
  for (const Case& c :
       {Case{32, 1, 1024, true}, Case{32, 1, 3072, true}, Case{32, 1, 4096, false},
        Case{32, 1, 6144, false}, Case{32, 1, 32768, false}, Case{32, 2, 1024, true},
        Case{32, 2, 4096, true}, Case{32, 8, 4096, true}, Case{32, 32, 1024, true},
        Case{64, 1, 2048, true}, Case{64, 1, 4096, false}, Case{32, 1, 512, false},
        Case{32, 8, 16384, false}, Case{32, 1, 131072, false}}) {
    const DecodeAttentionPlan plan =
        plan_decode_attention(params(c.seqs, c.hq, 8, 128, 16, c.len, true), 132);
    INFO("hq " << c.hq << " seqs " << c.seqs << " len " << c.len << ": " << plan.num_splits
               << " splits, ring " << plan.ring_stages);
    CHECK(plan.ring_ldmatrix == c.ldmatrix);
    if (plan.ring_ldmatrix) CHECK(plan.ring_stages > 0);
    if (plan.ring_stages > 0 && c.seqs == 1) CHECK(plan.ring_ldmatrix == (plan.num_splits < 16));
  }
}

// The cluster merge: batch 1 ring plans of 2-8 splits at GQA 4 (the split-major grid, the
// register merge); nothing else.
TEST_CASE("decode_attention plans the cluster merge at batch 1", "[cuda-host][decode]") {
  struct Case {
    int hq, seqs, len;
    bool cluster;
  };
  for (const Case& c :
       {Case{32, 1, 768, true}, Case{32, 1, 1024, true}, Case{32, 1, 1536, true},
        Case{32, 1, 2048, true}, Case{32, 1, 512, false}, Case{32, 1, 3072, false},
        Case{32, 1, 4096, false}, Case{32, 1, 32768, false}, Case{32, 2, 1024, false},
        Case{32, 8, 4096, false}, Case{64, 1, 1024, false}, Case{64, 1, 2048, false}}) {
    const DecodeAttentionPlan plan =
        plan_decode_attention(params(c.seqs, c.hq, 8, 128, 16, c.len, true), 132);
    INFO("hq " << c.hq << " seqs " << c.seqs << " len " << c.len << ": " << plan.num_splits
               << " splits, ring " << plan.ring_stages);
    CHECK(plan.cluster_merge == c.cluster);
    if (plan.cluster_merge) {
      CHECK(plan.ring_stages > 0);
      CHECK(plan.num_splits >= 2);
      CHECK(plan.num_splits <= 8);
      CHECK(!plan.staged_merge);
      CHECK(!plan.kv_heads_adjacent);
    }
  }
  // Forced splits and plans without the overlap take no ring, hence no cluster merge.
  CHECK(!plan_decode_attention(params(1, 32, 8, 128, 16, 1024, true), 132, 8).cluster_merge);
  CHECK(!plan_decode_attention(params(1, 32, 8, 128, 16, 1024, false), 132).cluster_merge);
}

// One split's KV heads launch next to each other once the batch holds 16384 tokens in all
// (max context x sequences), whatever the split count or path; smaller batches keep one KV
// head's splits together.
TEST_CASE("decode_attention plans the grid order from the batch's tokens", "[cuda-host][decode]") {
  struct Case {
    int seqs, len;
    bool adjacent;
  };
  for (const Case& c :
       {Case{1, 1024, false}, Case{1, 8192, false}, Case{1, 16383, false}, Case{1, 16384, true},
        Case{1, 131072, true}, Case{2, 8192, true}, Case{8, 1024, false}, Case{8, 2048, true},
        Case{32, 1024, true}, Case{64, 256, true}, Case{3, 0, false}}) {
    for (int hq : {32, 64}) {
      for (int splits : {0, 5}) {
        const DecodeAttentionPlan plan =
            plan_decode_attention(params(c.seqs, hq, 8, 128, 16, c.len, true), 132, splits);
        INFO("hq " << hq << " seqs " << c.seqs << " len " << c.len << " forced " << splits);
        CHECK(plan.kv_heads_adjacent == c.adjacent);
      }
    }
  }
  CHECK(plan_decode_attention(params(4, 8, 8, 64, 8, 4096, false), 132).kv_heads_adjacent);
}

TEST_CASE("decode_attention plans honour a forced split count", "[cuda-host][decode]") {
  const DecodeAttentionParams p = params(3, 32, 8, 128, 16, 5000, true);
  for (int splits : {1, 7, 64, 1024}) {
    const DecodeAttentionPlan plan = plan_decode_attention(p, 132, splits);
    CHECK(plan.num_splits == splits);
    CHECK((plan.workspace_bytes == 0) == (splits == 1));
  }
  // Sized for a workspace shared with plans of up to 64 sequences: their merge counters
  // come first, so the workspace grows; one split still needs none.
  DecodeAttentionParams shared = p;
  shared.workspace_num_seqs = 64;
  CHECK(plan_decode_attention(shared, 132, 7).workspace_bytes >
        plan_decode_attention(p, 132, 7).workspace_bytes);
  CHECK(plan_decode_attention(shared, 132, 1).workspace_bytes == 0);
  // Nothing to attend to: one split, no workspace.
  const DecodeAttentionPlan empty = plan_decode_attention(params(0, 32, 8, 128, 16, 0, true), 132);
  CHECK(empty.num_splits == 1);
  CHECK(empty.workspace_bytes == 0);
}

TEST_CASE("decode_attention plans made with one workspace_num_seqs never put partials on counters",
          "[cuda-host][decode]") {
  // A model's CUDA runner gives every plan one workspace: decode graphs of every batch bucket
  // and eager steps planned for each step's context. Each plan leaves its merge counters at
  // zero, but another plan's partials must never land on them, or that plan's next launch
  // finds them nonzero and skips its merges (the bug 37f072b fixed: Llama-3.1-8B's batch-2
  // partials overwrote the batch-1 counters). Every pair of plans below, Llama-3.1-8B and the
  // demo model's attention shapes, batch 1-64 and contexts of 1 split to thousands, shares one.
  struct ModelShape {
    int hq, hkv, d, max_len;
  };
  for (const ModelShape m : {ModelShape{32, 8, 128, 131072}, ModelShape{4, 2, 64, 2048}}) {
    std::vector<std::pair<DecodeAttentionParams, DecodeAttentionPlan>> plans;
    for (int seqs : {1, 2, 3, 4, 8, 16, 32, 64}) {
      for (int len : {1, 100, 1024, 5000, m.max_len}) {
        if (len > m.max_len) continue;
        DecodeAttentionParams p = params(seqs, m.hq, m.hkv, m.d, 16, m.max_len, true);
        p.max_context_len = len;
        p.workspace_num_seqs = 64;
        plans.emplace_back(p, plan_decode_attention(p, 132));
      }
    }
    size_t shared_bytes = 0;
    for (const auto& [p, plan] : plans) shared_bytes = std::max(shared_bytes, plan.workspace_bytes);
    for (const auto& [pa, a] : plans) {
      const auto ua = arbor::cuda::decode_attention_workspace_use(pa, a);
      if (a.num_splits == 1) {
        CHECK(ua.partials_end == 0);
        continue;
      }
      CHECK(ua.partials_end <= a.workspace_bytes);
      CHECK(ua.counters_begin == 0);  // the same place for every plan
      for (const auto& [pb, b] : plans) {
        const auto ub = arbor::cuda::decode_attention_workspace_use(pb, b);
        if (b.num_splits == 1) continue;
        INFO("hq " << m.hq << ": " << pa.num_seqs << " seqs / " << a.num_splits << " splits vs "
                   << pb.num_seqs << " seqs / " << b.num_splits << " splits");
        const bool overlap =
            ua.partials_begin < ub.counters_end && ub.counters_begin < ua.partials_end;
        CHECK_FALSE(overlap);
      }
    }
    CHECK(shared_bytes > 0);
  }
}

TEST_CASE("decode_attention rejects bad shapes and plans before touching the device",
          "[cuda-host][decode]") {
  const DecodeAttentionParams good = params(2, 8, 2, 128, 16, 100, false);
  auto plan_with = [&](auto&& change) {
    DecodeAttentionParams p = good;
    change(p);
    return plan_decode_attention(p, 132);
  };
  CHECK_NOTHROW(plan_with([](DecodeAttentionParams&) {}));
  CHECK_THROWS_AS(plan_with([](DecodeAttentionParams& p) { p.head_dim = 96; }),
                  std::invalid_argument);
  CHECK_THROWS_AS(plan_with([](DecodeAttentionParams& p) { p.num_q_heads = 6; }),  // GQA 3
                  std::invalid_argument);
  CHECK_THROWS_AS(plan_with([](DecodeAttentionParams& p) { p.num_q_heads = 9; }),
                  std::invalid_argument);
  CHECK_THROWS_AS(plan_with([](DecodeAttentionParams& p) { p.num_q_heads = 32; }),  // GQA 16
                  std::invalid_argument);
  CHECK_THROWS_AS(plan_with([](DecodeAttentionParams& p) { p.block_size = 24; }),
                  std::invalid_argument);
  CHECK_THROWS_AS(plan_with([](DecodeAttentionParams& p) { p.num_seqs = -1; }),
                  std::invalid_argument);
  // Longer than the block table holds.
  CHECK_THROWS_AS(plan_with([](DecodeAttentionParams& p) { p.max_context_len = 1 << 20; }),
                  std::invalid_argument);
  CHECK_THROWS_AS(plan_with([](DecodeAttentionParams& p) { p.scale = INFINITY; }),
                  std::invalid_argument);
  // A shared workspace holds at least this plan's sequences.
  CHECK_THROWS_AS(plan_with([](DecodeAttentionParams& p) { p.workspace_num_seqs = -1; }),
                  std::invalid_argument);
  CHECK_THROWS_AS(plan_with([](DecodeAttentionParams& p) { p.workspace_num_seqs = 1; }),
                  std::invalid_argument);
  CHECK_NOTHROW(plan_with([](DecodeAttentionParams& p) { p.workspace_num_seqs = 2; }));
  CHECK_THROWS_AS(plan_decode_attention(good, 0), std::invalid_argument);
  CHECK_THROWS_AS(plan_decode_attention(good, 132, -1), std::invalid_argument);
  CHECK_THROWS_AS(plan_decode_attention(good, 132, 5000), std::invalid_argument);

  const DecodeAttentionParams p = launchable(good);
  const DecodeAttentionPlan multi = plan_decode_attention(p, 132, 4);
  void* const workspace = fake_device_pointer<void>(0x70000);
  auto rejects = [&](const DecodeAttentionParams& q, const DecodeAttentionPlan& plan, void* ws) {
    CHECK_THROWS_AS(arbor::cuda::decode_attention(q, plan, ws, nullptr), std::invalid_argument);
  };
  DecodeAttentionParams bad = p;
  bad.q = nullptr;
  rejects(bad, multi, workspace);
  bad = p;
  bad.head_dim = 256;
  rejects(bad, multi, workspace);
  bad = p;
  bad.k_cache = fake_device_pointer<arbor::cuda::bf16>(0x20008);  // 8-byte aligned only
  rejects(bad, multi, workspace);
  // Several splits need a workspace, 16-byte aligned and sized for these params.
  rejects(p, multi, nullptr);
  rejects(p, multi, fake_device_pointer<void>(0x70008));
  DecodeAttentionPlan small = multi;
  small.workspace_bytes /= 2;
  rejects(p, small, workspace);
  // A plan made for other params: more splits than the kernel supports, a prologue larger
  // than its shared memory.
  for (int splits : {0, 1025}) {
    DecodeAttentionPlan plan = multi;
    plan.num_splits = splits;
    rejects(p, plan, workspace);
  }
  DecodeAttentionPlan bad_prologue = multi;
  bad_prologue.prologue_tiles = 1000;
  rejects(p, bad_prologue, workspace);
  // The ring variant: 2 or 3 stages, for the tensor-core steps without a prologue only.
  if (!std::getenv("ARBOR_DECODE_RING")) CHECK(multi.ring_stages == 0);  // off by default
  for (int stages : {1, 4, -1}) {
    DecodeAttentionPlan plan = multi;
    plan.ring_stages = stages;
    rejects(p, plan, workspace);
  }
  DecodeAttentionPlan ring = multi;
  ring.ring_stages = 2;
  ring.prologue_tiles = 1;
  rejects(p, ring, workspace);
  ring.prologue_tiles = 0;
  bad = p;
  bad.head_dim = 64;  // GQA 4 at head dim 64: CUDA-core steps
  rejects(bad, ring, workspace);
  bad = p;
  bad.num_q_heads = 4;  // GQA 2
  rejects(bad, ring, workspace);
  bad = p;
  bad.block_size = 8;
  bad.max_blocks_per_seq *= 2;
  rejects(bad, ring, workspace);
  // ldmatrix reads the ring's stages.
  DecodeAttentionPlan ldmatrix = multi;
  ldmatrix.ring_stages = 0;
  ldmatrix.ring_ldmatrix = true;
  rejects(p, ldmatrix, workspace);
  // The merge through shared memory uses the ring's.
  DecodeAttentionPlan staged = multi;
  staged.ring_stages = 0;
  staged.staged_merge = true;
  rejects(p, staged, workspace);
  // The cluster merge: ring plans of 2-8 splits, the register merge, the split-major grid, GQA
  // 4 at head dim 128.
  DecodeAttentionPlan cluster = multi;  // 4 splits
  cluster.ring_stages = 3;
  cluster.cluster_merge = true;
  CHECK_NOTHROW(arbor::cuda::decode_attention(launchable(params(0, 32, 8, 128, 16, 1024, true)),
                                              cluster, workspace, nullptr));
  DecodeAttentionPlan bad_cluster = cluster;
  bad_cluster.ring_stages = 0;
  rejects(p, bad_cluster, workspace);
  bad_cluster = cluster;
  bad_cluster.staged_merge = true;
  rejects(p, bad_cluster, workspace);
  bad_cluster = cluster;
  bad_cluster.kv_heads_adjacent = true;
  rejects(p, bad_cluster, workspace);
  for (int splits : {1, 9}) {
    bad_cluster = cluster;
    bad_cluster.num_splits = splits;
    rejects(p, bad_cluster, workspace);
  }
  bad = p;
  bad.num_q_heads = 16;  // GQA 8
  rejects(bad, cluster, workspace);
}
