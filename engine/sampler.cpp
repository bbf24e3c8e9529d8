// Token sampling: logit processors, then greedy or a seeded draw; see sampler.h.
#include "engine/sampler.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <sstream>
#include <string>

namespace arbor {
namespace {

constexpr float kNegInf = -std::numeric_limits<float>::infinity();
constexpr float kPosInf = std::numeric_limits<float>::infinity();

// What drawing from a row with no finite logit throws, on the host or after the device.
[[noreturn]] void throw_no_finite_logit() {
  throw std::runtime_error("sampler: every logit is -inf or NaN after processing");
}

// Histogram buckets for top-p: the top 15 bits of a float in [0, 1] (exponent and 6
// mantissa bits, ~1.6% wide), so 1.0f (0x3F800000) lands in the last one.
constexpr uint32_t kNumBuckets = (0x3F800000u >> 17) + 1;
uint32_t bucket(float x) {
  return std::bit_cast<uint32_t>(x) >> 17;
}

std::string describe(float v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

[[noreturn]] void reject(const std::string& field, const std::string& value,
                         const std::string& allowed) {
  throw std::invalid_argument(field + " must be " + allowed + ", got " + value);
}

// True when a ranks before b: larger value first, then lower id. A strict total order, so
// every selection and sort below is deterministic.
template <typename C>
bool better(const C& a, const C& b) {
  return a.value > b.value || (a.value == b.value && a.id < b.id);
}

// Keeps the k best of {(value(i), i) : i in [0, n)} in out, unordered. A bounded heap with
// the worst kept element on top: O(n) compares when most tokens lose to the k-th best.
template <typename C, typename ValueFn>
void select_top_k(size_t n, size_t k, ValueFn value, std::vector<C>& out) {
  out.clear();
  auto worse_on_top = [](const C& a, const C& b) { return better(a, b); };
  for (size_t i = 0; i < n; ++i) {
    C c{value(i), static_cast<int32_t>(i)};
    if (out.size() < k) {
      out.push_back(c);
      std::push_heap(out.begin(), out.end(), worse_on_top);
    } else if (better(c, out.front())) {
      std::pop_heap(out.begin(), out.end(), worse_on_top);
      out.back() = c;
      std::push_heap(out.begin(), out.end(), worse_on_top);
    }
  }
}

// Candidates hold unnormalized probabilities; [0, lo) are known to rank above the rest and
// hold mass `taken`, short of target. Reorders [lo, end) so that the nucleus — the smallest
// set of best candidates whose mass reaches `target` — comes first, and returns its size
// (all of them if their total mass stays below target). Expected O(n): halves the
// undecided range with nth_element instead of sorting everything.
template <typename C>
size_t nucleus(std::vector<C>& cand, size_t lo, double taken, double target) {
  auto cmp = [](const C& a, const C& b) { return better(a, b); };
  size_t hi = cand.size();  // [0, lo) taken; the boundary lies in [lo, hi)
  while (hi - lo > 64) {
    size_t mid = lo + (hi - lo) / 2;
    std::nth_element(cand.begin() + lo, cand.begin() + mid, cand.begin() + hi, cmp);
    double mass = 0.0;
    for (size_t i = lo; i <= mid; ++i) mass += cand[i].value;
    if (taken + mass >= target) {
      hi = mid + 1;
    } else {
      taken += mass;
      lo = mid + 1;
    }
  }
  std::sort(cand.begin() + lo, cand.begin() + hi, cmp);
  for (size_t i = lo; i < hi; ++i) {
    taken += cand[i].value;
    if (taken >= target) return i + 1;
  }
  return hi;  // only when the whole range falls short (rounding, or min-p pre-filtering)
}

}  // namespace

void SamplingParams::validate(int vocab_size) const {
  if (!std::isfinite(temperature) || temperature < 0.0f)
    reject("temperature", describe(temperature), "a finite number >= 0");
  if (top_k < -1) reject("top_k", std::to_string(top_k), "-1 or 0 (disabled) or >= 1");
  if (!(top_p > 0.0f && top_p <= 1.0f)) reject("top_p", describe(top_p), "in (0, 1]");
  if (!(min_p >= 0.0f && min_p <= 1.0f)) reject("min_p", describe(min_p), "in [0, 1]");
  if (!std::isfinite(repetition_penalty) || repetition_penalty <= 0.0f)
    reject("repetition_penalty", describe(repetition_penalty), "a finite number > 0");
  if (!(presence_penalty >= -2.0f && presence_penalty <= 2.0f))
    reject("presence_penalty", describe(presence_penalty), "in [-2, 2]");
  if (!(frequency_penalty >= -2.0f && frequency_penalty <= 2.0f))
    reject("frequency_penalty", describe(frequency_penalty), "in [-2, 2]");
  for (const auto& [id, bias] : logit_bias) {
    if (id < 0 || id >= vocab_size)
      reject("logit_bias token id", std::to_string(id),
             "in [0, " + std::to_string(vocab_size) + ")");
    if (!(bias >= -100.0f && bias <= 100.0f))
      reject("logit_bias value for token " + std::to_string(id), describe(bias), "in [-100, 100]");
  }
  if (logprobs < -1 || logprobs > 20)
    reject("logprobs", std::to_string(logprobs), "in [-1, 20] (-1: none)");
}

DeviceSamplingRow device_sampling_row(const SamplingParams& params, uint64_t seed) {
  DeviceSamplingRow row;
  row.temperature = params.temperature;
  row.top_k = params.top_k;
  row.top_p = params.top_p;
  row.min_p = params.min_p;
  row.repetition_penalty = params.repetition_penalty;
  row.presence_penalty = params.presence_penalty;
  row.frequency_penalty = params.frequency_penalty;
  row.logprobs = params.logprobs;
  row.logit_bias = params.logit_bias;
  row.seed = seed;
  return row;
}

SampledToken take_device_token(DeviceSampledToken& drawn) {
  if (drawn.id < 0) throw_no_finite_logit();
  SampledToken tok;
  tok.id = drawn.id;
  tok.logprob = drawn.logprob;
  tok.top_logprobs = std::move(drawn.top_logprobs);
  return tok;
}

uint64_t random_sampling_seed() {
  std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

Sampler::Sampler(SamplingParams params) : params_(std::move(params)) {
  if (params_.seed) {
    rng_.seed(*params_.seed);
  } else {
    std::random_device rd;
    rng_.seed((static_cast<uint64_t>(rd()) << 32) ^ rd());
  }
}

double Sampler::uniform01() {
  return static_cast<double>(rng_() >> 11) * 0x1.0p-53;
}

SampledToken Sampler::sample(std::span<const float> logits, std::span<const int32_t> prompt_ids,
                             std::span<const int32_t> output_ids) {
  const size_t n = logits.size();
  if (n == 0) throw std::invalid_argument("sampler: empty logits row");
  if (n > static_cast<size_t>(std::numeric_limits<int32_t>::max()))
    throw std::invalid_argument("sampler: vocabulary too large");

  work_.resize(n);
  for (size_t i = 0; i < n; ++i) work_[i] = std::isnan(logits[i]) ? kNegInf : logits[i];
  for (const auto& [id, bias] : params_.logit_bias) {
    if (id < 0 || static_cast<size_t>(id) >= n)
      throw std::invalid_argument("sampler: logit_bias token id " + std::to_string(id) +
                                  " outside the vocabulary of " + std::to_string(n));
    work_[id] += bias;
  }
  apply_penalties(prompt_ids, output_ids);

  SampledToken out;
  if (params_.temperature < kGreedyTemperature) {
    size_t best = 0;
    for (size_t i = 1; i < n; ++i)
      if (work_[i] > work_[best]) best = i;
    if (!(work_[best] > kNegInf)) throw_no_finite_logit();
    out.id = static_cast<int32_t>(best);
  } else {
    out.id = draw();
  }
  if (params_.logprobs >= 0) fill_logprobs(logits, out);
  return out;
}

void Sampler::apply_penalties(std::span<const int32_t> prompt_ids,
                              std::span<const int32_t> output_ids) {
  const size_t n = work_.size();
  auto check = [n](int32_t id, const char* where) {
    if (id < 0 || static_cast<size_t>(id) >= n)
      throw std::invalid_argument(std::string("sampler: ") + where + " token id " +
                                  std::to_string(id) + " outside the vocabulary of " +
                                  std::to_string(n));
  };

  const float rep = params_.repetition_penalty;
  if (rep != 1.0f) {
    seen_.assign((n + 63) / 64, 0);
    auto penalize = [&](int32_t id) {
      uint64_t bit = uint64_t{1} << (id % 64);
      if (seen_[id / 64] & bit) return;
      seen_[id / 64] |= bit;
      float& x = work_[id];
      x = x > 0.0f ? x / rep : x * rep;
    };
    for (int32_t id : prompt_ids) check(id, "prompt"), penalize(id);
    for (int32_t id : output_ids) check(id, "output"), penalize(id);
  }

  const float freq = params_.frequency_penalty, presence = params_.presence_penalty;
  if (freq != 0.0f || presence != 0.0f) {
    sorted_ids_.assign(output_ids.begin(), output_ids.end());
    std::sort(sorted_ids_.begin(), sorted_ids_.end());
    for (size_t i = 0; i < sorted_ids_.size();) {
      size_t j = i;
      while (j < sorted_ids_.size() && sorted_ids_[j] == sorted_ids_[i]) ++j;
      check(sorted_ids_[i], "output");
      float& x = work_[sorted_ids_[i]];
      x -= freq * static_cast<float>(j - i);
      x -= presence;
      i = j;
    }
  }
}

int32_t Sampler::draw() {
  const size_t n = work_.size();
  float xmax = kNegInf;
  for (float x : work_) xmax = std::max(xmax, x);
  if (!(xmax > kNegInf)) throw_no_finite_logit();
  if (xmax == kPosInf) {  // the +inf tokens take all the mass, shared equally
    for (float& x : work_) x = x == kPosInf ? 0.0f : kNegInf;
    xmax = 0.0f;
  }

  const float inv_t = 1.0f / params_.temperature;
  const float min_p = params_.min_p;
  const float top_p = params_.top_p;
  const bool use_top_k = params_.top_k > 0 && static_cast<size_t>(params_.top_k) < n;
  // Unnormalized probability relative to the best token (which gets exactly 1), so min-p
  // is simply e >= min_p.
  auto weight = [&](float x) { return std::exp((x - xmax) * inv_t); };

  if (!use_top_k && top_p >= 1.0f) {  // fast path: draw straight from the whole row
    double kept = 0.0;
    for (float& x : work_) {
      x = weight(x);
      if (x < min_p) x = 0.0f;
      kept += x;
    }
    const double r = uniform01() * kept;
    double acc = 0.0;
    size_t last = 0;
    for (size_t i = 0; i < n; ++i) {
      if (work_[i] <= 0.0f) continue;
      acc += work_[i];
      last = i;
      if (r < acc) return static_cast<int32_t>(i);
    }
    return static_cast<int32_t>(last);  // r rounded up to the total
  }

  double total = 0.0;  // mass of the top-k survivors (or the whole row), before min-p
  if (use_top_k) {
    select_top_k(
        n, static_cast<size_t>(params_.top_k), [&](size_t i) { return work_[i]; }, candidates_);
    for (Candidate& c : candidates_) total += (c.value = weight(c.value));
    if (min_p > 0.0f)
      std::erase_if(candidates_, [&](const Candidate& c) { return c.value < min_p; });
  } else {
    for (float& x : work_) total += (x = weight(x));
    // Mass histogram over the weights' float bit patterns (monotone on [0, 1]): every
    // bucket above the one where the cumulative mass (best first) crosses top_p * total
    // lies inside the nucleus unsorted; only the crossing bucket needs ordering.
    const double target = static_cast<double>(top_p) * total;
    // Small rows skip it (clearing the histogram would cost more than ordering them all).
    const bool histogram = n >= kNumBuckets / 4;
    uint32_t cross = 0;
    if (histogram) {
      bucket_mass_.assign(kNumBuckets, 0.0);
      for (float x : work_)
        if (x >= min_p) bucket_mass_[bucket(x)] += x;
      double above = 0.0;
      for (uint32_t b = kNumBuckets; b-- > 0;) {
        if (above + bucket_mass_[b] >= target) {
          cross = b;
          break;
        }
        above += bucket_mass_[b];
      }
    }
    candidates_.clear();
    for (size_t i = 0; i < n; ++i) {
      const float x = work_[i];
      if (x >= min_p && x > 0.0f && bucket(x) >= cross)
        candidates_.push_back({x, static_cast<int32_t>(i)});
    }
    size_t first = 0;  // candidates_[0, first) lie above the crossing bucket
    if (histogram)
      first = static_cast<size_t>(
          std::partition(candidates_.begin(), candidates_.end(),
                         [&](const Candidate& c) { return bucket(c.value) > cross; }) -
          candidates_.begin());
    double taken = 0.0;
    for (size_t i = 0; i < first; ++i) taken += candidates_[i].value;
    candidates_.resize(nucleus(candidates_, first, taken, target));
  }
  if (use_top_k && top_p < 1.0f)
    candidates_.resize(nucleus(candidates_, 0, 0.0, static_cast<double>(top_p) * total));

  double kept = 0.0;
  for (const Candidate& c : candidates_) kept += c.value;
  const double r = uniform01() * kept;
  double acc = 0.0;
  int32_t last = candidates_.front().id;  // the best token always survives every filter
  for (const Candidate& c : candidates_) {
    if (c.value <= 0.0f) continue;
    acc += c.value;
    last = c.id;
    if (r < acc) return c.id;
  }
  return last;
}

void Sampler::fill_logprobs(std::span<const float> logits, SampledToken& out) {
  const size_t n = logits.size();
  auto raw = [&](size_t i) { return std::isnan(logits[i]) ? kNegInf : logits[i]; };
  float xmax = kNegInf;
  size_t num_pos_inf = 0;
  for (size_t i = 0; i < n; ++i) {
    xmax = std::max(xmax, raw(i));
    num_pos_inf += raw(i) == kPosInf;
  }
  // log p_i = x_i - lse. With +inf logits the +inf tokens share the mass equally.
  double lse = 0.0;
  auto logprob = [&](float x) -> float {
    if (num_pos_inf > 0)
      return x == kPosInf ? -static_cast<float>(std::log(static_cast<double>(num_pos_inf)))
                          : kNegInf;
    return static_cast<float>(static_cast<double>(x) - lse);
  };
  if (num_pos_inf == 0) {
    double sum = 0.0;
    for (size_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(raw(i)) - xmax);
    lse = static_cast<double>(xmax) + std::log(sum);
  }
  out.logprob = logprob(raw(static_cast<size_t>(out.id)));
  out.top_logprobs.clear();
  if (params_.logprobs > 0) {
    select_top_k(n, static_cast<size_t>(params_.logprobs), raw, candidates_);
    std::sort(candidates_.begin(), candidates_.end(),
              [](const Candidate& a, const Candidate& b) { return better(a, b); });
    for (const Candidate& c : candidates_) out.top_logprobs.emplace_back(c.id, logprob(c.value));
  }
}

}  // namespace arbor
