#include "models/model_runner.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include <omp.h>

namespace arbor {

void ModelRunner::forward_greedy(const ForwardBatch& batch, std::vector<int32_t>& ids) {
  std::vector<float> logits;
  forward(batch, logits);
  const size_t vocab = size_t(config().vocab_size);
  ids.resize(batch.logits_rows.size());
  for (size_t r = 0; r < ids.size(); ++r) {
    const float* row = logits.data() + r * vocab;
    ids[r] = int32_t(std::max_element(row, row + vocab) - row);
  }
}

void ModelRunner::check_sampling_rows(const ForwardBatch& batch,
                                      std::span<const DeviceSamplingRow> rows) {
  if (rows.size() != batch.logits_rows.size())
    throw std::invalid_argument("forward_sample: " + std::to_string(rows.size()) +
                                " sampling rows for " + std::to_string(batch.logits_rows.size()) +
                                " logits rows");
}

void ModelRunner::forward_sample(const ForwardBatch&, std::span<const DeviceSamplingRow>,
                                 std::vector<DeviceSampledToken>&) {
  throw std::logic_error("this model runner (" + device_name() + ") does not sample on its device");
}

CpuModelRunner::CpuModelRunner(LlamaCpu model, int num_kv_blocks, int block_size,
                               ContextParallelRank cp)
    : model_(std::move(model)),
      cache_(model_.config().num_layers, model_.kv_shape(num_kv_blocks, block_size)),
      cp_(cp) {}

void CpuModelRunner::forward(const ForwardBatch& batch, std::vector<float>& logits) {
  model_.forward(batch, cache_, logits, cp_);
}

std::string CpuModelRunner::device_name() const {
  return "cpu (" + std::to_string(omp_get_max_threads()) + " threads)";
}

}  // namespace arbor
