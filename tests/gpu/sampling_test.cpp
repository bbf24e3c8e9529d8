// GPU sampling (kernels/cuda/sampling.h) against the CPU sampler (engine/sampler.h): greedy
// tokens, penalties and logit bias exactly; logprobs within 1e-4; the kept set of top-k /
// top-p / min-p; the distribution of draws; reproducibility and independence from the batch.
#include "kernels/cuda/sampling.h"

#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <numeric>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "engine/sampler.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/device_buffer.h"
#include "tests/gpu/sampling_batch.h"

namespace arbor::cuda {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// Logprob tolerance. Both sides compute log p = x - lse with lse = max + log(Σ exp(x - max))
// summed in double (only the order of the sum differs, ~1e-15 relative), then round to fp32:
// they differ by about one fp32 ulp of |log p| (< 1e-5 for the |log p| < 100 used here).
constexpr float kLogprobTol = 1e-4f;

SamplingParams cpu_params(const TestRow& r) {
  SamplingParams sp;
  sp.temperature = r.params.temperature;
  sp.top_k = r.params.top_k;
  sp.top_p = r.params.top_p;
  sp.min_p = r.params.min_p;
  sp.repetition_penalty = r.params.repetition_penalty;
  sp.presence_penalty = r.params.presence_penalty;
  sp.frequency_penalty = r.params.frequency_penalty;
  sp.logit_bias = r.bias;
  sp.logprobs = r.params.logprobs;
  sp.seed = r.params.seed;
  return sp;
}

SampledToken cpu_sample(const TestRow& r) {
  Sampler s(cpu_params(r));
  return s.sample(r.logits, r.prompt, r.output);
}

// The CPU sampler's greedy token for the row with its penalties (temperature forced to 0).
int32_t cpu_greedy(const TestRow& r) {
  SamplingParams sp = cpu_params(r);
  sp.temperature = 0.0f;
  sp.logprobs = -1;
  Sampler s(sp);
  return s.sample(r.logits, r.prompt, r.output).id;
}

std::vector<float> random_logits(size_t n, std::mt19937_64& rng, float scale, int levels = 0) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<float> v(n);
  for (float& x : v) {
    x = u(rng);
    if (levels > 0) x = std::round(x * levels) / levels;  // few distinct values: many ties
    x *= scale;
  }
  return v;
}

void sprinkle(std::vector<float>& v, std::mt19937_64& rng, size_t count, float value) {
  std::uniform_int_distribution<size_t> pick(0, v.size() - 1);
  for (size_t j = 0; j < count; ++j) v[pick(rng)] = value;
}

bool same_float(float a, float b) {
  return (std::isnan(a) && std::isnan(b)) || std::memcmp(&a, &b, sizeof a) == 0;
}

bool close(float a, float b, float tol) {
  if (std::isinf(a) || std::isinf(b) || std::isnan(a) || std::isnan(b)) return same_float(a, b);
  return std::fabs(a - b) <= tol;
}

// Checks the GPU's logprob outputs for a row against a CPU SampledToken for the same chosen id.
void check_logprobs(const TestRow& r, const GpuResult& g, const SampledToken& cpu) {
  const int n = static_cast<int>(r.logits.size());
  if (r.params.logprobs >= 0) {
    INFO("chosen " << g.token << ": gpu logprob " << g.logprob << ", cpu " << cpu.logprob);
    CHECK(close(g.logprob, cpu.logprob, kLogprobTol));
  }
  if (r.params.logprobs >= 1) {
    const size_t m = std::min(r.params.logprobs, n);
    REQUIRE(cpu.top_logprobs.size() == m);
    for (size_t j = 0; j < static_cast<size_t>(kMaxTopLogprobs); ++j) {
      INFO("top entry " << j << " of " << m);
      if (j < m) {
        CHECK(g.top_ids[j] == cpu.top_logprobs[j].first);
        INFO("gpu " << g.top_logprobs[j] << ", cpu " << cpu.top_logprobs[j].second);
        CHECK(close(g.top_logprobs[j], cpu.top_logprobs[j].second, kLogprobTol));
      } else {
        CHECK(g.top_ids[j] == -1);
        CHECK(g.top_logprobs[j] == -kInf);
      }
    }
  }
}

