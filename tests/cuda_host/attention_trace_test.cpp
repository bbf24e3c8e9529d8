// The decode-attention trace analysis (bench/attention_trace.h) on synthetic timelines with
// known phases: SMs whose cycle counters have different origins, a global timer exact or
// ticking every microsecond. The traced kernel itself runs on the GPU machine only.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "bench/attention_trace.h"
#include "kernels/cuda/decode_attention.h"

namespace {

using arbor::bench::DecodeTraceAnalysis;
namespace cu = arbor::cuda;

constexpr int kWords = cu::kDecodeAttentionTraceHeader + cu::kTracePhases;
constexpr int kBlocks = 4;  // splits of one (sequence, kv head); the last one merges
constexpr int kLayers = 24;
constexpr double kNsPerCycle = 0.625;  // 1.6 GHz

struct Sm {
  uint32_t id;
  double cycle_origin_ns;  // global time at which this SM's counter read 0
};
const Sm kSms[2] = {{3, -2.0e6}, {7, -7.3e9}};

// Phases of block b of a layer released at r (ns), as offsets from r; the start is 2 µs
// before the release; block 3 merges and is last (its split holds the sequence's last row in
// even layers: layers 1-22 of each replay are analysed, so in half of them). two_level: block 3
// merges its group (kTraceMerged), then arrives again and merges the groups, 700 ns later in all.
double phase_offset(int b, int phase, bool two_level) {
  const double computed = 800 + 20 * b;
  const bool merger = b == kBlocks - 1;
  switch (phase) {
    case cu::kTraceStart:
      return -2000;
    case cu::kTraceIssued:
      return -1900;
    case cu::kTraceReleased:
      return 10.0 * b;
    case cu::kTraceLoaded:
      return 300;
    case cu::kTraceComputed:
      return computed;
    case cu::kTraceWritten:
      return computed + 100;
    case cu::kTraceArrived:
      return computed + 700;
    case cu::kTraceMerged:
      return merger ? computed + 1600 : NAN;
    case cu::kTraceArrived2:
      return merger && two_level ? computed + 1900 : NAN;
    case cu::kTraceMerged2:
      return merger && two_level ? computed + 2300 : NAN;
    case cu::kTraceEnd:
      return computed + (merger ? (two_level ? 2350 : 1650) : 750);
    default:
      return NAN;
  }
}

struct Synthetic {
  std::vector<uint64_t> words;
  std::vector<double> periods_us;
};

// tick_ns: the global timer's resolution (it reads floor(t / tick) * tick).
Synthetic make_trace(double tick_ns, uint64_t seed, bool two_level = false) {
  Synthetic s;
  s.words.assign(size_t(kLayers) * kBlocks * kWords, 0);
  std::vector<double> release(kLayers);
  double r = 1.0e9;  // ns
  uint64_t state = seed;
  for (int l = 0; l < kLayers; ++l) {
    release[size_t(l)] = r;
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    r += 5000 + double(state >> 33) / double(1ull << 31) * 700;  // 5.0-5.7 µs periods
  }
  for (int l = 1; l + 1 < kLayers; ++l)
    s.periods_us.push_back((release[size_t(l + 1)] - release[size_t(l)]) * 1e-3);
  for (int l = 0; l < kLayers; ++l) {
    for (int b = 0; b < kBlocks; ++b) {
      const Sm& sm = kSms[b % 2];
      uint64_t* w = s.words.data() + (size_t(l) * kBlocks + size_t(b)) * kWords;
      // The merger's split holds the sequence's last row in even layers.
      const uint32_t last_row = l % 2 == 0 ? uint32_t(cu::kTraceLastRow) : 0u;
      const uint32_t role = b == kBlocks - 1
                                ? uint32_t(cu::kTraceFinalMerger) | last_row |
                                      (two_level ? uint32_t(cu::kTraceGroupMerger) : 0u)
                                : 0u;
      w[0] = sm.id | uint64_t(role) << 32;
      const auto timer = [&](double t) { return uint64_t(std::floor(t / tick_ns) * tick_ns); };
      w[1] = timer(release[size_t(l)] + phase_offset(b, cu::kTraceStart, two_level));
      w[2] = timer(release[size_t(l)] + phase_offset(b, cu::kTraceEnd, two_level));
      for (int p = 0; p < cu::kTracePhases; ++p) {
        const double off = phase_offset(b, p, two_level);
        if (std::isnan(off)) continue;
        const double t = release[size_t(l)] + off;
        w[cu::kDecodeAttentionTraceHeader + p] = uint64_t((t - sm.cycle_origin_ns) / kNsPerCycle);
      }
    }
  }
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : 0.5 * (v[v.size() / 2 - 1] + v[v.size() / 2]);
}

void check_breakdown(double tick_ns, double tolerance_us, bool two_level = false) {
  DecodeTraceAnalysis analysis(kWords, kBlocks);
  std::vector<double> periods;
  for (uint64_t seed : {1u, 2u, 3u}) {
    const Synthetic s = make_trace(tick_ns, seed, two_level);
    analysis.add_replay(s.words, kLayers);
    periods.insert(periods.end(), s.periods_us.begin(), s.periods_us.end());
  }
  const auto sum = analysis.summary();
  CHECK(sum.layers == 3 * (kLayers - 2));
  CHECK(sum.clock_ghz == Approx(1.0 / kNsPerCycle).epsilon(1e-3));
  const double period = median(periods);
  // Block 3 (the merger) is critical: computed 860 ns after the release, its partial 100
  // later, its arrival 600 after that, the merge 900, (two levels: the second arrival and
  // merge 700,) the exit 50; it ends 2.51 (3.21) µs after the release, so the handoff is the
  // rest of the period.
  const double level2 = two_level ? 0.7 : 0.0;
  const std::pair<const char*, double> expected[] = {{"period", period},
                                                     {"lead", 2.0},
                                                     {"started", 2.0},
                                                     {"loaded", 0.3},
                                                     {"compute", 0.86},
                                                     {"publish", 0.1},
                                                     {"arrive", 0.6},
                                                     {"merge", 0.9},
                                                     {"level2", level2},
                                                     {"exit", 0.05},
                                                     {"handoff", period - 2.51 - level2},
                                                     {"spread", 0.06},
                                                     {"last%", 50.0},
                                                     {"sms", 2.0}};  // kSms
  for (const auto& [name, us] : expected) {
    INFO(name << " tick " << tick_ns << " ns");
    REQUIRE(sum.us.count(name) == 1);
    CHECK(sum.us.at(name) == Approx(us).margin(tolerance_us));
  }
}

}  // namespace

