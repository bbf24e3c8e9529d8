// GPU token sampling: one 1024-thread block per row; see sampling.h for the contract and the
// method. Device helpers first (reductions, radix select), then the kernel, then the launcher.
#include "kernels/cuda/sampling.h"

#include <algorithm>
#include <climits>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/pdl.h"

namespace arbor::cuda {
namespace {

using u64 = unsigned long long;

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;
constexpr int kBins = 256;  // 8-bit radix digits over 64-bit keys: at most 8 passes
constexpr unsigned kFullMask = 0xffffffffu;
constexpr double kMassScale = 0x1.0p40;  // nucleus masses in 2^-40 fixed point (exact sums)

size_t row_stride(int vocab) {
  return (static_cast<size_t>(vocab) + 3) / 4 * 4;
}

__device__ __forceinline__ float nan_to_neg_inf(float x) {
  return isnan(x) ? -INFINITY : x;
}

// Monotone map of non-NaN floats to uint32; -0 and +0 map alike (they compare equal).
__device__ __forceinline__ uint32_t ordered_bits(float x) {
  if (x == 0.0f) x = 0.0f;
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

// A strict total order as one integer: a larger key ranks first (larger value, then lower id).
__device__ __forceinline__ u64 rank_key(float x, int i) {
  return (u64{ordered_bits(x)} << 32) | u64{~static_cast<uint32_t>(i)};
}

__device__ __forceinline__ int key_id(u64 key) {
  return static_cast<int>(~static_cast<uint32_t>(key));
}

__device__ __forceinline__ u64 to_fixed(float w) {
  return __double2ull_rn(static_cast<double>(w) * kMassScale);
}

// (value, id); better = larger value, then lower id.
struct ArgBest {
  float value;
  int32_t id;
};
__device__ __forceinline__ ArgBest better_of(ArgBest a, ArgBest b) {
  return (b.value > a.value || (b.value == a.value && b.id < a.id)) ? b : a;
}

// (race score, id) for the draw.
struct ScoreBest {
  double score;
  int32_t id;
  int32_t unused;
};
__device__ __forceinline__ ScoreBest better_of(ScoreBest a, ScoreBest b) {
  return (b.score > a.score || (b.score == a.score && b.id < a.id)) ? b : a;
}

// Raw-row statistics for logprobs.
struct RawStats {
  float max;
  int32_t pos_inf;
};

template <typename T>
__device__ __forceinline__ T shfl_xor(T v, int lane_mask) {
  static_assert(sizeof(T) % 4 == 0, "shuffled types are whole 32-bit words");
  uint32_t w[sizeof(T) / 4];
  memcpy(w, &v, sizeof(T));
#pragma unroll
  for (int j = 0; j < int(sizeof(T) / 4); ++j) w[j] = __shfl_xor_sync(kFullMask, w[j], lane_mask);
  memcpy(&v, w, sizeof(T));
  return v;
}

// Reduces v over the block with op; every thread gets the result. The combination order is
// fixed (butterfly in each warp, then warps 0..31 in order), so sums are deterministic. All
// threads must call it; `scratch` holds kWarps values of T (reusable right after return).
template <typename T, typename Op>
__device__ T block_reduce(T v, Op op, unsigned char* scratch) {
  static_assert(sizeof(T) <= 16, "scratch holds 16 bytes per warp");
#pragma unroll
  for (int m = 16; m > 0; m >>= 1) v = op(v, shfl_xor(v, m));
  T* partial = reinterpret_cast<T*>(scratch);
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  T r = partial[0];
  for (int w = 1; w < kWarps; ++w) r = op(r, partial[w]);
  __syncthreads();
  return r;
}

struct SelectShared {
  u64 weight[kBins];
  unsigned count[kBins];
  u64 prefix;
  u64 remaining;
  int done;
};

// Block-wide radix select. Among the elements i in [0, n) for which item(i, key, weight)
// returns true (keys distinct), returns the largest key K such that the elements with
// key >= K weigh at least `target` in total: with unit weights the target-th largest key
// (top-k), with masses the boundary of the smallest best-first prefix reaching the target
// (nucleus). Returns 0 (everything) when all of them weigh less than the target. target >= 1.
// Each pass histograms the next 8 bits of the keys that share the decided prefix; it stops
// early once the crossing bin holds one element (or, for unit weights, exactly the rest).
// Integer atomics only, so the result never depends on thread timing. All threads must call.
template <bool kUnitWeights, typename Item>
__device__ u64 block_select(int n, u64 target, Item item, SelectShared& s) {
  const int tid = threadIdx.x, lane = tid % 32;
  u64 prefix = 0, remaining = target;
  for (int shift = 56; shift >= 0; shift -= 8) {
    const u64 mask = shift == 56 ? 0ull : ~0ull << (shift + 8);
    for (int b = tid; b < kBins; b += kThreads) {
      s.weight[b] = 0;
      s.count[b] = 0;
    }
    __syncthreads();
    for (int i = tid; i < n; i += kThreads) {
      u64 key = 0, weight = 0;
      if (!item(i, key, weight) || (key & mask) != prefix) continue;
      const int bin = static_cast<int>(key >> shift) & (kBins - 1);
      if (!kUnitWeights) atomicAdd(&s.weight[bin], weight);
      atomicAdd(&s.count[bin], 1u);
    }
    __syncthreads();
    if (tid < 32) {  // warp 0: find the bin where the best-first running weight crosses
      auto bin_weight = [&](int b) -> u64 { return kUnitWeights ? u64{s.count[b]} : s.weight[b]; };
      u64 local = 0;  // lane l holds bins 255 - 8l down to 248 - 8l (best first)
      for (int j = 0; j < 8; ++j) local += bin_weight(kBins - 1 - 8 * lane - j);
      u64 incl = local;
#pragma unroll
      for (int d = 1; d < 32; d <<= 1) {
        const u64 other = __shfl_up_sync(kFullMask, incl, d);
        if (lane >= d) incl += other;
      }
      const unsigned hit = __ballot_sync(kFullMask, incl >= remaining);
      if (hit == 0) {
        if (lane == 0) s.done = 1;  // not enough weight: everything in the group is kept
        if (lane == 0) s.prefix = prefix, s.remaining = remaining;
      } else if (lane == __ffs(static_cast<int>(hit)) - 1) {
        u64 above = incl - local;
        for (int j = 0; j < 8; ++j) {
          const int b = kBins - 1 - 8 * lane - j;
          const u64 wb = bin_weight(b);
          if (above + wb >= remaining) {
            const u64 rest = remaining - above;
            s.prefix = prefix | (u64(b) << shift);
            s.remaining = rest;
            s.done = s.count[b] <= 1 || (kUnitWeights && wb == rest);
            break;
          }
          above += wb;
        }
      }
    }
    __syncthreads();
    prefix = s.prefix;
    remaining = s.remaining;
    if (s.done) break;  // uniform: every thread read the same flag
  }
  return prefix;
}

struct alignas(16) KernelShared {
  SelectShared select;
  alignas(16) unsigned char scratch[kWarps * 16];
  u64 top_keys[kMaxTopLogprobs];
  int top_count;
};

__global__ void __launch_bounds__(kThreads)
    sample_kernel(SamplingBatch b, float* work, size_t work_stride) {
  pdl_wait();
  pdl_launch_dependents();
  __shared__ KernelShared sh;
  const int row = blockIdx.x, tid = threadIdx.x, n = b.vocab;
  const SamplingRowParams p = b.params[row];
  const float* raw = b.logits + static_cast<size_t>(row) * n;

  // 1. logit_bias and penalties, on a copy of the row in the workspace.
  const float* x = raw;
  int pen_begin = 0, pen_end = 0, bias_begin = 0, bias_end = 0;
  if (b.penalty_offsets) pen_begin = b.penalty_offsets[row], pen_end = b.penalty_offsets[row + 1];
  if (b.bias_offsets) bias_begin = b.bias_offsets[row], bias_end = b.bias_offsets[row + 1];
  if (pen_end > pen_begin || bias_end > bias_begin) {
    float* w = work + static_cast<size_t>(row) * work_stride;
    for (int i = tid; i < n; i += kThreads) w[i] = nan_to_neg_inf(raw[i]);
    __syncthreads();
    if (tid == 0) {  // in list order, so repeated ids add up exactly as on the CPU
      for (int e = bias_begin; e < bias_end; ++e) {
        const SamplingBiasEntry be = b.bias_entries[e];
        if (be.id >= 0 && be.id < n) w[be.id] = __fadd_rn(w[be.id], be.bias);
      }
    }
    __syncthreads();
    const float rep = p.repetition_penalty, freq = p.frequency_penalty;
    const float presence = p.presence_penalty;
    for (int e = pen_begin + tid; e < pen_end; e += kThreads) {  // distinct ids: no races
      const SamplingPenaltyEntry pe = b.penalty_entries[e];
      if (pe.id < 0 || pe.id >= n) continue;
      float v = w[pe.id];
      if (rep != 1.0f && (pe.in_prompt != 0 || pe.output_count > 0))
        v = v > 0.0f ? __fdiv_rn(v, rep) : __fmul_rn(v, rep);
      if ((freq != 0.0f || presence != 0.0f) && pe.output_count > 0) {
        // _rn intrinsics: no fused multiply-add, so the rounding is the CPU sampler's.
        v = __fsub_rn(v, __fmul_rn(freq, static_cast<float>(pe.output_count)));
        v = __fsub_rn(v, presence);
      }
      w[pe.id] = v;
    }
    __syncthreads();  // also makes the block's global writes visible to the whole block
    x = w;
  }
  auto load = [&](int i) { return nan_to_neg_inf(x[i]); };

  // 2. Maximum with the greedy argmax (ties to the lowest id).
  ArgBest best{-INFINITY, INT_MAX};
  for (int i = tid; i < n; i += kThreads) best = better_of(best, ArgBest{load(i), i});
  best = block_reduce(
      best, [](ArgBest a, ArgBest c) { return better_of(a, c); }, sh.scratch);

  int32_t token = -1;
  const float xmax = best.value;
  if (!(p.temperature >= kSamplingGreedyTemperature)) {
    if (xmax > -INFINITY) token = best.id;
  } else if (xmax > -INFINITY) {
    // 3. Filters and the draw. With +inf logits only the +inf tokens stay, at weight 1.
    const bool pos_inf = xmax == INFINITY;
    const float shift = pos_inf ? 0.0f : xmax;
    auto value = [&](int i) {
      const float v = load(i);
      return pos_inf ? (v == INFINITY ? 0.0f : -INFINITY) : v;
    };
    const float inv_t = __fdiv_rn(1.0f, p.temperature);
    auto weight = [&](float v) { return expf(__fmul_rn(__fsub_rn(v, shift), inv_t)); };
    const float min_p = fminf(fmaxf(p.min_p, 0.0f), 1.0f);

    const bool use_top_k = p.top_k > 0 && p.top_k < n;
    u64 k_key = 0;
    if (use_top_k) {
      k_key = block_select<true>(
          n, static_cast<u64>(p.top_k),
          [&](int i, u64& key, u64& wt) {
            key = rank_key(value(i), i);
            wt = 1;
            return true;
          },
          sh.select);
    }
    // Member of C (top-k survivor with w >= min_p, w > 0); w is set when in the top-k.
    auto candidate = [&](int i, float v, float& w) {
      if (use_top_k && rank_key(v, i) < k_key) return false;
      w = weight(v);
      return w > 0.0f && w >= min_p;
    };

    const bool use_top_p = p.top_p < 1.0f;
    u64 p_key = 0;
    if (use_top_p) {
      u64 local = 0;  // mass of the top-k survivors, before min-p
      for (int i = tid; i < n; i += kThreads) {
        const float v = value(i);
        if (!use_top_k || rank_key(v, i) >= k_key) local += to_fixed(weight(v));
      }
      const u64 total = block_reduce(
          local, [](u64 a, u64 c) { return a + c; }, sh.scratch);
      const double want =
          ceil(static_cast<double>(fmaxf(p.top_p, 0.0f)) * static_cast<double>(total));
      const u64 target = want < 1.0 ? 1ull : static_cast<u64>(want);
      p_key = block_select<false>(
          n, target,
          [&](int i, u64& key, u64& wt) {
            float w = 0.0f;
            if (!candidate(i, value(i), w)) return false;
            key = rank_key(w, i);
            wt = to_fixed(w);
            return true;
          },
          sh.select);
    }

    ScoreBest race{-1.0, INT_MAX, 0};
    for (int i = tid; i < n; i += kThreads) {
      float w = 0.0f;
      if (!candidate(i, value(i), w) || (use_top_p && rank_key(w, i) < p_key)) continue;
      const double score = static_cast<double>(w) / sampling_exponential(p.seed, p.step, i);
      race = better_of(race, ScoreBest{score, i, 0});
    }
    race = block_reduce(
        race, [](ScoreBest a, ScoreBest c) { return better_of(a, c); }, sh.scratch);
    // The best token is always kept (w = 1 passes every filter); the fallback is defensive.
    token = race.id != INT_MAX ? race.id : best.id;
  }
  if (tid == 0) b.tokens[row] = token;

  // 4. Logprobs of the raw distribution.
  const bool want_chosen = p.logprobs >= 0 && b.logprobs != nullptr;
  const bool want_top = p.logprobs >= 1 && b.top_ids != nullptr;
  if (!want_chosen && !want_top) return;
  auto raw_at = [&](int i) { return nan_to_neg_inf(raw[i]); };
  RawStats stats{-INFINITY, 0};
  for (int i = tid; i < n; i += kThreads) {
    const float r = raw_at(i);
    stats.max = fmaxf(stats.max, r);
    stats.pos_inf += r == INFINITY;
  }
  stats = block_reduce(
      stats,
      [](RawStats a, RawStats c) {
        return RawStats{fmaxf(a.max, c.max), a.pos_inf + c.pos_inf};
      },
      sh.scratch);
  double lse = 0.0;
  if (stats.pos_inf == 0) {
    double sum = 0.0;
    for (int i = tid; i < n; i += kThreads)
      sum += exp(static_cast<double>(raw_at(i)) - static_cast<double>(stats.max));
    sum = block_reduce(
        sum, [](double a, double c) { return a + c; }, sh.scratch);
    lse = static_cast<double>(stats.max) + log(sum);
  }
  auto logprob = [&](float r) -> float {
    if (stats.pos_inf > 0)
      return r == INFINITY ? -static_cast<float>(log(static_cast<double>(stats.pos_inf)))
                           : -INFINITY;
    return static_cast<float>(static_cast<double>(r) - lse);
  };
  if (want_chosen && tid == 0) b.logprobs[row] = token >= 0 ? logprob(raw_at(token)) : NAN;
  if (!want_top) return;

  const int m = min(min(p.logprobs, kMaxTopLogprobs), n);
  const u64 kth = block_select<true>(
      n, static_cast<u64>(m),
      [&](int i, u64& key, u64& wt) {
        key = rank_key(raw_at(i), i);
        wt = 1;
        return true;
      },
      sh.select);
  if (tid == 0) sh.top_count = 0;
  __syncthreads();
  for (int i = tid; i < n; i += kThreads) {
    const u64 key = rank_key(raw_at(i), i);
    if (key < kth) continue;
    const int slot = atomicAdd(&sh.top_count, 1);
    if (slot < kMaxTopLogprobs) sh.top_keys[slot] = key;
  }
  __syncthreads();
  if (tid == 0) {
    const int count = min(sh.top_count, kMaxTopLogprobs);  // == m
    for (int j = 1; j < count; ++j) {  // insertion sort, best (largest key) first
      const u64 key = sh.top_keys[j];
      int k = j;
      for (; k > 0 && sh.top_keys[k - 1] < key; --k) sh.top_keys[k] = sh.top_keys[k - 1];
      sh.top_keys[k] = key;
    }
    int32_t* ids = b.top_ids + static_cast<size_t>(row) * kMaxTopLogprobs;
    float* lps = b.top_logprobs + static_cast<size_t>(row) * kMaxTopLogprobs;
    for (int j = 0; j < kMaxTopLogprobs; ++j) {
      const int id = j < count ? key_id(sh.top_keys[j]) : -1;
      ids[j] = id;
      lps[j] = id >= 0 ? logprob(raw_at(id)) : -INFINITY;
    }
  }
}

[[noreturn]] void reject(const std::string& what) {
  throw std::invalid_argument("cuda::sample: " + what);
}

}  // namespace

size_t sampling_workspace_bytes(int rows, int vocab) {
  if (rows <= 0 || vocab <= 0) return 0;
  return static_cast<size_t>(rows) * row_stride(vocab) * sizeof(float);
}

void sample(const SamplingBatch& b, void* workspace, size_t workspace_bytes, cudaStream_t stream) {
  if (b.rows < 0) reject("rows must be >= 0, got " + std::to_string(b.rows));
  if (b.vocab < 1 || b.vocab > kMaxSamplingVocab)
    reject("vocab must be in [1, " + std::to_string(kMaxSamplingVocab) + "], got " +
           std::to_string(b.vocab));
  if (b.rows == 0) return;
  if (!b.logits) reject("logits is null");
  if (!b.params) reject("params is null");
  if (!b.tokens) reject("tokens is null");
  if ((b.top_ids == nullptr) != (b.top_logprobs == nullptr))
    reject("top_ids and top_logprobs must both be given or both be null");
  if (b.penalty_offsets && !b.penalty_entries)
    reject("penalty_offsets is given but penalty_entries is null");
  if (b.bias_offsets && !b.bias_entries) reject("bias_offsets is given but bias_entries is null");
  if (b.penalty_offsets || b.bias_offsets) {
    const size_t need = sampling_workspace_bytes(b.rows, b.vocab);
    if (!workspace || workspace_bytes < need)
      reject("workspace of " + std::to_string(workspace_bytes) + " bytes" +
             (workspace ? "" : " (null)") + " is too small for penalty/bias lists: need " +
             std::to_string(need) + " (sampling_workspace_bytes)");
    if (reinterpret_cast<uintptr_t>(workspace) % 16 != 0)
      reject("workspace must be 16-byte aligned");
  }
  launch_pdl(sample_kernel, dim3(b.rows), dim3(kThreads), 0, stream, b,
             static_cast<float*>(workspace), row_stride(b.vocab));
  CUDA_CHECK_LAUNCH();
}

void append_penalty_entries(std::span<const int32_t> prompt_ids,
                            std::span<const int32_t> output_ids,
                            std::vector<SamplingPenaltyEntry>& out) {
  std::vector<int32_t> prompt(prompt_ids.begin(), prompt_ids.end());
  std::vector<int32_t> output(output_ids.begin(), output_ids.end());
  std::sort(prompt.begin(), prompt.end());
  std::sort(output.begin(), output.end());
  size_t i = 0, j = 0;
  while (i < prompt.size() || j < output.size()) {
    int32_t id = INT32_MAX;
    if (i < prompt.size()) id = prompt[i];
    if (j < output.size()) id = std::min(id, output[j]);
    SamplingPenaltyEntry e;
    e.id = id;
    for (; i < prompt.size() && prompt[i] == id; ++i) e.in_prompt = 1;
    for (; j < output.size() && output[j] == id; ++j) ++e.output_count;
    out.push_back(e);
  }
}

}  // namespace arbor::cuda
