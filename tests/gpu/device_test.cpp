// The device the GPU tests run on is one arbor's kernels are built for.
#include <catch2/catch.hpp>

#include <cstddef>

#include "kernels/cuda/device.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/ops.h"

TEST_CASE("the CUDA device is a Hopper-class GPU the kernels were built for", "[gpu]") {
  const auto devices = arbor::cuda::list_devices();
  REQUIRE_FALSE(devices.empty());
  const auto& d = devices.front();
  // The build targets sm_90a (CMAKE_CUDA_ARCHITECTURES); other GPUs need a rebuild.
  CHECK(d.compute_capability_major == 9);
  CHECK(d.multiprocessors > 0);
  CHECK(d.global_memory_bytes > (size_t(1) << 30));
  CHECK(d.l2_cache_bytes > 0);
}

TEST_CASE("an allocation that does not fit throws and leaves CUDA usable", "[gpu]") {
  // 1 PiB: more than any GPU has.
  CHECK_THROWS_WITH(arbor::cuda::DeviceBuffer(size_t(1) << 50),
                    Catch::Contains("cudaMalloc") && Catch::Contains("out of memory"));
  // The failure is not reported again by the next launch check on this thread.
  arbor::cuda::DeviceArray<arbor::cuda::bf16> x(1024);
  CHECK_NOTHROW(arbor::cuda::fill_normal_bf16(x.data(), x.size(), 1, 0.0f, 1.0f, nullptr));
  CHECK(cudaDeviceSynchronize() == cudaSuccess);
}