TEST_CASE("trace analysis recovers the phases of a layer from cycle counters", "[trace]") {
  // An exact global timer: only the cycle quantization (0.625 ns) is left.
  check_breakdown(1.0, 0.005);
  CHECK(DecodeTraceAnalysis(kWords, kBlocks).summary().layers == 0);
}

TEST_CASE("trace analysis follows a two-level merge to its last merge", "[trace]") {
  check_breakdown(1.0, 0.005, /*two_level=*/true);
}

TEST_CASE("trace analysis aligns SMs with a coarse global timer", "[trace]") {
  // A 1 µs timer tick: the per-SM offsets are fitted over 96 (start, end) pairs each, to
  // within a few tens of nanoseconds.
  check_breakdown(1000.0, 0.1);
  DecodeTraceAnalysis analysis(kWords, kBlocks);
  analysis.add_replay(make_trace(1000.0, 9).words, kLayers);
  CHECK(analysis.summary().timer_step_ns == 1000.0);
}

TEST_CASE("trace analysis rejects traces it cannot read", "[trace]") {
  CHECK_THROWS_AS(DecodeTraceAnalysis(kWords - 1, kBlocks), std::invalid_argument);
  CHECK_THROWS_AS(DecodeTraceAnalysis(kWords, 0), std::invalid_argument);
  DecodeTraceAnalysis analysis(kWords, kBlocks);
  const Synthetic s = make_trace(1.0, 5);
  CHECK_THROWS_AS(analysis.add_replay(s.words, kLayers - 1), std::invalid_argument);
  const std::vector<uint64_t> empty(s.words.size(), 0);
  CHECK_THROWS_WITH(analysis.add_replay(empty, kLayers),
                    Catch::Contains("no block recorded its start and end"));
  // Cycle counters that do not advance with the global timer: no rate to fit.
  std::vector<uint64_t> stuck = s.words;
  for (size_t b = 0; b < stuck.size(); b += kWords)
    for (int p = 0; p < cu::kTracePhases; ++p)
      if (stuck[b + cu::kDecodeAttentionTraceHeader + p])
        stuck[b + cu::kDecodeAttentionTraceHeader + p] = 42;
  CHECK_THROWS_WITH(analysis.add_replay(stuck, kLayers), Catch::Contains("too few blocks"));
}
