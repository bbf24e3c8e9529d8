// Where the time of a decode-attention layer goes, from the block timelines of a traced
// build (DecodeAttentionParams::trace, built with ARBOR_DECODE_TRACE=1): each block records
// clock64() at its phases and %globaltimer at its start and end. Cycle counters are per SM
// and not aligned with each other; the analysis maps every SM's cycles to the global timer
// (one shared rate, one offset per SM, by least squares over all of a replay's blocks), so
// that phases of blocks on different SMs can be compared even where the global timer ticks
// coarsely (it averages out over the many blocks of a replay).
//
// Per layer of a graph of back-to-back launches, the critical path is split into:
//   release   the earliest return of griddepcontrol.wait among the layer's blocks (the
//             previous layer has completed);
//   compute   release -> the critical block's steps done (the critical block: the merger
//             that wrote the output last, or the last block of a one-split launch);
//             started: how long before the release the critical block started (lead is
//             the median block's); within compute, loaded: release -> the data its thread
//             0's warp requested before the wait is in shared memory (prologue tiles or the
//             ring's first steps; none with register loads);
//   publish   its partial stored (or the output, with one split);
//   arrive    its arrival counted (the atomic after the partials);
//   merge     the merge it ran (the group's, or all partials with one level);
//   level2    second arrival and the merge of the groups (two-level merges only);
//   exit      -> the block's last instruction;
//   handoff   the layer's last block end -> the next layer's release;
//   last%     not a time: the share of layers (percent) whose critical block's split holds the
//             sequence's last row (the last split used).
// Their sum is the period (release to release) up to the critical block's own release lag.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace arbor::bench {

// The median of v (NaN when empty); also the benchmark's own timing statistic.
double median(std::vector<double> v);

struct DecodeTraceSummary {
  // Medians over the layers of every replay added (layers with a previous and a next one),
  // microseconds.
  std::map<std::string, double> us;
  int layers = 0;            // layers the medians are over
  double timer_step_ns = 0;  // smallest step seen between distinct %globaltimer values
  double clock_ghz = 0;      // the fitted cycle rate of the SMs
};

class DecodeTraceAnalysis {
 public:
  // words_per_block: decode_attention_trace_words(); blocks_per_layer: the launch's grid size.
  DecodeTraceAnalysis(int words_per_block, int blocks_per_layer);

  // One replay of `layers` launches, layer after layer, each blocks_per_layer blocks of
  // words_per_block words. Throws std::invalid_argument if the sizes disagree or if the
  // trace holds too few blocks to fit the clocks.
  void add_replay(const std::vector<uint64_t>& words, int layers);

  DecodeTraceSummary summary() const;

  // Names of the per-layer quantities, in the order they are printed.
  static const std::vector<std::string>& columns();

 private:
  int words_per_block_, blocks_per_layer_;
  std::map<std::string, std::vector<double>> samples_;
  double timer_step_ns_ = 0;
  std::vector<double> clock_ghz_;
};

}  // namespace arbor::bench
