#include "engine/comm/local_gpu_kernels.h"

#include <algorithm>
#include <cstdint>

namespace arbor::comm::detail {
namespace {

struct Sum {
  __device__ float operator()(float a, float b) const { return __fadd_rn(a, b); }
  __device__ int32_t operator()(int32_t a, int32_t b) const {
    return int32_t(uint32_t(a) + uint32_t(b));
  }
  __device__ uint8_t operator()(uint8_t a, uint8_t b) const { return uint8_t(a + b); }
};

struct Max {
  template <typename T>
  __device__ T operator()(T a, T b) const {
    return b > a ? b : a;  // same as the local-cpu backend
  }
};

template <typename T, typename Op>
__global__ void reduce_kernel(ReducePointers p, int n, size_t begin, size_t end) {
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  for (size_t i = begin + size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < end; i += stride) {
    T v = static_cast<const T*>(p.src[0])[i];
    for (int r = 1; r < n; ++r) v = Op()(v, static_cast<const T*>(p.src[r])[i]);
    for (int r = 0; r < n; ++r) static_cast<T*>(p.dst[r])[i] = v;
  }
}

template <typename T, typename Op>
cudaError_t launch(const ReducePointers& p, int n, size_t begin, size_t end, cudaStream_t stream) {
  constexpr int kThreads = 256;
  const size_t blocks = std::min<size_t>((end - begin + kThreads - 1) / kThreads, 1024);
  reduce_kernel<T, Op><<<unsigned(blocks), kThreads, 0, stream>>>(p, n, begin, end);
  return cudaGetLastError();
}

template <typename T>
cudaError_t launch_op(const ReducePointers& p, int n, size_t begin, size_t end, ReduceOp op,
                      cudaStream_t stream) {
  return op == ReduceOp::sum ? launch<T, Sum>(p, n, begin, end, stream)
                             : launch<T, Max>(p, n, begin, end, stream);
}

}  // namespace

cudaError_t launch_local_reduce(const ReducePointers& p, int n, size_t begin, size_t end,
                                DType dtype, ReduceOp op, cudaStream_t stream) {
  if (end <= begin) return cudaSuccess;
  switch (dtype) {
    case DType::f32:
      return launch_op<float>(p, n, begin, end, op, stream);
    case DType::i32:
      return launch_op<int32_t>(p, n, begin, end, op, stream);
    case DType::u8:
      return launch_op<uint8_t>(p, n, begin, end, op, stream);
  }
  return cudaErrorInvalidValue;
}

}  // namespace arbor::comm::detail
