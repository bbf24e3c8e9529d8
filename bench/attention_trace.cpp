#include "bench/attention_trace.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <stdexcept>

#include "kernels/cuda/decode_attention.h"

namespace arbor::bench {

namespace {

using arbor::cuda::kDecodeAttentionTraceHeader;

// One block of one layer, its phases in global nanoseconds (NaN where not passed).
struct Block {
  uint32_t sm = 0, role = 0;
  double t[cuda::kTracePhases];
};

}  // namespace

double median(std::vector<double> v) {
  if (v.empty()) return std::nan("");
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

DecodeTraceAnalysis::DecodeTraceAnalysis(int words_per_block, int blocks_per_layer)
    : words_per_block_(words_per_block), blocks_per_layer_(blocks_per_layer) {
  if (words_per_block != kDecodeAttentionTraceHeader + cuda::kTracePhases) {
    throw std::invalid_argument("trace: " + std::to_string(words_per_block) +
                                " words per block, this analysis reads " +
                                std::to_string(kDecodeAttentionTraceHeader + cuda::kTracePhases));
  }
  if (blocks_per_layer <= 0) throw std::invalid_argument("trace: no blocks per layer");
}

const std::vector<std::string>& DecodeTraceAnalysis::columns() {
  static const std::vector<std::string> names = {
      "period", "lead",   "started", "loaded",  "compute", "publish", "arrive",
      "merge",  "level2", "exit",    "handoff", "spread",  "last%",   "sms"};
  return names;
}

void DecodeTraceAnalysis::add_replay(const std::vector<uint64_t>& words, int layers) {
  const size_t per_layer = size_t(blocks_per_layer_) * size_t(words_per_block_);
  if (layers <= 0 || words.size() != per_layer * size_t(layers)) {
    throw std::invalid_argument("trace: " + std::to_string(words.size()) + " words for " +
                                std::to_string(layers) + " layers of " + std::to_string(per_layer));
  }
  const auto rec = [&](int layer, int block) {
    return words.data() + size_t(layer) * per_layer + size_t(block) * size_t(words_per_block_);
  };
  const auto clk = [&](const uint64_t* r, int phase) {
    return r[kDecodeAttentionTraceHeader + phase];
  };
  const auto complete = [&](const uint64_t* r) {
    return r[1] != 0 && r[2] != 0 && clk(r, cuda::kTraceStart) != 0 && clk(r, cuda::kTraceEnd) != 0;
  };

  // The clock fit: global ns = offset[sm] + rate * cycles, from each block's (start, end)
  // pairs of (cycles, ns). The rate is shared (every SM runs the same clock); the offsets
  // are the per-SM means. Cycle counts are made relative to the first block's start, so
  // that the doubles keep their precision.
  const uint64_t* first = nullptr;
  for (int l = 0; l < layers && !first; ++l)
    for (int b = 0; b < blocks_per_layer_ && !first; ++b)
      if (complete(rec(l, b))) first = rec(l, b);
  if (!first) throw std::invalid_argument("trace: no block recorded its start and end");
  const double c0 = double(clk(first, cuda::kTraceStart)), g0 = double(first[1]);
  struct Sums {
    double n = 0, c = 0, g = 0, cc = 0, cg = 0;
  };
  std::map<uint32_t, Sums> per_sm;
  std::vector<uint64_t> timer_values;
  for (int l = 0; l < layers; ++l) {
    for (int b = 0; b < blocks_per_layer_; ++b) {
      const uint64_t* r = rec(l, b);
      if (!complete(r)) continue;
      Sums& s = per_sm[uint32_t(r[0])];
      for (int e = 0; e < 2; ++e) {
        const double c = double(clk(r, e ? cuda::kTraceEnd : cuda::kTraceStart)) - c0;
        const double g = double(r[1 + e]) - g0;
        s.n += 1;
        s.c += c;
        s.g += g;
        s.cc += c * c;
        s.cg += c * g;
        timer_values.push_back(r[1 + e]);
      }
    }
  }
  double num = 0, den = 0;
  for (const auto& [sm, s] : per_sm) {
    num += s.cg - s.c * s.g / s.n;
    den += s.cc - s.c * s.c / s.n;
  }
  if (!(den > 0) || !(num > 0)) {
    throw std::invalid_argument("trace: too few blocks per SM to fit the cycle counters");
  }
  const double rate = num / den;  // ns per cycle
  clock_ghz_.push_back(1.0 / rate);
  std::map<uint32_t, double> offset;
  for (const auto& [sm, s] : per_sm) offset[sm] = (s.g - rate * s.c) / s.n;

  std::sort(timer_values.begin(), timer_values.end());
  timer_values.erase(std::unique(timer_values.begin(), timer_values.end()), timer_values.end());
  double step = std::numeric_limits<double>::infinity();
  for (size_t i = 1; i < timer_values.size(); ++i)
    step = std::min(step, double(timer_values[i] - timer_values[i - 1]));
  if (std::isfinite(step) && (timer_step_ns_ == 0 || step < timer_step_ns_)) timer_step_ns_ = step;

  // Every layer's blocks in global ns.
  const double nan = std::nan("");
  std::vector<std::vector<Block>> layer_blocks(static_cast<size_t>(layers));
  for (int l = 0; l < layers; ++l) {
    for (int b = 0; b < blocks_per_layer_; ++b) {
      const uint64_t* r = rec(l, b);
      if (!complete(r)) continue;
      Block blk;
      blk.sm = uint32_t(r[0]);
      blk.role = uint32_t(r[0] >> 32);
      for (int p = 0; p < cuda::kTracePhases; ++p) {
        const uint64_t c = clk(r, p);
        blk.t[p] = c == 0 ? nan : offset[blk.sm] + rate * (double(c) - c0);
      }
      if (!(blk.role & cuda::kTraceIdle)) layer_blocks[size_t(l)].push_back(blk);
    }
  }
  std::vector<double> release(size_t(layers), nan), end(size_t(layers), nan);
  for (int l = 0; l < layers; ++l) {
    for (const Block& b : layer_blocks[size_t(l)]) {
      if (!std::isnan(b.t[cuda::kTraceReleased]))
        release[size_t(l)] = std::isnan(release[size_t(l)])
                                 ? b.t[cuda::kTraceReleased]
                                 : std::min(release[size_t(l)], b.t[cuda::kTraceReleased]);
      end[size_t(l)] = std::isnan(end[size_t(l)]) ? b.t[cuda::kTraceEnd]
                                                  : std::max(end[size_t(l)], b.t[cuda::kTraceEnd]);
    }
  }

  // Per layer with a previous and a next one (the first layer of a replay follows the host's
  // launch, not a kernel).
  for (int l = 1; l + 1 < layers; ++l) {
    const std::vector<Block>& blocks = layer_blocks[size_t(l)];
    if (blocks.empty() || std::isnan(release[size_t(l)]) || std::isnan(release[size_t(l + 1)]))
      continue;
    // The critical block: the merger that finished last, else the block that did.
    const Block* crit = nullptr;
    for (const bool mergers_only : {true, false}) {
      for (const Block& b : blocks) {
        if (mergers_only && !(b.role & cuda::kTraceFinalMerger)) continue;
        if (!crit || b.t[cuda::kTraceEnd] > crit->t[cuda::kTraceEnd]) crit = &b;
      }
      if (crit) break;
    }
    const double rel = release[size_t(l)];
    const auto span = [&](int from, int to) {
      const double a = crit->t[from], b = crit->t[to];
      return std::isnan(a) || std::isnan(b) ? 0.0 : (b - a) * 1e-3;
    };
    std::vector<double> starts, computed;
    for (const Block& b : blocks) {
      starts.push_back(b.t[cuda::kTraceStart]);
      if (!std::isnan(b.t[cuda::kTraceComputed])) computed.push_back(b.t[cuda::kTraceComputed]);
    }
    // The last phase the critical block passed before its end.
    int last = cuda::kTraceWritten;
    for (int p : {cuda::kTraceArrived, cuda::kTraceMerged, cuda::kTraceMerged2})
      if (!std::isnan(crit->t[p])) last = p;
    auto& s = samples_;
    s["period"].push_back((release[size_t(l + 1)] - rel) * 1e-3);
    s["lead"].push_back((rel - median(starts)) * 1e-3);
    s["started"].push_back((rel - crit->t[cuda::kTraceStart]) * 1e-3);
    // Not recorded by the register loads: no sample, so the column reads NaN.
    if (!std::isnan(crit->t[cuda::kTraceLoaded]))
      s["loaded"].push_back((crit->t[cuda::kTraceLoaded] - rel) * 1e-3);
    s["compute"].push_back((crit->t[cuda::kTraceComputed] - rel) * 1e-3);
    s["publish"].push_back(span(cuda::kTraceComputed, cuda::kTraceWritten));
    s["arrive"].push_back(span(cuda::kTraceWritten, cuda::kTraceArrived));
    s["merge"].push_back(span(cuda::kTraceArrived, cuda::kTraceMerged));
    s["level2"].push_back(span(cuda::kTraceMerged, cuda::kTraceMerged2));
    s["exit"].push_back(span(last, cuda::kTraceEnd));
    s["handoff"].push_back((release[size_t(l + 1)] - end[size_t(l)]) * 1e-3);
    s["last%"].push_back(crit->role & cuda::kTraceLastRow ? 100.0 : 0.0);
    // How many SMs the layer's working blocks ran on (fewer than blocks: some shared an SM).
    std::vector<uint32_t> sms;
    for (const Block& b : blocks) sms.push_back(b.sm);
    std::sort(sms.begin(), sms.end());
    s["sms"].push_back(double(std::unique(sms.begin(), sms.end()) - sms.begin()));
    s["spread"].push_back(computed.empty() ? 0.0
                                           : (*std::max_element(computed.begin(), computed.end()) -
                                              *std::min_element(computed.begin(), computed.end())) *
                                                 1e-3);
  }
}

DecodeTraceSummary DecodeTraceAnalysis::summary() const {
  DecodeTraceSummary out;
  for (const auto& [name, v] : samples_) {
    // A share, not a time: the mean of 100s and 0s.
    out.us[name] =
        name == "last%" ? std::accumulate(v.begin(), v.end(), 0.0) / double(v.size()) : median(v);
    out.layers = int(v.size());
  }
  out.timer_step_ns = timer_step_ns_;
  out.clock_ghz = median(clock_ghz_);
  return out;
}

}  // namespace arbor::bench
