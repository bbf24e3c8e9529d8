#include "bench/bandwidth.h"

#include <algorithm>
#include <numeric>
#include <random>
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
// streaming chunks of kChunk bytes (grid-stride) through a ring of kStages buffers, so that up
// to kStages chunks (64 KiB) per block are in flight: cp.async (16 bytes per thread and copy,
// through L1TEX like a load, without registers) and the bulk copy engine (one thread per
// chunk). Chunk k is chunk `order[k]` of the buffer (k itself without `order`): 16 KiB chunks
// in order measure the device; 4 KiB chunks in shuffled order read as decode attention reads a
// paged KV cache (one 16-token page of one KV head at head dim 128 per chunk, pages scattered).
// Nothing reads the buffers: what is timed is the bytes arriving.
constexpr int kChunkBytes = 16 * 1024;
constexpr int kPageBytes = 4 * 1024;
constexpr int kInFlightBytes = 64 * 1024;
constexpr int kAsyncThreads = 128;

__device__ __forceinline__ size_t chunk_at(const uint32_t* order, size_t k) {
  return order ? order[k] : k;
}

template <int kChunk>
__global__ void cp_async_read_kernel(const uint4* __restrict__ data, size_t chunks,
                                     const uint32_t* __restrict__ order) {
  constexpr int kStages = kInFlightBytes / kChunk;
  extern __shared__ __align__(128) uint4 ring[];
  constexpr int kPerThread = kChunk / 16 / kAsyncThreads;
  auto issue = [&](size_t chunk, int stage) {
    if (chunk < chunks) {
      const uint4* src = data + chunk_at(order, chunk) * (kChunk / 16);
      uint4* dst = ring + stage * (kChunk / 16);
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

template <int kChunk>
__global__ void bulk_read_kernel(const uint4* __restrict__ data, size_t chunks,
                                 const uint32_t* __restrict__ order) {
  constexpr int kStages = kInFlightBytes / kChunk;
  extern __shared__ __align__(128) uint4 ring[];
  __shared__ uint64_t full[kStages];
  if (threadIdx.x != 0) return;
  for (int s = 0; s < kStages; ++s) arbor::cuda::mbar_init(&full[s], 1);
  arbor::cuda::fence_mbar_init();
  auto issue = [&](size_t chunk, int stage) {
    if (chunk >= chunks) return;
    arbor::cuda::mbar_arrive_expect_tx(&full[stage], kChunk);
    arbor::cuda::bulk_copy_to_shared(ring + stage * (kChunk / 16),
                                     data + chunk_at(order, chunk) * (kChunk / 16), kChunk,
                                     &full[stage]);
  };
  size_t chunk = blockIdx.x;
  for (int s = 0; s < kStages; ++s) issue(chunk + size_t(s) * gridDim.x, s);
  for (int k = 0; chunk < chunks; ++k, chunk += gridDim.x) {
    arbor::cuda::mbar_wait(&full[k % kStages], uint32_t(k / kStages) & 1);
    issue(chunk + size_t(kStages) * gridDim.x, k % kStages);
  }
}

// 4 KiB pages in shuffled order through 16-byte loads with the 256-byte prefetch, as decode
// attention's register steps read them: one page per warp at a time, all of its 8 loads per lane
// in flight.
__global__ void paged_load_kernel(const uint4* __restrict__ data, size_t pages,
                                  const uint32_t* __restrict__ order, unsigned* sink) {
  constexpr int kPerLane = kPageBytes / 16 / 32;
  const int lane = threadIdx.x % 32;
  const size_t warps = size_t(gridDim.x) * blockDim.x / 32;
  unsigned acc = 0;
  for (size_t k = (size_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; k < pages; k += warps) {
    const uint4* page = data + size_t(order[k]) * (kPageBytes / 16);
    uint4 v[kPerLane];
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) v[i] = cuda::load_stream16_prefetch256(page + lane + 32 * i);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) acc ^= v[i].x ^ v[i].y ^ v[i].z ^ v[i].w;
  }
  if (acc == 0x9e3779b9u) *sink = acc;
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
  CUDA_CHECK(cudaFuncSetAttribute(cp_async_read_kernel<kChunkBytes>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, kInFlightBytes));
  CUDA_CHECK(cudaFuncSetAttribute(bulk_read_kernel<kChunkBytes>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, kInFlightBytes));
  CUDA_CHECK(cudaFuncSetAttribute(cp_async_read_kernel<kPageBytes>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, kInFlightBytes));
  CUDA_CHECK(cudaFuncSetAttribute(bulk_read_kernel<kPageBytes>,
                                  cudaFuncAttributeMaxDynamicSharedMemorySize, kInFlightBytes));
  const size_t chunks = p.bytes / kChunkBytes;
  ReadPaths r;
  r.loads = loads_rate(p);
  r.loads_prefetch = loads_rate<true>(p);
  r.cp_async = median_rate(p.bytes, [&] {
    cp_async_read_kernel<kChunkBytes>
        <<<p.sms * 3, kAsyncThreads, kInFlightBytes>>>(p.buf.as<uint4>(), chunks, nullptr);
  });
  r.bulk = median_rate(p.bytes, [&] {
    bulk_read_kernel<kChunkBytes>
        <<<p.sms * 3, 32, kInFlightBytes>>>(p.buf.as<uint4>(), chunks, nullptr);
  });

  // The pages in a fixed shuffled order (the attention benchmark's block tables are shuffled).
  const size_t pages = p.bytes / kPageBytes;
  std::vector<uint32_t> order(pages);
  std::iota(order.begin(), order.end(), 0u);
  std::shuffle(order.begin(), order.end(), std::mt19937_64(42));
  cuda::DeviceBuffer d_order(pages * sizeof(uint32_t));
  CUDA_CHECK(
      cudaMemcpy(d_order.get(), order.data(), pages * sizeof(uint32_t), cudaMemcpyHostToDevice));
  cuda::DeviceBuffer sink(sizeof(unsigned));
  r.paged_loads = median_rate(p.bytes, [&] {
    paged_load_kernel<<<p.sms * 4, 128>>>(p.buf.as<uint4>(), pages, d_order.as<uint32_t>(),
                                          sink.as<unsigned>());
  });
  r.paged_cp_async = median_rate(p.bytes, [&] {
    cp_async_read_kernel<kPageBytes><<<p.sms * 3, kAsyncThreads, kInFlightBytes>>>(
        p.buf.as<uint4>(), pages, d_order.as<uint32_t>());
  });
  r.paged_bulk = median_rate(p.bytes, [&] {
    bulk_read_kernel<kPageBytes>
        <<<p.sms * 3, 32, kInFlightBytes>>>(p.buf.as<uint4>(), pages, d_order.as<uint32_t>());
  });
  return r;
}

double measure_read_bandwidth() {
  return loads_rate(ProbeBuffer());
}

}  // namespace arbor::bench
