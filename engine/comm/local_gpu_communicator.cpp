#include "engine/comm/local_gpu_communicator.h"

#include <memory>
#include <string>

#include <cuda_runtime.h>

#include "engine/comm/local_gpu_kernels.h"
#include "engine/comm/local_group.h"

namespace arbor::comm {
namespace {

std::string cuda_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

class LocalGpuCommunicator final : public detail::LocalCommunicatorBase {
 public:
  LocalGpuCommunicator(std::shared_ptr<detail::LocalGroup> group, int rank, int device)
      : LocalCommunicatorBase(std::move(group), rank), device_(device) {}
  bool device_memory() const override { return true; }
  bool graph_capturable() const override { return false; }

 protected:
  void before_publish(Stream stream, const char* what) override {
    use_device(what);
    cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
    check(cudaStreamIsCapturing(stream, &status), "cudaStreamIsCapturing", what);
    if (status != cudaStreamCaptureStatusNone)
      fail(what,
           "the stream is being captured into a CUDA graph; the local-gpu backend is "
           "not graph capturable (use NCCL, or run this op outside the capture)");
    // Peers read this rank's inputs on their own streams: they must be complete.
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize", what);
  }
  void after_work(Stream stream, const char* what) override {
    // Peers read their outputs after the next barrier: this rank's writes must be done.
    check(cudaStreamSynchronize(stream), "cudaStreamSynchronize", what);
  }
  void copy(void* dst, const void* src, size_t bytes, Stream stream, const char* what) override {
    check(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream), "cudaMemcpyAsync",
          what);
  }
  void reduce(const void* const* srcs, void* const* dsts, int n, size_t begin, size_t end,
              DType dtype, ReduceOp op, Stream stream, const char* what) override {
    detail::ReducePointers p{};
    for (int r = 0; r < n; ++r) {
      p.src[r] = srcs[r];
      p.dst[r] = dsts[r];
    }
    check(detail::launch_local_reduce(p, n, begin, end, dtype, op, stream), "reduce kernel", what);
  }

 private:
  void use_device(const char* what) {
    int current = -1;
    check(cudaGetDevice(&current), "cudaGetDevice", what);
    if (current != device_) check(cudaSetDevice(device_), "cudaSetDevice", what);
  }
  void check(cudaError_t e, const char* call, const char* what) {
    if (e != cudaSuccess) fail(what, std::string(call) + " failed: " + cuda_text(e));
  }

  int device_;
};

}  // namespace

Group make_local_gpu_group(int n, int device, const LocalGroupOptions& options) {
  static_assert(kMaxLocalGpuRanks <= detail::kMaxReduceRanks);
  if (n < 1 || n > kMaxLocalGpuRanks)
    throw CommError("make_local_gpu_group: group size " + std::to_string(n) + " outside 1.." +
                    std::to_string(kMaxLocalGpuRanks));
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess)
    throw CommError("make_local_gpu_group: cudaGetDeviceCount failed: " + cuda_text(e));
  if (device < 0 || device >= count)
    throw CommError("make_local_gpu_group: CUDA device " + std::to_string(device) +
                    " does not exist (" + std::to_string(count) + " visible)");
  auto group = std::make_shared<detail::LocalGroup>(n, "local-gpu", options);
  Group comms;
  for (int r = 0; r < n; ++r)
    comms.push_back(std::make_unique<LocalGpuCommunicator>(group, r, device));
  return comms;
}

}  // namespace arbor::comm
