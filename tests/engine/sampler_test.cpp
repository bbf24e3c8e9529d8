// Sampler: greedy, temperature draws, top-k/top-p/min-p, penalties, logit_bias, logprobs,
// seeding, validation and non-finite logits.
#include "engine/sampler.h"

#include <algorithm>
#include <array>
#include <catch2/catch.hpp>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "tests/test_util.h"

namespace arbor {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();
const std::vector<int32_t> kNoIds;

SamplingParams seeded(uint64_t seed = 1234) {
  SamplingParams p;
  p.seed = seed;
  return p;
}

SamplingParams greedy() {
  SamplingParams p = seeded();
  p.temperature = 0.0f;
  return p;
}

// Logits whose softmax is exactly `probs` (up to rounding).
std::vector<float> logits_from_probs(const std::vector<double>& probs) {
  std::vector<float> out;
  for (double p : probs) out.push_back(static_cast<float>(std::log(p)));
  return out;
}

// Relative frequency of each token over `draws` samples.
std::vector<double> frequencies(Sampler& s, const std::vector<float>& logits, int draws) {
  std::vector<double> freq(logits.size(), 0.0);
  for (int i = 0; i < draws; ++i) freq[s.sample(logits, kNoIds, kNoIds).id] += 1.0;
  for (double& f : freq) f /= draws;
  return freq;
}

std::vector<double> softmax(const std::vector<float>& logits, double temperature = 1.0) {
  double mx = *std::max_element(logits.begin(), logits.end());
  std::vector<double> p;
  double sum = 0.0;
  for (float x : logits) sum += std::exp((x - mx) / temperature);
  for (float x : logits) p.push_back(std::exp((x - mx) / temperature) / sum);
  return p;
}

int32_t pick(SamplingParams params, const std::vector<float>& logits,
             const std::vector<int32_t>& prompt = {}, const std::vector<int32_t>& output = {}) {
  Sampler s(std::move(params));
  return s.sample(logits, prompt, output).id;
}

}  // namespace

TEST_CASE("greedy picks the argmax, ties to the lowest id", "[sampler]") {
  REQUIRE(pick(greedy(), {0.1f, 2.0f, -3.0f, 1.9f}) == 1);
  REQUIRE(pick(greedy(), {1.0f, 5.0f, 5.0f, 5.0f}) == 1);
  REQUIRE(pick(greedy(), {-kInf, -kInf, -1e30f}) == 2);
  SamplingParams tiny = greedy();
  tiny.temperature = 1e-6f;  // below kGreedyTemperature: still greedy
  REQUIRE(pick(tiny, {0.0f, 0.0f, 0.5f, 0.4999f}) == 2);
  // Greedy over 128k random logits matches std::max_element.
  auto big = test::random_floats(128256, 7, -10.0f, 10.0f);
  REQUIRE(pick(greedy(), big) == std::max_element(big.begin(), big.end()) - big.begin());
}

TEST_CASE("temperature draws follow softmax(logits / T)", "[sampler]") {
  const std::vector<float> logits = {1.0f, 0.5f, 0.0f, -0.5f, -1.5f};
  for (float t : {1.0f, 0.5f, 2.0f}) {
    SamplingParams p = seeded(99);
    p.temperature = t;
    Sampler s(p);
    auto freq = frequencies(s, logits, 20000);
    auto expect = softmax(logits, t);
    // sd of a frequency over 20k draws is <= 0.0036; 0.015 is > 4 sd, and a wrong
    // temperature (e.g. T=1 for 0.5 or 2) moves token 0 by > 0.1.
    for (size_t i = 0; i < logits.size(); ++i) {
      INFO("T=" << t << " token " << i);
      REQUIRE(freq[i] == Approx(expect[i]).margin(0.015));
    }
  }
}

