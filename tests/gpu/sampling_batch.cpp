#include "tests/gpu/sampling_batch.h"

#include <catch2/catch.hpp>
#include <limits>

namespace arbor::cuda {

namespace {
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();  // the poisoned outputs
}  // namespace

std::vector<GpuResult> run_gpu(const std::vector<TestRow>& rows, bool with_lists) {
  const size_t n_rows = rows.size();
  const int vocab = static_cast<int>(rows.at(0).logits.size());
  std::vector<float> logits;
  std::vector<SamplingRowParams> params;
  std::vector<int32_t> pen_off{0}, bias_off{0};
  std::vector<SamplingPenaltyEntry> pen;
  std::vector<SamplingBiasEntry> bias;
  for (const TestRow& r : rows) {
    REQUIRE(static_cast<int>(r.logits.size()) == vocab);
    logits.insert(logits.end(), r.logits.begin(), r.logits.end());
    params.push_back(r.params);
    append_penalty_entries(r.prompt, r.output, pen);
    pen_off.push_back(static_cast<int32_t>(pen.size()));
    for (const auto& [id, b] : r.bias) bias.push_back({id, b});
    bias_off.push_back(static_cast<int32_t>(bias.size()));
  }
  if (!with_lists) REQUIRE((pen.empty() && bias.empty()));
  auto d_logits = to_device(logits);
  auto d_params = to_device(params);
  auto d_pen_off = to_device(pen_off);
  auto d_pen = to_device(pen);
  auto d_bias_off = to_device(bias_off);
  auto d_bias = to_device(bias);
  const size_t n_top = n_rows * kMaxTopLogprobs;
  auto d_tokens = to_device(std::vector<int32_t>(n_rows, -7));
  auto d_logprobs = to_device(std::vector<float>(n_rows, kNaN));
  auto d_top_ids = to_device(std::vector<int32_t>(n_top, -7));
  auto d_top_lps = to_device(std::vector<float>(n_top, kNaN));
  DeviceBuffer workspace(with_lists ? sampling_workspace_bytes(static_cast<int>(n_rows), vocab)
                                    : 0);

  SamplingBatch b;
  b.logits = d_logits.data();
  b.rows = static_cast<int>(n_rows);
  b.vocab = vocab;
  b.params = d_params.data();
  if (with_lists) {
    b.penalty_offsets = d_pen_off.data();
    b.penalty_entries = d_pen.data();
    b.bias_offsets = d_bias_off.data();
    b.bias_entries = d_bias.data();
  }
  b.tokens = d_tokens.data();
  b.logprobs = d_logprobs.data();
  b.top_ids = d_top_ids.data();
  b.top_logprobs = d_top_lps.data();
  sample(b, workspace.get(), workspace.bytes(), nullptr);
  CUDA_CHECK(cudaStreamSynchronize(nullptr));

  const auto tokens = to_host(d_tokens, n_rows);
  const auto lps = to_host(d_logprobs, n_rows);
  const auto top_ids = to_host(d_top_ids, n_top);
  const auto top_lps = to_host(d_top_lps, n_top);
  std::vector<GpuResult> out(n_rows);
  for (size_t r = 0; r < n_rows; ++r) {
    out[r].token = tokens[r];
    out[r].logprob = lps[r];
    out[r].top_ids.assign(top_ids.begin() + r * kMaxTopLogprobs,
                          top_ids.begin() + (r + 1) * kMaxTopLogprobs);
    out[r].top_logprobs.assign(top_lps.begin() + r * kMaxTopLogprobs,
                               top_lps.begin() + (r + 1) * kMaxTopLogprobs);
  }
  return out;
}

}  // namespace arbor::cuda
