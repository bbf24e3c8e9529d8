// Error checking for CUDA runtime calls: failures throw with the call, file and line.
#pragma once

#include <stdexcept>
#include <string>

#include <cuda_runtime.h>

namespace arbor::cuda {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

[[noreturn]] inline void throw_cuda_error(cudaError_t err, const char* call, const char* file,
                                          int line) {
  throw CudaError(std::string(file) + ":" + std::to_string(line) + ": " + call +
                  " failed: " + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")");
}

}  // namespace arbor::cuda

#define CUDA_CHECK(call)                                                           \
  do {                                                                             \
    cudaError_t arbor_cuda_err_ = (call);                                          \
    if (arbor_cuda_err_ != cudaSuccess)                                            \
      ::arbor::cuda::throw_cuda_error(arbor_cuda_err_, #call, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: reports a bad launch configuration at the launch site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