TEST_CASE("top_k restricts the support, and top_k=1 is greedy", "[sampler]") {
  const std::vector<float> logits = {0.3f, 1.0f, 0.9f, -0.2f, 0.95f, 0.1f};
  SamplingParams k1 = seeded();
  k1.top_k = 1;
  Sampler s1(k1);
  for (int i = 0; i < 200; ++i) REQUIRE(s1.sample(logits, kNoIds, kNoIds).id == 1);

  SamplingParams k3 = seeded();
  k3.top_k = 3;
  Sampler s3(k3);
  auto freq = frequencies(s3, logits, 20000);
  // Renormalized over {1, 4, 2}.
  std::vector<double> e = {std::exp(1.0), std::exp(0.95), std::exp(0.9)};
  double z = e[0] + e[1] + e[2];
  REQUIRE(freq[1] == Approx(e[0] / z).margin(0.015));
  REQUIRE(freq[4] == Approx(e[1] / z).margin(0.015));
  REQUIRE(freq[2] == Approx(e[2] / z).margin(0.015));
  REQUIRE(freq[0] + freq[3] + freq[5] == 0.0);

  // Ties at the top-k boundary keep the lower id; k >= vocab keeps everything.
  SamplingParams tie = seeded();
  tie.top_k = 2;
  Sampler st(tie);
  auto ft = frequencies(st, {0.0f, 1.0f, 0.0f, 0.0f}, 2000);
  REQUIRE(ft[0] > 0.0);
  REQUIRE(ft[2] + ft[3] == 0.0);
  SamplingParams all = seeded();
  all.top_k = 100;
  Sampler sa(all);
  auto fa = frequencies(sa, {0.0f, 0.0f, 0.0f}, 3000);
  for (double f : fa) REQUIRE(f == Approx(1.0 / 3).margin(0.05));
}

TEST_CASE("top_p keeps the smallest nucleus reaching top_p", "[sampler]") {
  const auto logits = logits_from_probs({0.15, 0.5, 0.05, 0.3});  // sorted: 1, 3, 0, 2
  auto support = [&](float top_p, int top_k = 0) {
    SamplingParams p = seeded();
    p.top_p = top_p;
    p.top_k = top_k;
    Sampler s(p);
    return frequencies(s, logits, 4000);
  };
  auto f = support(0.4f);  // 0.5 >= 0.4 already
  REQUIRE(f[1] == 1.0);
  f = support(0.7f);  // 0.5 < 0.7 <= 0.8
  REQUIRE(f[0] + f[2] == 0.0);
  REQUIRE(f[1] == Approx(0.5 / 0.8).margin(0.03));
  f = support(0.85f);  // 0.8 < 0.85 <= 0.95
  REQUIRE(f[2] == 0.0);
  REQUIRE(f[0] == Approx(0.15 / 0.95).margin(0.03));
  // After top_k=3 the probabilities renormalize to .526, .316, .158: now 0.83 needs only two.
  f = support(0.83f);
  REQUIRE(f[0] > 0.0);
  f = support(0.83f, 3);
  REQUIRE(f[0] + f[2] == 0.0);
  REQUIRE(f[1] + f[3] == 1.0);
}

TEST_CASE("top_p over a large vocabulary keeps exactly the nucleus", "[sampler]") {
  // 5000 tokens (enough for the histogram path): probabilities proportional to n - i. The nucleus
  // for top_p is the first m tokens with cumulative mass >= top_p; no draw may fall outside it.
  const int n = 5000;
  std::vector<double> w(n);
  double z = 0.0;
  for (int i = 0; i < n; ++i) z += (w[i] = n - i);
  std::vector<double> probs;
  for (double x : w) probs.push_back(x / z);
  auto logits = logits_from_probs(probs);
  std::reverse(logits.begin(), logits.end());  // best token last, to exercise the ordering
  const double top_p = 0.5;
  int m = 0;
  for (double cum = 0.0; cum < top_p;) cum += probs[m++];
  SamplingParams p = seeded();
  p.top_p = static_cast<float>(top_p);
  Sampler s(p);
  int max_rank = 0;
  for (int i = 0; i < 300; ++i)
    max_rank = std::max(max_rank, n - 1 - s.sample(logits, kNoIds, kNoIds).id);
  REQUIRE(max_rank < m);
  REQUIRE(max_rank >= m - 300);  // the tail of the nucleus is reached (~25 expected hits)
}

TEST_CASE("min_p keeps tokens with p >= min_p * p_max", "[sampler]") {
  const auto logits = logits_from_probs({0.05, 0.5, 0.15, 0.3});
  SamplingParams p = seeded();
  p.min_p = 0.25f;  // threshold 0.125
  Sampler s(p);
  auto f = frequencies(s, logits, 4000);
  REQUIRE(f[0] == 0.0);
  REQUIRE(f[2] == Approx(0.15 / 0.95).margin(0.03));
  p.min_p = 0.5f;  // threshold 0.25
  p.top_k = 4;     // same result through the top-k path
  Sampler s2(p);
  f = frequencies(s2, logits, 4000);
  REQUIRE(f[0] + f[2] == 0.0);
  REQUIRE(f[1] == Approx(0.5 / 0.8).margin(0.03));
  p.min_p = 1.0f;  // only the best
  p.top_k = 0;
  Sampler s3(p);
  REQUIRE(frequencies(s3, logits, 500)[1] == 1.0);
}

