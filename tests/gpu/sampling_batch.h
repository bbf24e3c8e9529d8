// A batch for the GPU sampler (kernels/cuda/sampling.h) built from plain rows, run and read
// back: shared by the sampler's own tests and the model runner's (tests/gpu/llama_cuda_test).
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

#include "kernels/cuda/check.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/sampling.h"

namespace arbor::cuda {

// One row of a test batch: logits, parameters and the token history the penalties read.
struct TestRow {
  std::vector<float> logits;
  SamplingRowParams params;
  std::vector<int32_t> prompt, output;
  std::vector<std::pair<int32_t, float>> bias;
};

struct GpuResult {
  int32_t token = 0;
  float logprob = 0.0f;
  std::vector<int32_t> top_ids;  // kMaxTopLogprobs entries
  std::vector<float> top_logprobs;
};

template <typename T>
inline DeviceArray<T> to_device(const std::vector<T>& v) {
  DeviceArray<T> d(std::max<size_t>(v.size(), 1));
  if (!v.empty()) d.upload(v.data(), v.size());
  return d;
}

template <typename T>
inline std::vector<T> to_host(const DeviceArray<T>& d, size_t n) {
  std::vector<T> v(n);
  d.download(v.data(), n);
  CUDA_CHECK(cudaStreamSynchronize(nullptr));
  return v;
}

// Runs the GPU sampler on rows of one vocabulary, outputs poisoned first. with_lists = false
// passes no penalty / bias lists at all (then the rows must not need them).
std::vector<GpuResult> run_gpu(const std::vector<TestRow>& rows, bool with_lists = true);

}  // namespace arbor::cuda
