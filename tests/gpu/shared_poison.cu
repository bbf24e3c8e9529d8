#include "tests/gpu/shared_poison.h"

#include <cstdint>

#include "kernels/cuda/check.h"

namespace arbor::test {

namespace {

__global__ void poison_shared_kernel(int words) {
  extern __shared__ uint32_t smem[];
  // volatile: nothing reads these stores in this kernel, and they must not be dropped.
  volatile uint32_t* words_out = smem;
  for (int i = threadIdx.x; i < words; i += blockDim.x) words_out[i] = 0xffffffffu;
}

}  // namespace

void poison_shared_memory(cudaStream_t stream) {
  int device = 0, sms = 0, bytes = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  CUDA_CHECK(cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device));
  CUDA_CHECK(cudaFuncSetAttribute(poison_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  bytes));
  // A block this large fills its SM, so the grid puts one block on every SM.
  poison_shared_kernel<<<sms, 1024, bytes, stream>>>(bytes / 4);
  CUDA_CHECK_LAUNCH();
}

}  // namespace arbor::test
