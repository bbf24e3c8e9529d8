// The device the GPU tests run on is one arbor's kernels are built for.
#include <catch2/catch.hpp>

#include "kernels/cuda/device.h"

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
