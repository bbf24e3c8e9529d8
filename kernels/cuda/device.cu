#include "kernels/cuda/device.h"

#include <cuda_runtime.h>

namespace arbor::cuda {

std::vector<DeviceInfo> list_devices(std::string* why_none) {
  std::vector<DeviceInfo> devices;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    if (why_none) {
      *why_none = err != cudaSuccess
                      ? std::string(cudaGetErrorName(err)) + ": " + cudaGetErrorString(err)
                      : "the CUDA runtime reports no devices";
    }
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return devices;
  }
  for (int i = 0; i < count; ++i) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    devices.push_back(DeviceInfo{i, prop.name, prop.major, prop.minor, prop.multiProcessorCount,
                                 prop.totalGlobalMem, size_t(prop.l2CacheSize)});
  }
  return devices;
}

}  // namespace arbor::cuda
