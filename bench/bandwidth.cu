#include "bench/bandwidth.h"

#include <algorithm>
#include <vector>

#include <cuda_runtime.h>

#include "kernels/cuda/bulk_copy.cuh"
#include "kernels/cuda/check.h"
#include "kernels/cuda/cp_async.cuh"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/load.cuh"

namespace arbor::bench {
namespace {

// Each thread sums 16-byte words along a grid-stride loop, four loads in flight; the sum
// goes to `sink` only if impossible, so the loads cannot be optimized away. kPrefetch256:
// the loads the decode-attention kernel streams the KV cache with (a 256-byte L2 prefetch per
// miss) instead of plain streaming loads.
template <bool kPrefetch256>
__device__ __forceinline__ uint4 probe_load(const uint4* p) {
  if constexpr (kPrefetch256) {
    return cuda::load_stream16_prefetch256(p);
  } else {
    return __ldcs(p);
  }
}

template <bool kPrefetch256>
__global__ void read_kernel(const uint4* __restrict__ data, size_t n, unsigned* sink) {
  unsigned acc = 0;
  const size_t stride = size_t(gridDim.x) * blockDim.x;
  size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (; i + 3 * stride < n; i += 4 * stride) {
    uint4 a = probe_load<kPrefetch256>(data + i), b = probe_load<kPrefetch256>(data + i + stride),
          c = probe_load<kPrefetch256>(data + i + 2 * stride),
          d = probe_load<kPrefetch256>(data + i + 3 * stride);
    acc ^= a.x ^ a.y ^ a.z ^ a.w ^ b.x ^ b.y ^ b.z ^ b.w ^ c.x ^ c.y ^ c.z ^ c.w ^ d.x ^ d.y ^ d.z ^
           d.w;
  }
  for (; i < n; i += stride) {
    uint4 a = probe_load<kPrefetch256>(data + i);
    acc ^= a.x ^ a.y ^ a.z ^ a.w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
}

// The same bytes through the two asynchronous copy paths into shared memory, each block
// streaming 16 KiB chunks (grid-stride) through a ring of kStages buffers, so that up to
// kStages chunks per block are in flight: cp.async (16 bytes per thread and copy, through
// L1TEX like a load, without registers) and the bulk copy engine (one thread per chunk).
// Nothing reads the buffers: what is timed is the bytes arriving.
constexpr int kChunkBytes = 16 * 1024;
constexpr int kStages = 4;
constexpr int kAsyncThreads = 128;

__global__ void cp_async_read_kernel(const uint4* __restrict__ data, size_t chunks) {
  extern __shared__ __align__(128) uint4 ring[];
  constexpr int kPerThread = kChunkBytes / 16 / kAsyncThreads;
  auto issue = [&](size_t chunk, int stage) {
    if (chunk < chunks) {
      const uint4* src = data + chunk * (kChunkBytes / 16);
      uint4* dst = ring + stage * (kChunkBytes / 16);
      for (int i = 0; i < kPerThread; ++i) {
        const int e = threadIdx.x + i * kAsyncThreads;
        arbor::cuda::cp_async_16(arbor::cuda::shared_address(dst + e), src + e, true);
      }
    }
    arbor::cuda::cp_async_commit();
  };
  size_t chunk = blockIdx.x;
  for (int s = 0; s < kStages; ++s) issue(chunk + size_t(s) * gridDim.x, s);
  for (int k = 0; chunk < chunks; ++k, chunk += gridDim.x) {
    arbor::cuda::cp_async_wait<kStages - 1>();  // chunk k has landed: its stage is free
    issue(chunk + size_t(kStages) * gridDim.x, k % kStages);
  }
  arbor::cuda::cp_async_wait<0>();
}

__global__ void bulk_read_kernel(const uint4* __restrict__ data, size_t chunks) {
  extern __shared__ __align__(128) uint4 ring[];
  __shared__ uint64_t full[kStages];
  if (threadIdx.x != 0) return;
  for (int s = 0; s < kStages; ++s) arbor::cuda::mbar_init(&full[s], 1);
  arbor::cuda::fence_mbar_init();
  auto issue = [&](size_t chunk, int stage) {
    if (chunk >= chunks) return;
    arbor::cuda::mbar_arrive_expect_tx(&full[stage], kChunkBytes);
    arbor::cuda::bulk_copy_to_shared(ring + stage * (kChunkBytes / 16),
                                     data + chunk * (kChunkBytes / 16), kChunkBytes, &full[stage]);
  };
  size_t chunk = blockIdx.x;
  for (int s = 0; s < kStages; ++s) issue(chunk + size_t(s) * gridDim.x, s);
  for (int k = 0; chunk < chunks; ++k, chunk += gridDim.x) {
    arbor::cuda::mbar_wait(&full[k % kStages], uint32_t(k / kStages) & 1);
    issue(chunk + size_t(kStages) * gridDim.x, k % kStages);
  }
}

// Median bytes per second of `launch` over `bytes`, after two warm-up runs.
template <typename Launch>
double median_rate(size_t bytes, Launch launch) {
  cuda::Event start, stop;
  std::vector<double> runs;
  for (int r = 0; r < 12; ++r) {
    start.record(nullptr);
    launch();
    CUDA_CHECK_LAUNCH();
    stop.record(nullptr);
    const double ms = stop.elapsed_ms_since(start);
    if (r >= 2) runs.push_back(double(bytes) / (ms * 1e-3));
  }
  std::sort(runs.begin(), runs.end());
  return runs[runs.size() / 2];
}

// 4 GiB (far beyond L2), or a quarter of what is free on a smaller or busier GPU.
size_t probe_bytes() {
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  return std::min<size_t>(size_t(4) << 30, free_bytes / 4) / kChunkBytes * kChunkBytes;
}

// What every probe reads: probe_bytes() of ones, and the SM count its grid is sized by.
struct ProbeBuffer {
  size_t bytes = probe_bytes();
  cuda::DeviceBuffer buf{bytes};
  int sms = 0;
  ProbeBuffer() {
    CUDA_CHECK(cudaMemset(buf.get(), 1, bytes));
    CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0));
  }
};

// The 16-byte loads into registers.
template <bool kPrefetch256 = false>
double loads_rate(const ProbeBuffer& p) {
  cuda::DeviceBuffer sink(sizeof(unsigned));
  return median_rate(p.bytes, [&] {
    read_kernel<kPrefetch256>
        <<<p.sms * 8, 512>>>(p.buf.as<uint4>(), p.bytes / 16, sink.as<unsigned>());
  });
}

}  // namespace

ReadPaths measure_read_paths() {
  const ProbeBuffer p;
  const int smem = kStages * kChunkBytes;
  CUDA_CHECK(cudaFuncSetAttribute(cp_async_read_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  smem));
  CUDA_CHECK(
      cudaFuncSetAttribute(bulk_read_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  const size_t chunks = p.bytes / kChunkBytes;
  ReadPaths r;
  r.loads = loads_rate(p);
  r.loads_prefetch = loads_rate<true>(p);
  r.cp_async = median_rate(p.bytes, [&] {
    cp_async_read_kernel<<<p.sms * 3, kAsyncThreads, smem>>>(p.buf.as<uint4>(), chunks);
  });
  r.bulk = median_rate(
      p.bytes, [&] { bulk_read_kernel<<<p.sms * 3, 32, smem>>>(p.buf.as<uint4>(), chunks); });
  return r;
}

double measure_read_bandwidth() {
  return loads_rate(ProbeBuffer());
}

}  // namespace arbor::bench
