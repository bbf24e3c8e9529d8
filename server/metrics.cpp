#include "server/metrics.h"

#include <algorithm>
#include <cstdio>

namespace arbor {

Histogram::Histogram(std::vector<double> bounds)
    : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}

void Histogram::observe(double v) {
  const size_t i = std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin();
  ++counts_[i];
  sum_ += v;
  ++count_;
}

void Histogram::render(std::string& out, const std::string& name, const std::string& labels) const {
  uint64_t cum = 0;
  char buf[64];
  for (size_t i = 0; i <= bounds_.size(); ++i) {
    cum += counts_[i];
    if (i < bounds_.size()) std::snprintf(buf, sizeof buf, "%g", bounds_[i]);
    out += name + "_bucket{" + labels + ",le=\"" + (i < bounds_.size() ? buf : "+Inf") + "\"} " +
           std::to_string(cum) + "\n";
  }
  std::snprintf(buf, sizeof buf, "%.9g", sum_);
  out += name + "_sum{" + labels + "} " + buf + "\n";
  out += name + "_count{" + labels + "} " + std::to_string(count_) + "\n";
}

namespace {
std::vector<double> latency_buckets() {
  return {0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75,
          1.0,   2.5,   5.0,  7.5,  10,   20,   40,   80,  160,  640};
}
}  // namespace

ServerMetrics::ServerMetrics()
    : ttft_(latency_buckets()),
      itl_(latency_buckets()),
      e2e_(latency_buckets()),
      queue_(latency_buckets()) {
  for (const char* r : {"stop", "length", "abort", "error"}) finished_[r] = 0;
}

void ServerMetrics::observe_request(double queue_s, double ttft_s, double e2e_s,
                                    const std::vector<double>& inter_token_s,
                                    const std::string& finish) {
  std::lock_guard lock(mu_);
  if (queue_s >= 0) queue_.observe(queue_s);
  if (ttft_s >= 0) ttft_.observe(ttft_s);
  e2e_.observe(e2e_s);
  for (double t : inter_token_s) itl_.observe(t);
  ++finished_[finish];
}

std::string prometheus_label_value(const std::string& v) {
  std::string out;
  out.reserve(v.size());
  for (const char c : v) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '"')
      out += "\\\"";
    else if (c == '\n')
      out += "\\n";
    else
      out += c;
  }
  return out;
}

std::string ServerMetrics::render(const EngineStats& s, const std::string& model_name,
                                  int http_in_flight) const {
  const std::string l = "model_name=\"" + prometheus_label_value(model_name) + "\"";
  std::string out;
  char buf[64];
  auto metric = [&](const char* name, const char* type, const char* help, double v) {
    std::snprintf(buf, sizeof buf, "%.9g", v);
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " " + type + "\n" +
           name + "{" + l + "} " + buf + "\n";
  };
  metric("arbor:num_requests_running", "gauge", "Sequences in the running batch.", s.num_running);
  metric("arbor:num_requests_waiting", "gauge", "Sequences waiting to be scheduled.",
         s.num_waiting);
  metric("arbor:num_requests_unfinished", "gauge",
         "Engine requests not finished yet (queued, waiting or running).", s.num_requests);
  metric("arbor:http_requests_in_flight", "gauge",
         "Generation requests whose HTTP handler has not returned yet.", http_in_flight);
  metric("arbor:kv_cache_usage_perc", "gauge", "Fraction of KV-cache blocks in use (0-1).",
         s.kv_usage);
  metric("arbor:kv_cache_used_blocks", "gauge", "KV-cache blocks referenced by sequences.",
         s.kv.used_blocks);
  metric("arbor:kv_cache_free_blocks", "gauge",
         "KV-cache blocks that can be allocated (free or evictable prefix-cache blocks).",
         s.kv.free_blocks);
  metric("arbor:kv_cache_total_blocks", "gauge", "KV-cache blocks in all.", s.kv.num_blocks);
  metric("arbor:prefix_cache_hit_rate", "gauge", "Prefix-cache hit rate (0-1).", s.prefix_hit_rate);
  metric("arbor:prompt_tokens_total", "counter", "Prompt tokens of added requests.",
         double(s.prompt_tokens_total));
  metric("arbor:generation_tokens_total", "counter", "Generated tokens.",
         double(s.generation_tokens_total));
  metric("arbor:num_preemptions_total", "counter", "Preempted sequences.",
         double(s.preemptions_total));
  std::lock_guard lock(mu_);
  auto hist = [&](const char* name, const char* help, const Histogram& h) {
    out += std::string("# HELP ") + name + " " + help + "\n# TYPE " + name + " histogram\n";
    h.render(out, name, l);
  };
  hist("arbor:time_to_first_token_seconds", "Time to first token.", ttft_);
  hist("arbor:inter_token_latency_seconds", "Time between generated tokens.", itl_);
  hist("arbor:e2e_request_latency_seconds", "End-to-end request latency.", e2e_);
  hist("arbor:request_queue_time_seconds",
       "Time from arrival to the first time the engine scheduled the request.", queue_);
  out +=
      "# HELP arbor:request_success_total Finished requests by finish reason (one per HTTP "
      "request, whatever its n).\n"
      "# TYPE arbor:request_success_total counter\n";
  for (const auto& [reason, n] : finished_)
    out += "arbor:request_success_total{" + l + ",finished_reason=\"" + reason + "\"} " +
           std::to_string(n) + "\n";
  return out;
}

}  // namespace arbor