TEST_CASE("a seed makes draws reproducible", "[sampler]") {
  auto logits = test::random_floats(100, 3, -0.5f, 0.5f);
  auto run = [&](SamplingParams p) {
    Sampler s(std::move(p));
    std::vector<int32_t> ids;
    for (int i = 0; i < 50; ++i) ids.push_back(s.sample(logits, kNoIds, ids).id);
    return ids;
  };
  SamplingParams a = seeded(42);
  a.top_p = 0.9f;
  SamplingParams b = a;
  a.frequency_penalty = b.frequency_penalty = 0.1f;
  REQUIRE(run(a) == run(b));
  b.seed = 43;
  REQUIRE(run(a) != run(b));
  REQUIRE(run(SamplingParams{}) != run(SamplingParams{}));  // unseeded: random_device
}

TEST_CASE("repetition penalty divides positive and multiplies negative logits", "[sampler]") {
  SamplingParams p = greedy();
  p.repetition_penalty = 2.0f;
  // Token 0 seen: 3.0 → 1.5 < 2.0, so token 1 wins. Unpenalized, token 0 wins.
  REQUIRE(pick(greedy(), {3.0f, 2.0f}, {0}) == 0);
  REQUIRE(pick(p, {3.0f, 2.0f}, {0}) == 1);
  REQUIRE(pick(p, {3.0f, 2.0f}, {}, {0}) == 1);  // output tokens count too
  REQUIRE(pick(p, {3.0f, 1.4f}, {0}) == 0);      // 1.5 > 1.4
  // Applied once per distinct token, however often it repeats: 3 / 2 = 1.5 > 1.4.
  REQUIRE(pick(p, {3.0f, 1.4f}, {0, 0, 0}, {0, 0}) == 0);
  // Negative logits get multiplied: -1 → -2 < -1.5.
  REQUIRE(pick(p, {-1.0f, -1.5f}, {0}) == 1);
  REQUIRE(pick(p, {-1.0f, -2.1f}, {0}) == 0);
  // Penalty < 1 rewards: 1.0 / 0.5 = 2 > 1.9.
  p.repetition_penalty = 0.5f;
  REQUIRE(pick(p, {1.0f, 1.9f}, {0}) == 0);
}

TEST_CASE("presence and frequency penalties follow OpenAI", "[sampler]") {
  SamplingParams pres = greedy();
  pres.presence_penalty = 0.5f;
  // Output tokens only; subtracted once.
  REQUIRE(pick(pres, {1.0f, 0.6f}, {0}, {}) == 0);
  REQUIRE(pick(pres, {1.0f, 0.6f}, {}, {0}) == 1);        // 0.5 < 0.6
  REQUIRE(pick(pres, {1.0f, 0.4f}, {}, {0, 0, 0}) == 0);  // still 0.5 > 0.4
  SamplingParams freq = greedy();
  freq.frequency_penalty = 0.25f;
  REQUIRE(pick(freq, {1.0f, 0.4f}, {}, {0, 0}) == 0);     // 0.5 > 0.4
  REQUIRE(pick(freq, {1.0f, 0.4f}, {}, {0, 0, 0}) == 1);  // 0.25 < 0.4
  REQUIRE(pick(freq, {1.0f, 0.4f}, {0, 0, 0, 0}, {}) == 0);
  // Both: 1 - 3 * 0.25 - 0.5 = -0.25; negative penalties reward.
  SamplingParams both = greedy();
  both.frequency_penalty = 0.25f;
  both.presence_penalty = 0.5f;
  REQUIRE(pick(both, {1.0f, -0.2f}, {}, {0, 0, 0}) == 1);
  REQUIRE(pick(both, {1.0f, -0.3f}, {}, {0, 0, 0}) == 0);
  // Token 1 once: 0.55 - 0.25 - 0.5 = -0.2 > -0.25; 0.5 - 0.75 ties at -0.25 → lower id.
  REQUIRE(pick(both, {1.0f, 0.55f}, {}, {0, 1, 0, 0}) == 1);
  REQUIRE(pick(both, {1.0f, 0.5f}, {}, {0, 1, 0, 0}) == 0);
  SamplingParams reward = greedy();
  reward.presence_penalty = -0.5f;
  REQUIRE(pick(reward, {1.0f, 0.6f}, {}, {1}) == 1);
}

