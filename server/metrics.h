// Prometheus metrics for GET /metrics, named like vLLM's (arbor:...): engine gauges and
// counters from EngineStats, plus latency histograms and finish-reason counters that the
// HTTP handlers observe per request. Thread-safe.
#pragma once

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "engine/engine.h"

namespace arbor {

class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds);
  void observe(double v);
  // Appends the _bucket/_sum/_count lines for `name` with `labels` (e.g. model_name="x").
  void render(std::string& out, const std::string& name, const std::string& labels) const;

 private:
  std::vector<double> bounds_;
  std::vector<uint64_t> counts_;  // per bucket (not cumulative); last one is +Inf
  double sum_ = 0;
  uint64_t count_ = 0;
};

// A Prometheus label value, escaped as the text format wants (\\, \", \n).
std::string prometheus_label_value(const std::string& value);

// Per HTTP request (once, whatever its n or number of prompts): queue_s from arrival to the
// first time the engine scheduled one of its sequences, ttft_s to its first token (negative:
// not reached, not observed), e2e_s to its last sequence's end; inter_token_s holds the gaps
// of all its sequences; finish is one reason for the whole request ("error" if a sequence
// failed, else "abort" if one was aborted, else "length" if one hit a limit, else "stop").
class ServerMetrics {
 public:
  ServerMetrics();
  void observe_request(double queue_s, double ttft_s, double e2e_s,
                       const std::vector<double>& inter_token_s, const std::string& finish);
  // http_in_flight: generation requests the HTTP handlers are serving.
  std::string render(const EngineStats& stats, const std::string& model_name,
                     int http_in_flight) const;

 private:
  mutable std::mutex mu_;
  Histogram ttft_, itl_, e2e_, queue_;
  std::map<std::string, uint64_t> finished_;
};

}  // namespace arbor
