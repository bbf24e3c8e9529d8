// Host-memory paged KV cache for the CPU backend: per layer one K and one V array in the
// layout of kernels/paged_kv.h. Which blocks belong to which sequence is the engine's
// business (engine/kv_block_manager.h); this only owns the storage.
#pragma once

#include <vector>

#include "kernels/paged_kv.h"

namespace arbor {

class CpuKvCache {
 public:
  CpuKvCache(int num_layers, PagedKvShape shape)
      : shape_(shape),
        k_(num_layers, std::vector<float>(shape.layer_elements())),
        v_(num_layers, std::vector<float>(shape.layer_elements())) {}

  const PagedKvShape& shape() const { return shape_; }
  int num_layers() const { return int(k_.size()); }
  float* k(int layer) { return k_[layer].data(); }
  float* v(int layer) { return v_[layer].data(); }
  const float* k(int layer) const { return k_[layer].data(); }
  const float* v(int layer) const { return v_[layer].data(); }

 private:
  PagedKvShape shape_;
  std::vector<std::vector<float>> k_, v_;
};

}  // namespace arbor
