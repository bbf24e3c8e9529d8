#include "tests/gpu/late_row_writer.h"

#include "kernels/cuda/check.h"
#include "kernels/cuda/pdl.h"

namespace arbor::test {

namespace {

__device__ uint64_t global_ns() {
  uint64_t t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__global__ void late_row_write_kernel(LateRowWrite w) {
  arbor::cuda::pdl_wait();
  arbor::cuda::pdl_launch_dependents();
  const uint64_t until = global_ns() + uint64_t(w.delay_us) * 1000u;
  while (global_ns() < until) __nanosleep(1000);
  const size_t row_elems = size_t(w.num_rows) * size_t(w.head_dim);
  for (size_t i = threadIdx.x; i < row_elems; i += blockDim.x) {
    const size_t r = i / size_t(w.head_dim), d = i % size_t(w.head_dim);
    w.k_cache[size_t(w.row_offsets[r]) + d] = w.k_rows[i];
    w.v_cache[size_t(w.row_offsets[r]) + d] = w.v_rows[i];
  }
  for (size_t i = threadIdx.x; i < w.q_elements; i += blockDim.x) w.q[i] = w.q_new[i];
}

}  // namespace

void launch_late_row_write(const LateRowWrite& w, cudaStream_t stream) {
  arbor::cuda::launch_pdl(late_row_write_kernel, dim3(1), dim3(256), 0, stream, w);
  CUDA_CHECK_LAUNCH();
}

}  // namespace arbor::test