TEST_CASE("logit_bias forces and bans tokens", "[sampler]") {
  auto logits = test::random_floats(1000, 11, -5.0f, 5.0f);
  SamplingParams force = seeded();
  force.logit_bias = {{123, 100.0f}};
  Sampler sf(force);
  for (int i = 0; i < 100; ++i) REQUIRE(sf.sample(logits, kNoIds, kNoIds).id == 123);

  const int32_t best =
      static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  SamplingParams ban = greedy();
  ban.logit_bias = {{best, -100.0f}};
  REQUIRE(pick(ban, logits) != best);
  // Banning all but one token leaves only that one, even at high temperature.
  SamplingParams only = seeded();
  only.temperature = 2.0f;
  for (int32_t i = 0; i < 8; ++i)
    if (i != 5) only.logit_bias.emplace_back(i, -100.0f);
  Sampler so(only);
  for (int i = 0; i < 100; ++i)
    REQUIRE(so.sample(std::vector<float>(8, 0.0f), kNoIds, kNoIds).id == 5);
  // Bias applies before the repetition penalty: (1 + 3) / 2 = 2 < 2.5.
  SamplingParams order = greedy();
  order.logit_bias = {{0, 3.0f}};
  order.repetition_penalty = 2.0f;
  REQUIRE(pick(order, {1.0f, 2.5f}, {0}) == 1);
}