std::string describe(const SamplingRowParams& p) {
  std::ostringstream os;
  os << "T=" << p.temperature << " top_k=" << p.top_k << " top_p=" << p.top_p
     << " min_p=" << p.min_p << " rep=" << p.repetition_penalty
     << " presence=" << p.presence_penalty << " freq=" << p.frequency_penalty
     << " logprobs=" << p.logprobs << " seed=" << p.seed << " step=" << p.step;
  return os.str();
}

// The kept set N of sampling.h, computed on the host from its definition with plain sorts and
// double sums, for rows without penalties (logit_bias allowed). `allowed` is a superset that
// absorbs rounding (fp32 exp on either side, fixed-point vs double sums): the nucleus target is
// raised by 1e-5 relative, min_p lowered by 1e-5 relative, and tokens whose weight is within
// 1e-5 of the last nucleus token's (from a different logit) are let in. Top-k needs no slack:
// its order is exact. strict_size is the exact definition's size.
struct KeptSet {
  std::vector<char> allowed;
  size_t allowed_size = 0;
  size_t strict_size = 0;
  std::vector<float> weight;  // w_i, 0 outside the top-k
};

KeptSet kept_set(const TestRow& r) {
  const size_t n = r.logits.size();
  std::vector<float> x(n);
  for (size_t i = 0; i < n; ++i) x[i] = std::isnan(r.logits[i]) ? -kInf : r.logits[i];
  for (const auto& [id, b] : r.bias) x[id] += b;
  float xmax = *std::max_element(x.begin(), x.end());
  REQUIRE(xmax > -kInf);
  if (xmax == kInf) {
    for (float& v : x) v = v == kInf ? 0.0f : -kInf;
    xmax = 0.0f;
  }
  const SamplingRowParams& p = r.params;
  const float inv_t = 1.0f / p.temperature;
  std::vector<int32_t> order(n);
  std::iota(order.begin(), order.end(), 0);
  std::sort(order.begin(), order.end(),
            [&](int32_t a, int32_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
  if (p.top_k > 0 && static_cast<size_t>(p.top_k) < n) order.resize(p.top_k);
  KeptSet out;
  out.weight.assign(n, 0.0f);
  double total = 0.0;
  for (int32_t i : order) total += (out.weight[i] = std::exp((x[i] - xmax) * inv_t));
  auto nucleus = [&](float min_p, double target, bool slack) {
    std::vector<int32_t> c;
    for (int32_t i : order)
      if (out.weight[i] > 0.0f && out.weight[i] >= min_p) c.push_back(i);
    std::sort(c.begin(), c.end(), [&](int32_t a, int32_t b) {
      const float wa = out.weight[a], wb = out.weight[b];
      return wa > wb || (wa == wb && a < b);
    });
    if (p.top_p >= 1.0f) return c;
    double acc = 0.0;
    size_t keep = c.size();
    for (size_t j = 0; j < c.size(); ++j) {
      acc += out.weight[c[j]];
      if (acc >= target) {
        keep = j + 1;
        break;
      }
    }
    if (slack && keep < c.size()) {
      const int32_t last = c[keep - 1];
      while (keep < c.size() && x[c[keep]] != x[last] &&
             out.weight[c[keep]] >= out.weight[last] * (1.0f - 1e-5f))
        ++keep;
    }
    c.resize(keep);
    return c;
  };
  const double target = static_cast<double>(p.top_p) * total;
  out.strict_size = nucleus(p.min_p, target, false).size();
  out.allowed.assign(n, 0);
  for (int32_t i : nucleus(p.min_p * (1.0f - 1e-5f), target * (1.0 + 1e-5), true))
    out.allowed[i] = 1, ++out.allowed_size;
  return out;
}

// Chi-square critical values at p = 1e-6 for 1..7 degrees of freedom: a correct sampler fails
// one of these checks about once in a million seeds (and the seeds here are fixed).
double chi2_critical(size_t dof) {
  static const double table[] = {23.93, 27.63, 30.66, 33.38, 35.89, 38.26, 40.52};
  REQUIRE(dof >= 1);
  REQUIRE(dof <= 7);
  return table[dof - 1];
}

// Draws `draws` tokens from one row (steps 0.., or seeds 0.. when vary_seed) and checks the
// counts against the kept set's renormalized weights by a chi-square test.
void check_distribution(const TestRow& base, int draws, bool vary_seed) {
  const KeptSet kept = kept_set(base);
  REQUIRE(kept.allowed_size == kept.strict_size);  // no rounding ambiguity in this row
  std::vector<TestRow> rows(draws, base);
  for (int d = 0; d < draws; ++d) (vary_seed ? rows[d].params.seed : rows[d].params.step) = d;
  const auto results = run_gpu(rows);
  const size_t n = base.logits.size();
  std::vector<int> counts(n, 0);
  for (const GpuResult& g : results) {
    REQUIRE(g.token >= 0);
    REQUIRE(static_cast<size_t>(g.token) < n);
    ++counts[g.token];
  }
  double kept_mass = 0.0;
  for (size_t i = 0; i < n; ++i)
    if (kept.allowed[i]) kept_mass += kept.weight[i];
  double chi2 = 0.0;
  std::ostringstream table;
  for (size_t i = 0; i < n; ++i) {
    const double expected = kept.allowed[i] ? draws * kept.weight[i] / kept_mass : 0.0;
    table << "token " << i << ": observed " << counts[i] << ", expected " << expected << "\n";
    if (expected == 0.0) {
      CHECK(counts[i] == 0);
    } else {
      chi2 += (counts[i] - expected) * (counts[i] - expected) / expected;
    }
  }
  INFO(describe(base.params) << (vary_seed ? " (seeds vary)" : " (steps vary)") << "\n"
                             << table.str() << "chi2 = " << chi2 << " with " << kept.strict_size - 1
                             << " dof");
  CHECK(chi2 < chi2_critical(kept.strict_size - 1));
}

TEST_CASE("sampling: Philox4x32-10 matches Random123's known answers", "[gpu][sampling]") {
  const auto a = philox4x32_10(0, 0, 0, 0, 0, 0);
  CHECK(a.v[0] == 0x6627e8d5u);
  CHECK(a.v[1] == 0xe169c58du);
  CHECK(a.v[2] == 0xbc57ac4cu);
  CHECK(a.v[3] == 0x9b00dbd8u);
  const auto b = philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  CHECK(b.v[0] == 0x408f276du);
  CHECK(b.v[3] == 0x6d5451fdu);
  const auto c =
      philox4x32_10(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u);
  CHECK(c.v[0] == 0xd16cfe09u);
  CHECK(c.v[1] == 0x94fdccebu);
  CHECK(c.v[2] == 0x5001e420u);
  CHECK(c.v[3] == 0x24126ea1u);
  // Exponentials are positive and finite, mean ≈ 1.
  double sum = 0.0;
  for (int i = 0; i < 10000; ++i) {
    const double e = sampling_exponential(7, 3, i);
    REQUIRE(e > 0.0);
    REQUIRE(std::isfinite(e));
    sum += e;
  }
  CHECK(sum / 10000 == Approx(1.0).margin(0.05));
}

TEST_CASE("sampling: greedy tokens and logprobs match the CPU sampler", "[gpu][sampling]") {
  std::mt19937_64 rng(20240601);
  const int logprobs_cycle[] = {-1, 0, 1, 5, 20, 3, 20, 0};
  for (int vocab : {1, 2, 3, 31, 1000, 1025, 4096, 32000, 128256}) {
    std::vector<TestRow> rows;
    for (int variant = 0; variant < 8; ++variant) {
      TestRow r;
      const size_t n = static_cast<size_t>(vocab);
      switch (variant) {
        case 0:
          r.logits = random_logits(n, rng, 5.0f);
          break;
        case 1:
          r.logits = random_logits(n, rng, 2.0f, 3);
          break;  // ties everywhere
        case 2:
          r.logits = random_logits(n, rng, 8.0f);
          if (n >= 4)
            sprinkle(r.logits, rng, n / 8 + 1, kNaN), sprinkle(r.logits, rng, n / 8 + 1, -kInf);
          break;
        case 3:
          r.logits = random_logits(n, rng, 3.0f);
          if (n >= 4) sprinkle(r.logits, rng, 2, kInf);
          break;
        case 4:
          r.logits.assign(n, 0.25f);
          break;  // all tied: token 0
        case 5:
          r.logits = random_logits(n, rng, 20.0f);
          break;
        case 6:
          r.logits = random_logits(n, rng, 1.0f, 1);
          break;  // {-1, 0, 1}
        default:
          r.logits = random_logits(n, rng, 4.0f);
          r.logits[n - 1] = 100.0f;  // best at the last id
          break;
      }
      r.params.temperature = variant == 5 ? 1e-6f : 0.0f;  // below the greedy threshold
      r.params.logprobs = logprobs_cycle[variant];
      r.params.seed = rng();
      r.params.step = variant;
      rows.push_back(r);
    }
    const auto gpu = run_gpu(rows);
    for (size_t i = 0; i < rows.size(); ++i) {
      INFO("vocab " << vocab << ", row " << i << ": " << describe(rows[i].params));
      const SampledToken cpu = cpu_sample(rows[i]);
      REQUIRE(gpu[i].token == cpu.id);
      check_logprobs(rows[i], gpu[i], cpu);
    }
  }
}

// Rows whose best tokens sit among ids [0, 64), where the prompt, output and bias ids fall, so
// the penalties often change the argmax.
std::vector<TestRow> penalty_rows(int vocab, int count, std::mt19937_64& rng) {
  const int hot = std::min(vocab, 64);
  std::uniform_int_distribution<int32_t> hot_id(0, hot - 1);
  std::uniform_int_distribution<int> len(0, 200);
  std::uniform_real_distribution<float> pm2(-2.0f, 2.0f), pm3(-3.0f, 3.0f);
  const float reps[] = {1.0f, 0.7f, 1.2f, 1.8f, 3.0f};
  std::vector<TestRow> rows;
  for (int k = 0; k < count; ++k) {
    TestRow r;
    r.logits = random_logits(static_cast<size_t>(vocab), rng, 3.0f, k % 3 == 0 ? 4 : 0);
    for (int i = 0; i < hot; ++i) r.logits[i] += 2.0f;
    if (k % 5 == 0) r.logits[hot_id(rng)] = kNaN;
    for (int j = len(rng); j > 0; --j) r.prompt.push_back(hot_id(rng));
    for (int j = len(rng) / 4; j > 0; --j) r.output.push_back(hot_id(rng));
    for (int j = static_cast<int>(rng() % 9); j > 0; --j)
      r.bias.emplace_back(hot_id(rng), k % 7 == 0 ? -100.0f : pm3(rng));
    if (k % 11 == 0 && !r.bias.empty()) r.bias.emplace_back(r.bias.front().first, 0.5f);  // repeat
    r.params.repetition_penalty = reps[k % 5];
    r.params.presence_penalty = k % 4 == 1 ? 0.0f : pm2(rng);
    r.params.frequency_penalty = k % 4 == 2 ? 0.0f : pm2(rng);
    r.params.temperature = 0.0f;
    r.params.logprobs = k % 3 == 0 ? 2 : -1;
    r.params.seed = rng();
    r.params.step = static_cast<uint64_t>(k);
    rows.push_back(std::move(r));
  }
  return rows;
}

int32_t raw_argmax(const std::vector<float>& v) {
  int32_t best = 0;
  for (size_t i = 1; i < v.size(); ++i)
    if (v[i] > v[best] || std::isnan(v[best])) best = static_cast<int32_t>(i);
  return best;
}

TEST_CASE("sampling: penalties and logit bias give the CPU sampler's greedy tokens",
          "[gpu][sampling]") {
  std::mt19937_64 rng(77);
  for (int vocab : {50, 1000, 128256}) {
    const auto rows = penalty_rows(vocab, 48, rng);
    const auto gpu = run_gpu(rows);
    int changed = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      INFO("vocab " << vocab << ", row " << i << ": " << describe(rows[i].params) << ", prompt "
                    << rows[i].prompt.size() << " ids, output " << rows[i].output.size()
                    << " ids, bias " << rows[i].bias.size() << " entries");
      const SampledToken cpu = cpu_sample(rows[i]);
      REQUIRE(gpu[i].token == cpu.id);
      check_logprobs(rows[i], gpu[i], cpu);
      changed += cpu.id != raw_argmax(rows[i].logits);
    }
    INFO("vocab " << vocab << ": penalties changed the argmax in " << changed << " of 48 rows");
    CHECK(changed >= 12);  // the test exercises the penalties, not just the raw argmax
  }
}

TEST_CASE("sampling: top_k = 1 draws the greedy token at any temperature", "[gpu][sampling]") {
  std::mt19937_64 rng(5);
  std::uniform_real_distribution<float> temp(0.2f, 3.0f), unit(0.05f, 1.0f);
  for (int vocab : {1000, 128256}) {
    auto rows = penalty_rows(vocab, 64, rng);
    for (size_t i = 0; i < rows.size(); ++i) {
      rows[i].params.temperature = temp(rng);
      rows[i].params.top_k = 1;
      if (i % 2) rows[i].params.top_p = unit(rng);
      if (i % 3) rows[i].params.min_p = unit(rng) * 0.5f;
      rows[i].params.step = rng();
    }
    const auto gpu = run_gpu(rows);
    for (size_t i = 0; i < rows.size(); ++i) {
      INFO("vocab " << vocab << ", row " << i << ": " << describe(rows[i].params));
      CHECK(gpu[i].token == cpu_greedy(rows[i]));
    }
  }
}

TEST_CASE("sampling: top-k, top-p and min-p never draw outside the kept set", "[gpu][sampling]") {
  struct Config {
    float temperature;
    int top_k;
    float top_p, min_p;
  };
  const Config configs[] = {
      {1.0f, 10, 1.0f, 0.0f},  {0.7f, 0, 0.9f, 0.0f},       {1.5f, 0, 1.0f, 0.05f},
      {1.0f, 50, 0.8f, 0.01f}, {0.5f, 3, 1.0f, 0.0f},       {2.0f, 0, 0.5f, 0.0f},
      {1.0f, 0, 0.95f, 0.1f},  {1.0f, 1 << 30, 0.3f, 0.0f},
  };
  constexpr int kSteps = 24;
  std::mt19937_64 rng(99);
  for (int vocab : {7, 1000, 128256}) {
    for (int variant = 0; variant < 2; ++variant) {
      // Variant 0: continuous logits; variant 1: four levels, so the top-k and nucleus
      // boundaries fall inside groups of tied tokens (resolved by the lower id).
      const auto logits = random_logits(static_cast<size_t>(vocab), rng, vocab > 7 ? 6.0f : 2.0f,
                                        variant == 0 ? 0 : 4);
      std::vector<TestRow> rows;
      for (const Config& c : configs) {
        TestRow r;
        r.logits = logits;
        r.params.temperature = c.temperature;
        r.params.top_k = c.top_k;
        r.params.top_p = c.top_p;
        r.params.min_p = c.min_p;
        r.params.seed = rng();
        if (variant == 1) r.bias = {{vocab - 1, 1.5f}, {vocab / 2, 0.3f}, {vocab / 2, -0.1f}};
        for (int s = 0; s < kSteps; ++s) {
          r.params.step = static_cast<uint64_t>(s) * 1000 + 17;
          rows.push_back(r);
        }
      }
      const auto gpu = run_gpu(rows);
      for (size_t ci = 0; ci < std::size(configs); ++ci) {
        const TestRow& r = rows[ci * kSteps];
        const KeptSet kept = kept_set(r);
        std::set<int32_t> drawn;
        for (int s = 0; s < kSteps; ++s) {
          const GpuResult& g = gpu[ci * kSteps + s];
          INFO("vocab " << vocab << ", variant " << variant << ", " << describe(r.params)
                        << ", step " << s << ": token " << g.token << "; kept set "
                        << kept.strict_size << " tokens (" << kept.allowed_size
                        << " with rounding slack)");
          REQUIRE(g.token >= 0);
          REQUIRE(g.token < vocab);
          CHECK(kept.allowed[g.token]);
          drawn.insert(g.token);
        }
        // The host's kept set agrees with the CPU sampler: its draws stay inside too.
        for (int s = 0; s < 8; ++s) {
          TestRow cr = r;
          cr.params.seed = rng();
          const int32_t id = cpu_sample(cr).id;
          INFO("CPU sampler drew " << id << " with " << describe(r.params));
          CHECK(kept.allowed[id]);
        }
        double kept_mass = 0.0, top_mass = 0.0;
        for (int i = 0; i < vocab; ++i)
          if (kept.allowed[i])
            kept_mass += kept.weight[i], top_mass = std::max<double>(top_mass, kept.weight[i]);
        if (kept.strict_size >= 8 && top_mass < 0.5 * kept_mass) {
          INFO("GPU drew only " << drawn.size() << " distinct tokens of a kept set of "
                                << kept.strict_size << " with " << describe(r.params));
          CHECK(drawn.size() >= 2);
        }
      }
    }
  }
}

TEST_CASE("sampling: draws follow the renormalized softmax over 20k steps", "[gpu][sampling]") {
  TestRow base;
  base.logits = {1.0f, 0.5f, 0.2f, -0.3f, 2.0f, -1.0f, 0.0f, 1.5f};
  base.params.seed = 12345;
  SECTION("temperature only") {
    base.params.temperature = 0.8f;
    check_distribution(base, 20000, false);
  }
  SECTION("temperature only, seeds varying") {
    base.params.temperature = 1.3f;
    check_distribution(base, 20000, true);
  }
  SECTION("top-k, top-p and min-p renormalize over the kept tokens") {
    // w = exp((x - 2) / 1.2); top-6 drops ids 3 and 5; the nucleus at 0.85 of the top-6 mass
    // keeps ids 4, 7, 0, 1 (cumulative 0.750 → 0.852 of it); min_p = 0.05 removes nothing more.
    base.params.temperature = 1.2f;
    base.params.top_k = 6;
    base.params.top_p = 0.85f;
    base.params.min_p = 0.05f;
    const KeptSet kept = kept_set(base);
    REQUIRE(kept.strict_size == 4);
    check_distribution(base, 20000, false);
  }
  SECTION("min-p alone") {
    base.params.temperature = 1.0f;
    base.params.min_p = 0.25f;  // keeps w >= 0.25 w_max: ids 4, 7, 0 (id 1 has w = 0.22)
    check_distribution(base, 20000, false);
  }
}

TEST_CASE("sampling: the draw is the documented exponential race", "[gpu][sampling]") {
  // The host replays the race of sampling.h (w_i / E_i, E from sampling_exponential) for rows
  // without top-p / min-p, whose kept set has no rounding ambiguity. fp32 exp may differ by an
  // ulp between host and device, which can flip a near-tie of two scores: allow one such case.
  std::mt19937_64 rng(31337);
  std::uniform_real_distribution<float> temp(0.3f, 2.0f);
  const int top_ks[] = {0, 5, 50};
  std::vector<TestRow> rows;
  const auto logits = random_logits(1000, rng, 4.0f);
  for (int k = 0; k < 512; ++k) {
    TestRow r;
    r.logits = logits;
    r.params.temperature = temp(rng);
    r.params.top_k = top_ks[k % 3];
    r.params.seed = rng();
    r.params.step = rng() % 100000;
    rows.push_back(r);
  }
  const auto gpu = run_gpu(rows);
  int mismatches = 0;
  for (size_t k = 0; k < rows.size(); ++k) {
    const KeptSet kept = kept_set(rows[k]);
    int32_t best = -1;
    double best_score = -1.0;
    for (int32_t i = 0; i < 1000; ++i) {
      if (!kept.allowed[i]) continue;
      const double score =
          kept.weight[i] / sampling_exponential(rows[k].params.seed, rows[k].params.step, i);
      if (score > best_score) best_score = score, best = i;
    }
    if (gpu[k].token != best) {
      ++mismatches;
      WARN("row " << k << " (" << describe(rows[k].params) << "): GPU " << gpu[k].token
                  << ", host race " << best);
    }
  }
  CHECK(mismatches <= 1);
}

// A varied batch: greedy and sampled rows, penalties, bias, logprobs.
std::vector<TestRow> mixed_rows(int vocab, int count, std::mt19937_64& rng) {
  auto rows = penalty_rows(vocab, count, rng);
  std::uniform_real_distribution<float> temp(0.3f, 2.0f), unit(0.1f, 1.0f);
  for (size_t i = 0; i < rows.size(); ++i) {
    SamplingRowParams& p = rows[i].params;
    if (i % 4 != 0) p.temperature = temp(rng);
    if (i % 3 == 1) p.top_k = 1 + static_cast<int>(rng() % 40);
    if (i % 5 == 2) p.top_p = unit(rng);
    if (i % 7 == 3) p.min_p = unit(rng) * 0.2f;
    p.logprobs = static_cast<int>(i % 6) - 1;
    p.step = rng() % 1000;
  }
  return rows;
}

void require_same(const GpuResult& a, const GpuResult& b) {
  REQUIRE(a.token == b.token);
  REQUIRE(same_float(a.logprob, b.logprob));
  REQUIRE(a.top_ids == b.top_ids);
  for (int j = 0; j < kMaxTopLogprobs; ++j)
    REQUIRE(same_float(a.top_logprobs[j], b.top_logprobs[j]));
}

TEST_CASE("sampling: same (seed, step) gives the same token whatever the batch",
          "[gpu][sampling]") {
  std::mt19937_64 rng(4242);
  const auto rows = mixed_rows(4096, 64, rng);
  const auto first = run_gpu(rows);
  SECTION("run twice") {
    const auto second = run_gpu(rows);
    for (size_t i = 0; i < rows.size(); ++i) {
      INFO("row " << i << ": " << describe(rows[i].params));
      require_same(first[i], second[i]);
    }
  }
  SECTION("batch order reversed and shuffled") {
    std::vector<size_t> perm(rows.size());
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    std::vector<TestRow> shuffled;
    for (size_t i : perm) shuffled.push_back(rows[i]);
    const auto out = run_gpu(shuffled);
    for (size_t j = 0; j < perm.size(); ++j) {
      INFO("row " << perm[j] << " at position " << j << ": " << describe(rows[perm[j]].params));
      require_same(out[j], first[perm[j]]);
    }
  }
  SECTION("each row alone") {
    for (size_t i = 0; i < rows.size(); ++i) {
      INFO("row " << i << ": " << describe(rows[i].params));
      require_same(run_gpu({rows[i]})[0], first[i]);
    }
  }
  SECTION("a processed copy of the row gives the same result as the logits read directly") {
    std::vector<TestRow> plain = rows, copied;
    for (TestRow& r : plain) r.prompt.clear(), r.output.clear(), r.bias.clear();
    copied = plain;
    for (TestRow& r : copied) r.bias = {{0, 0.0f}};  // a no-op entry forces the copy
    const auto with = run_gpu(copied, true);
    const auto without = run_gpu(plain, false);
    for (size_t i = 0; i < plain.size(); ++i) {
      INFO("row " << i << ": " << describe(plain[i].params));
      require_same(with[i], without[i]);
    }
  }
  SECTION("different steps and different seeds draw different tokens") {
    TestRow flat;
    flat.logits.assign(100, 0.0f);
    flat.params.seed = 1;
    std::vector<TestRow> by_step(50, flat), by_seed(50, flat);
    for (int k = 0; k < 50; ++k) by_step[k].params.step = k, by_seed[k].params.seed = k;
    std::set<int32_t> steps, seeds;
    for (const auto& g : run_gpu(by_step)) steps.insert(g.token);
    for (const auto& g : run_gpu(by_seed)) seeds.insert(g.token);
    CHECK(steps.size() >= 20);  // 50 uniform draws from 100 tokens: ~40 distinct
    CHECK(seeds.size() >= 20);
  }
}

TEST_CASE("sampling: non-finite rows", "[gpu][sampling]") {
  TestRow r;
  r.logits.assign(64, 1.0f);
  r.logits[3] = r.logits[7] = r.logits[11] = kInf;
  r.logits[5] = kNaN;
  r.params.logprobs = 2;
  SECTION("+inf tokens share the mass") {
    std::vector<TestRow> rows(300, r);
    for (int k = 0; k < 300; ++k) rows[k].params.step = k;
    std::map<int32_t, int> counts;
    for (const auto& g : run_gpu(rows)) {
      ++counts[g.token];
      CHECK(g.logprob == Approx(-std::log(3.0)).margin(1e-6));
      CHECK(g.top_ids[0] == 3);
      CHECK(g.top_ids[1] == 7);
      CHECK(g.top_ids[2] == -1);
    }
    CHECK(counts.size() == 3);
    CHECK(counts[3] > 50);
    CHECK(counts[7] > 50);
    CHECK(counts[11] > 50);
  }
  SECTION("greedy takes the lowest +inf id") {
    r.params.temperature = 0.0f;
    const auto g = run_gpu({r})[0];
    CHECK(g.token == 3);
    check_logprobs(r, g, cpu_sample(r));
  }
  SECTION("nothing to draw from gives -1") {
    r.logits.assign(64, -kInf);
    r.logits[9] = kNaN;
    for (float t : {0.0f, 1.0f}) {
      r.params.temperature = t;
      const auto g = run_gpu({r})[0];
      CHECK(g.token == -1);
      CHECK(std::isnan(g.logprob));
      CHECK_THROWS_AS(cpu_sample(r), std::runtime_error);
    }
  }
}

TEST_CASE("sampling: bad arguments throw std::invalid_argument", "[gpu][sampling]") {
  DeviceArray<float> logits(8);
  DeviceArray<SamplingRowParams> params(1);
  DeviceArray<int32_t> tokens(1), offsets(2), top_ids(kMaxTopLogprobs);
  DeviceArray<SamplingBiasEntry> bias(1);
  SamplingBatch b;
  b.logits = logits.data();
  b.rows = 1;
  b.vocab = 8;
  b.params = params.data();
  b.tokens = tokens.data();
  auto bad = [&](SamplingBatch x, void* ws = nullptr, size_t bytes = 0) {
    CHECK_THROWS_AS(sample(x, ws, bytes, nullptr), std::invalid_argument);
  };
  SamplingBatch x = b;
  x.vocab = 0;
  bad(x);
  x = b, x.rows = -1;
  bad(x);
  x = b, x.logits = nullptr;
  bad(x);
  x = b, x.tokens = nullptr;
  bad(x);
  x = b, x.params = nullptr;
  bad(x);
  x = b, x.top_ids = top_ids.data();  // without top_logprobs
  bad(x);
  x = b, x.bias_offsets = offsets.data();  // without entries
  bad(x);
  x.bias_entries = bias.data();  // without a workspace
  bad(x);
  DeviceBuffer small(sampling_workspace_bytes(1, 8) - 4);
  bad(x, small.get(), small.bytes());
  x = b, x.rows = 0, x.logits = nullptr;  // an empty batch is a no-op
  CHECK_NOTHROW(sample(x, nullptr, 0, nullptr));
}

}  // namespace
}  // namespace arbor::cuda
