// The device's attainable read bandwidth, measured: the ceiling memory-bound kernels are
// compared with (METHOD.md: measure the ceilings on the machine, don't trust datasheets).
#pragma once

#include <algorithm>

namespace arbor::bench {

// Bytes per second of a read-only reduction over a 4 GiB buffer (less if the GPU has less free)
// (16-byte loads, all SMs), median of several runs.
double measure_read_bandwidth();

// The same bytes over four paths (bytes per second): those loads, the same loads with a 256-byte
// L2 prefetch (load_stream16_prefetch256, as decode attention streams the KV cache), and the
// asynchronous copy paths into shared memory: cp.async, 16 bytes per thread and copy, and the
// bulk copy engine, 16 KiB per copy; each copy path with up to 64 KiB in flight per block, 3
// blocks per SM.
// Also the same bytes as 4 KiB pages in shuffled order (what decode attention reads from a paged
// KV cache: one 16-token page of one KV head at head dim 128 per page) through the loads with the
// prefetch, cp.async and bulk copies: what a paged kernel's reads compare with (bench/RESULTS.md:
// the loads are the fastest of the three there, ~2.4% under dense bulk copies on an H100).
// Not part of fastest(), which is the device's ceiling.
// Load paths differ in what they reach (H100: bench/RESULTS.md), so a kernel's share of the
// ceiling depends on which one it is held to.
struct ReadPaths {
  double loads = 0, loads_prefetch = 0, cp_async = 0, bulk = 0;
  double paged_loads = 0, paged_cp_async = 0, paged_bulk = 0;
  double fastest() const { return std::max({loads, loads_prefetch, cp_async, bulk}); }
};
ReadPaths measure_read_paths();

}  // namespace arbor::bench