TEST_CASE("logprobs are log_softmax of the raw logits", "[sampler]") {
  auto logits = test::random_floats(5000, 21, -8.0f, 8.0f);
  logits[17] = logits[4000] = 9.5f;  // a tie at the top: lower id first
  std::vector<double> lp(logits.size());
  {
    double mx = 9.5, sum = 0.0;
    for (float x : logits) sum += std::exp(x - mx);
    for (size_t i = 0; i < logits.size(); ++i) lp[i] = logits[i] - mx - std::log(sum);
  }
  SamplingParams p = seeded();
  p.logprobs = 5;
  p.temperature = 0.7f;
  p.top_k = 20;
  p.logit_bias = {{3, 50.0f}};  // processing must not change the reported logprobs
  Sampler s(p);
  auto tok = s.sample(logits, kNoIds, kNoIds);
  REQUIRE(tok.id == 3);
  REQUIRE(tok.logprob == Approx(lp[3]).margin(1e-4));
  REQUIRE(tok.top_logprobs.size() == 5);
  REQUIRE(tok.top_logprobs[0].first == 17);
  REQUIRE(tok.top_logprobs[1].first == 4000);
  std::vector<int32_t> order(logits.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = static_cast<int32_t>(i);
  std::stable_sort(order.begin(), order.end(),
                   [&](int32_t a, int32_t b) { return logits[a] > logits[b]; });
  for (size_t r = 0; r < 5; ++r) {
    REQUIRE(tok.top_logprobs[r].first == order[r]);
    REQUIRE(tok.top_logprobs[r].second == Approx(lp[order[r]]).margin(1e-4));
  }

  SamplingParams none = greedy();
  Sampler sn(none);
  auto t0 = sn.sample(logits, kNoIds, kNoIds);
  REQUIRE(t0.top_logprobs.empty());
  none.logprobs = 0;
  Sampler sz(none);
  auto t1 = sz.sample(logits, kNoIds, kNoIds);
  REQUIRE(t1.id == 17);
  REQUIRE(t1.logprob == Approx(lp[17]).margin(1e-4));
  REQUIRE(t1.top_logprobs.empty());
  none.logprobs = 20;  // more than the vocabulary: all of it
  Sampler sv(none);
  REQUIRE(sv.sample(std::vector<float>{0.0f, 1.0f}, kNoIds, kNoIds).top_logprobs.size() == 2);
}

TEST_CASE("validate names the field, the value and the range", "[sampler]") {
  auto rejects = [](auto mutate, const std::string& field) {
    SamplingParams p;
    mutate(p);
    INFO("field " << field);
    REQUIRE_THROWS_WITH(p.validate(1000), Catch::Contains(field));
    REQUIRE_THROWS_AS(p.validate(1000), std::invalid_argument);
  };
  SamplingParams ok;
  ok.temperature = 0.0f;
  ok.top_k = -1;
  ok.min_p = 1.0f;
  ok.presence_penalty = -2.0f;
  ok.frequency_penalty = 2.0f;
  ok.logit_bias = {{0, -100.0f}, {999, 100.0f}};
  ok.logprobs = 20;
  REQUIRE_NOTHROW(ok.validate(1000));
  REQUIRE_NOTHROW(SamplingParams{}.validate(1000));
  const float nan = std::numeric_limits<float>::quiet_NaN();
  rejects([](SamplingParams& p) { p.temperature = -0.1f; }, "temperature");
  rejects([&](SamplingParams& p) { p.temperature = nan; }, "temperature");
  rejects([](SamplingParams& p) { p.temperature = kInf; }, "temperature");
  rejects([](SamplingParams& p) { p.top_k = -2; }, "top_k");
  rejects([](SamplingParams& p) { p.top_p = 0.0f; }, "top_p");
  rejects([](SamplingParams& p) { p.top_p = 1.01f; }, "top_p");
  rejects([&](SamplingParams& p) { p.top_p = nan; }, "top_p");
  rejects([](SamplingParams& p) { p.min_p = -0.1f; }, "min_p");
  rejects([](SamplingParams& p) { p.min_p = 1.5f; }, "min_p");
  rejects([](SamplingParams& p) { p.repetition_penalty = 0.0f; }, "repetition_penalty");
  rejects([](SamplingParams& p) { p.repetition_penalty = kInf; }, "repetition_penalty");
  rejects([](SamplingParams& p) { p.presence_penalty = 2.5f; }, "presence_penalty");
  rejects([](SamplingParams& p) { p.frequency_penalty = -2.5f; }, "frequency_penalty");
  rejects([](SamplingParams& p) { p.logit_bias = {{1000, 1.0f}}; }, "logit_bias");
  rejects([](SamplingParams& p) { p.logit_bias = {{-1, 1.0f}}; }, "logit_bias");
  rejects([](SamplingParams& p) { p.logit_bias = {{5, 101.0f}}; }, "logit_bias");
  rejects([](SamplingParams& p) { p.logprobs = 21; }, "logprobs");
  rejects([](SamplingParams& p) { p.logprobs = -2; }, "logprobs");

  SamplingParams bad;
  bad.top_p = 1.5f;
  REQUIRE_THROWS_WITH(bad.validate(10), Catch::Contains("1.5") && Catch::Contains("(0, 1]"));
  bad = SamplingParams{};
  bad.logit_bias = {{10, 0.0f}};
  REQUIRE_THROWS_WITH(bad.validate(10), Catch::Contains("10") && Catch::Contains("[0, 10)"));
}

TEST_CASE("non-finite logits never crash or get picked", "[sampler]") {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> with_nan = {nan, 0.0f, nan, -1.0f};
  REQUIRE(pick(greedy(), with_nan) == 1);
  SamplingParams hot = seeded();
  hot.temperature = 2.0f;
  hot.logprobs = 2;
  Sampler s(hot);
  for (int i = 0; i < 200; ++i) {
    auto t = s.sample(with_nan, kNoIds, kNoIds);
    REQUIRE((t.id == 1 || t.id == 3));
    REQUIRE(std::isfinite(t.logprob));
  }
  // +inf tokens take all the mass, shared equally.
  Sampler si(seeded());
  auto f = frequencies(si, {0.0f, kInf, 5.0f, kInf}, 2000);
  REQUIRE(f[1] + f[3] == 1.0);
  REQUIRE(f[1] == Approx(0.5).margin(0.05));
  // Nothing sampleable is the caller's bug: an exception, for greedy and sampling alike.
  for (SamplingParams p : {greedy(), seeded()}) {
    REQUIRE_THROWS_AS(pick(p, {nan, nan}), std::runtime_error);
    REQUIRE_THROWS_AS(pick(p, {-kInf, -kInf, nan}), std::runtime_error);
  }
  SamplingParams p = seeded();
  p.top_k = 1;
  REQUIRE_THROWS_AS(pick(p, {-kInf}), std::runtime_error);
  // Ids outside the row are rejected, not read.
  REQUIRE_THROWS_AS(pick(greedy(), {}), std::invalid_argument);
  SamplingParams rep = greedy();
  rep.repetition_penalty = 1.2f;
  REQUIRE_THROWS_AS(pick(rep, {0.0f, 1.0f}, {2}), std::invalid_argument);
  SamplingParams fr = greedy();
  fr.frequency_penalty = 1.0f;
  REQUIRE_THROWS_AS(pick(fr, {0.0f, 1.0f}, {}, {-1}), std::invalid_argument);
  SamplingParams lb = greedy();
  lb.logit_bias = {{2, 1.0f}};
  REQUIRE_THROWS_AS(pick(lb, {0.0f, 1.0f}), std::invalid_argument);
}

}  // namespace arbor
