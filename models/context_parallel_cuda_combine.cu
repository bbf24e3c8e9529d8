#include <stdexcept>

#include "engine/comm/communicator.h"
#include "kernels/cuda/attention_merge.h"
#include "models/context_parallel_cuda.h"

namespace arbor {

CudaCombineWorkspace::CudaCombineWorkspace(const ContextParallelRank& cp, size_t max_rows,
                                           int head_dim)
    : cp_(cp), max_rows_(max_rows), head_dim_(head_dim) {
  if (!cp.enabled() || !cp.comm->device_memory())
    throw std::invalid_argument("the GPU combine needs a device communicator");
  const size_t packed = max_rows * (size_t(head_dim) + 1);
  o_ = cuda::DeviceArray<float>(max_rows * size_t(head_dim));
  lse_ = cuda::DeviceArray<float>(max_rows);
  if (cp.combine == CpCombine::allreduce) {
    max_lse_ = cuda::DeviceArray<float>(max_rows);
    packed_ = cuda::DeviceArray<float>(packed);
  } else {
    gathered_ = cuda::DeviceArray<float>(packed * size_t(cp.size()));
  }
}

void CudaCombineWorkspace::combine(size_t rows, cuda::bf16* out, cudaStream_t s) {
  if (rows > max_rows_) throw std::invalid_argument("combine: more rows than the workspace");
  comm::Communicator& c = *cp_.comm;
  const size_t packed = rows * (size_t(head_dim_) + 1);
  if (cp_.combine == CpCombine::allgather) {
    // One collective: every rank's (o, lse) rows, merged here. This rank's part is packed
    // straight into its slot of the gathered buffer (the in-place all-gather).
    float* mine = gathered_.data() + size_t(c.rank()) * packed;
    cuda::pack_partials(o_.data(), lse_.data(), rows, head_dim_, mine, s);
    c.all_gather(mine, gathered_.data(), packed, comm::DType::f32, s);
    cuda::merge_packed_partials(gathered_.data(), c.size(), rows, head_dim_, out, s);
    return;
  }
  // Two collectives: the max of lse, then the sums of weighted outputs and of weights.
  c.all_reduce(lse_.data(), max_lse_.data(), rows, comm::DType::f32, comm::ReduceOp::max, s);
  cuda::weight_partials(o_.data(), lse_.data(), max_lse_.data(), rows, head_dim_, packed_.data(),
                        s);
  c.all_reduce(packed_.data(), packed_.data(), packed, comm::DType::f32, comm::ReduceOp::sum, s);
  cuda::normalize_weighted(packed_.data(), rows, head_dim_, out, s);
}

}  // namespace arbor
