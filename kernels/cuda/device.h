// What the CUDA runtime can see: used to skip GPU tests cleanly and to report the device.
#pragma once

#include <string>
#include <vector>

namespace arbor::cuda {

struct DeviceInfo {
  int index = 0;
  std::string name;
  int compute_capability_major = 0;
  int compute_capability_minor = 0;
  int multiprocessors = 0;
  size_t global_memory_bytes = 0;
  size_t l2_cache_bytes = 0;
};

// Devices usable by this process. Empty (never an exception) when there is no driver or no
// GPU; `why_none` then says what the runtime reported.
std::vector<DeviceInfo> list_devices(std::string* why_none = nullptr);

}  // namespace arbor::cuda
