// Main of the GPU test binary. Without a usable CUDA device it says so and exits 77, which
// ctest reports as "Skipped" (SKIP_RETURN_CODE in tests/CMakeLists.txt); CI machines have
// no GPU, so there the GPU tests are compiled but skipped, visibly.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include <cstdio>

#include "kernels/cuda/device.h"

int main(int argc, char** argv) {
  std::string why;
  const auto devices = arbor::cuda::list_devices(&why);
  if (devices.empty()) {
    std::printf("SKIPPED: no CUDA device (%s); GPU tests did not run\n", why.c_str());
    return 77;
  }
  for (const auto& d : devices)
    std::printf("GPU %d: %s, sm_%d%d, %d SMs, %.1f GiB\n", d.index, d.name.c_str(),
                d.compute_capability_major, d.compute_capability_minor, d.multiprocessors,
                double(d.global_memory_bytes) / (1 << 30));
  return Catch::Session().run(argc, argv);
}
