// The device's attainable read bandwidth, measured: the ceiling memory-bound kernels are
// compared with (METHOD.md: measure the ceilings on the machine, don't trust datasheets).
#pragma once

namespace arbor::bench {

// Bytes per second of a read-only reduction over a 4 GiB buffer (less if the GPU has less free)
// (16-byte loads, all SMs), median of several runs.
double measure_read_bandwidth();

}  // namespace arbor::bench
