#include "engine/comm/nccl_communicator.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <utility>

#include <cuda_runtime.h>
#include <nccl.h>

namespace arbor::comm {
namespace {

static_assert(sizeof(ncclUniqueId) == sizeof(NcclUniqueId::bytes));
static_assert(std::is_same_v<Stream, cudaStream_t>);

std::string cuda_text(cudaError_t e) {
  return std::string(cudaGetErrorName(e)) + " (" + cudaGetErrorString(e) + ")";
}

std::string nccl_text(ncclResult_t r, ncclComm_t comm) {
  std::string s = ncclGetErrorString(r);
  const char* last = ncclGetLastError(comm);
  if (last && *last) s += std::string(" — ") + last;
  return s;
}

ncclDataType_t to_nccl(DType t) {
  switch (t) {
    case DType::f32:
      return ncclFloat32;
    case DType::i32:
      return ncclInt32;
    case DType::u8:
      return ncclUint8;
  }
  throw CommError("nccl: unknown DType " + std::to_string(int(t)));
}

ncclRedOp_t to_nccl(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return ncclSum;
    case ReduceOp::max:
      return ncclMax;
  }
  throw CommError("nccl: unknown ReduceOp " + std::to_string(int(op)));
}

bool overlaps(const void* a, size_t na, const void* b, size_t nb) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return na && nb && pa < pb + nb && pb < pa + na;
}

// Restores the calling thread's current CUDA device on scope exit.
class DeviceRestorer {
 public:
  DeviceRestorer() {
    if (cudaGetDevice(&device_) != cudaSuccess) device_ = -1;
  }
  ~DeviceRestorer() {
    if (device_ >= 0) cudaSetDevice(device_);
  }
  DeviceRestorer(const DeviceRestorer&) = delete;
  DeviceRestorer& operator=(const DeviceRestorer&) = delete;

 private:
  int device_ = -1;
};

class NcclCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (aborted if this constructor throws).
  NcclCommunicator(ncclComm_t comm, int rank, int size, int device, const NcclOptions& options)
      : comm_(comm), rank_(rank), size_(size), device_(device), options_(options) {
    try {
      use_device("init");
      check_cuda(cudaStreamCreateWithFlags(&internal_, cudaStreamNonBlocking),
                 "cudaStreamCreateWithFlags", "init");
    } catch (...) {
      ncclCommAbort(comm_);
      comm_ = nullptr;
      throw;
    }
  }

  ~NcclCommunicator() override {
    cudaSetDevice(device_);
    if (comm_) {
      if (failed_)
        ncclCommAbort(comm_);
      else
        ncclCommDestroy(comm_);
    }
    if (staging_) cudaFree(staging_);
    if (internal_) cudaStreamDestroy(internal_);
  }

  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  bool device_memory() const override { return true; }
  bool graph_capturable() const override { return true; }
  std::string name() const override { return "nccl"; }

  void all_reduce(const void* send, void* recv, size_t count, DType dtype, ReduceOp op,
                  Stream stream) override {
    const char* what = "all_reduce";
    start(what);
    const size_t bytes = count * dtype_size(dtype);
    if (send != recv && overlaps(send, bytes, recv, bytes))
      fail(what, "send and recv overlap without being equal");
    if (!count) return;
    check(ncclAllReduce(send, recv, count, to_nccl(dtype), to_nccl(op), comm_, stream),
          "ncclAllReduce", what);
  }

  void all_gather(const void* send, void* recv, size_t count, DType dtype, Stream stream) override {
    const char* what = "all_gather";
    start(what);
    const size_t bytes = count * dtype_size(dtype);
    const void* in_place = static_cast<const char*>(recv) + size_t(rank_) * bytes;
    if (send != in_place && overlaps(send, bytes, recv, bytes * size_t(size_)))
      fail(what, "send overlaps recv without being recv + rank*count (the in-place position)");
    if (!count) return;
    check(ncclAllGather(send, recv, count, to_nccl(dtype), comm_, stream), "ncclAllGather", what);
  }

  void broadcast(void* buf, size_t count, DType dtype, int root, Stream stream) override {
    const char* what = "broadcast";
    start(what);
    check_rank(root, "root", what);
    if (!count) return;
    check(ncclBroadcast(buf, buf, count, to_nccl(dtype), root, comm_, stream), "ncclBroadcast",
          what);
  }

  void send_recv(const void* send, int dst, void* recv, int src, size_t count, DType dtype,
                 Stream stream) override {
    const char* what = "send_recv";
    start(what);
    check_rank(dst, "dst", what);
    check_rank(src, "src", what);
    const size_t bytes = count * dtype_size(dtype);
    const bool self_copy = dst == rank_ && src == rank_;
    if (!(self_copy && send == recv) && overlaps(send, bytes, recv, bytes))
      fail(what, "send and recv overlap (send_recv is not in place; double-buffer)");
    if (!count) return;
    if (self_copy) {
      if (send != recv)
        check_cuda(cudaMemcpyAsync(recv, send, bytes, cudaMemcpyDeviceToDevice, stream),
                   "cudaMemcpyAsync", what);
      return;
    }
    check(ncclGroupStart(), "ncclGroupStart", what);
    const ncclResult_t rs = ncclSend(send, count, to_nccl(dtype), dst, comm_, stream);
    const ncclResult_t rr =
        rs == ncclSuccess ? ncclRecv(recv, count, to_nccl(dtype), src, comm_, stream) : rs;
    const ncclResult_t re = ncclGroupEnd();  // always closes the group
    check(rs, "ncclSend", what);
    check(rr, "ncclRecv", what);
    check(re, "ncclGroupEnd", what);
  }

  void broadcast_bytes(std::vector<uint8_t>& bytes, int root) override {
    const char* what = "broadcast_bytes";
    start(what);
    check_rank(root, "root", what);
    ensure_staging(sizeof(uint64_t), what);
    uint64_t size = bytes.size();
    // Copies go on the internal stream, in order with the broadcasts (a plain cudaMemcpy from
    // pageable memory may return before its DMA has finished).
    if (rank_ == root)
      check_cuda(cudaMemcpyAsync(staging_, &size, sizeof size, cudaMemcpyHostToDevice, internal_),
                 "cudaMemcpyAsync", what);
    check(ncclBroadcast(staging_, staging_, 1, ncclUint64, root, comm_, internal_),
          "ncclBroadcast(size)", what);
    wait_internal(what);
    check_cuda(cudaMemcpyAsync(&size, staging_, sizeof size, cudaMemcpyDeviceToHost, internal_),
               "cudaMemcpyAsync", what);
    check_cuda(cudaStreamSynchronize(internal_), "cudaStreamSynchronize", what);
    if (!size) {
      bytes.clear();
      return;
    }
    ensure_staging(size, what);
    if (rank_ == root)
      check_cuda(cudaMemcpyAsync(staging_, bytes.data(), size, cudaMemcpyHostToDevice, internal_),
                 "cudaMemcpyAsync", what);
    check(ncclBroadcast(staging_, staging_, size, ncclUint8, root, comm_, internal_),
          "ncclBroadcast(bytes)", what);
    wait_internal(what);
    if (rank_ != root) {
      bytes.resize(size);
      check_cuda(cudaMemcpyAsync(bytes.data(), staging_, size, cudaMemcpyDeviceToHost, internal_),
                 "cudaMemcpyAsync", what);
      check_cuda(cudaStreamSynchronize(internal_), "cudaStreamSynchronize", what);
    }
  }

  void barrier() override {
    const char* what = "barrier";
    start(what);
    ensure_staging(sizeof(int32_t), what);
    check(ncclAllReduce(staging_, staging_, 1, ncclInt32, ncclSum, comm_, internal_),
          "ncclAllReduce", what);
    wait_internal(what);
  }

  void abort(const std::string& reason) override {
    if (!comm_) return;
    cudaSetDevice(device_);
    ncclCommAbort(comm_);
    comm_ = nullptr;
    aborted_reason_ = reason.empty() ? "abort() called" : reason;
  }

 private:
  std::string prefix(const char* what) const {
    return "nccl " + std::string(what) + " on rank " + std::to_string(rank_) + " of " +
           std::to_string(size_) + " (CUDA device " + std::to_string(device_) + "): ";
  }
  [[noreturn]] void fail(const char* what, const std::string& cause) const {
    throw CommError(prefix(what) + cause);
  }
  void check(ncclResult_t r, const char* call, const char* what) {
    if (r == ncclSuccess) return;
    if (r != ncclInvalidArgument && r != ncclInvalidUsage) failed_ = true;
    fail(what, std::string(call) + " failed: " + nccl_text(r, comm_));
  }
  void check_cuda(cudaError_t e, const char* call, const char* what) {
    if (e == cudaSuccess) return;
    failed_ = true;
    fail(what, std::string(call) + " failed: " + cuda_text(e));
  }
  void check_rank(int r, const char* role, const char* what) const {
    if (r < 0 || r >= size_)
      fail(what, std::string(role) + " " + std::to_string(r) + " out of range");
  }
  void use_device(const char* what) {
    int current = -1;
    check_cuda(cudaGetDevice(&current), "cudaGetDevice", what);
    if (current != device_) check_cuda(cudaSetDevice(device_), "cudaSetDevice", what);
  }
  // Common entry of every op.
  void start(const char* what) {
    if (!comm_) fail(what, "the communicator was aborted: " + aborted_reason_);
    use_device(what);
  }
  void ensure_staging(size_t bytes, const char* what) {
    if (bytes <= staging_bytes_) return;
    // The internal stream may still use the old buffer only if a previous wait failed; then
    // the communicator is failed anyway.
    if (staging_) cudaFree(staging_);
    staging_ = nullptr;
    staging_bytes_ = 0;
    const size_t want = std::max<size_t>(bytes, 4096);
    check_cuda(cudaMalloc(&staging_, want), "cudaMalloc", what);
    staging_bytes_ = want;
  }
  // Waits for the internal stream, polling NCCL's asynchronous error state, up to the timeout.
  void wait_internal(const char* what) {
    const auto start_time = std::chrono::steady_clock::now();
    const auto deadline = start_time + options_.timeout;
    auto pause = std::chrono::microseconds(1);
    for (;;) {
      const cudaError_t e = cudaStreamQuery(internal_);
      if (e == cudaSuccess) return;
      if (e != cudaErrorNotReady) check_cuda(e, "cudaStreamQuery", what);
      ncclResult_t async = ncclSuccess;
      check(ncclCommGetAsyncError(comm_, &async), "ncclCommGetAsyncError", what);
      if (async != ncclSuccess && async != ncclInProgress) {
        failed_ = true;
        fail(what, "asynchronous NCCL error: " + nccl_text(async, comm_));
      }
      if (std::chrono::steady_clock::now() > deadline) {
        const std::string msg = "timed out after " + std::to_string(options_.timeout.count()) +
                                " ms waiting for the other ranks (does every rank call " + what +
                                " with the same root?); the communicator is aborted";
        abort(msg);
        fail(what, msg);
      }
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::microseconds(1000));
    }
  }

  ncclComm_t comm_ = nullptr;
  int rank_, size_, device_;
  NcclOptions options_;
  cudaStream_t internal_ = nullptr;
  void* staging_ = nullptr;
  size_t staging_bytes_ = 0;
  bool failed_ = false;
  std::string aborted_reason_;
};

ncclUniqueId to_nccl(const NcclUniqueId& id) {
  ncclUniqueId out;
  std::memcpy(&out, id.bytes.data(), sizeof out);
  return out;
}

void check_group_args(const char* fn, int nranks, int first_rank, const std::vector<int>& devices) {
  const std::string where = std::string(fn) + ": ";
  if (devices.empty()) throw CommError(where + "no devices given");
  if (nranks < 1 || first_rank < 0 || first_rank + int(devices.size()) > nranks)
    throw CommError(where + "ranks " + std::to_string(first_rank) + ".." +
                    std::to_string(first_rank + int(devices.size()) - 1) +
                    " do not fit a communicator of " + std::to_string(nranks) + " ranks");
  int count = 0;
  if (const cudaError_t e = cudaGetDeviceCount(&count); e != cudaSuccess)
    throw CommError(where + "cudaGetDeviceCount failed: " + cuda_text(e));
  std::set<int> seen;
  for (int d : devices) {
    if (d < 0 || d >= count)
      throw CommError(where + "CUDA device " + std::to_string(d) + " does not exist (" +
                      std::to_string(count) + " visible)");
    if (!seen.insert(d).second)
      throw CommError(where + "CUDA device " + std::to_string(d) +
                      " given twice (NCCL allows one rank per device)");
  }
}

}  // namespace

bool nccl_available() {
  return true;
}

NcclUniqueId NcclUniqueId::from_bytes(const std::vector<uint8_t>& b) {
  NcclUniqueId id;
  if (b.size() != id.bytes.size())
    throw CommError("NcclUniqueId::from_bytes: got " + std::to_string(b.size()) + " bytes, want " +
                    std::to_string(id.bytes.size()));
  std::copy(b.begin(), b.end(), id.bytes.begin());
  return id;
}

NcclUniqueId nccl_unique_id() {
  ncclUniqueId raw;
  if (const ncclResult_t r = ncclGetUniqueId(&raw); r != ncclSuccess)
    throw CommError("nccl_unique_id: ncclGetUniqueId failed: " + nccl_text(r, nullptr));
  NcclUniqueId id;
  std::memcpy(id.bytes.data(), &raw, sizeof raw);
  return id;
}

int nccl_version() {
  int v = 0;
  if (const ncclResult_t r = ncclGetVersion(&v); r != ncclSuccess)
    throw CommError("nccl_version: ncclGetVersion failed: " + nccl_text(r, nullptr));
  return v;
}

// NCCL >= 2.22 connects peers lazily, at the first collective that needs them; when that
// first collective is being captured into a CUDA graph (arbor's decode steps) the peer
// setup fails ("failed to peer with device 1: operation not permitted when stream is
// capturing", seen on 2 x H200). Connect at init instead, unless the user chose otherwise.
static void connect_at_init() {
  setenv("NCCL_RUNTIME_CONNECT", "0", /*overwrite=*/0);
}

std::unique_ptr<Communicator> make_nccl_communicator(const NcclUniqueId& id, int nranks, int rank,
                                                     int cuda_device, const NcclOptions& options) {
  connect_at_init();
  check_group_args("make_nccl_communicator", nranks, rank, {cuda_device});
  const std::string where = "make_nccl_communicator: rank " + std::to_string(rank) + " of " +
                            std::to_string(nranks) + " on CUDA device " +
                            std::to_string(cuda_device) + ": ";
  if (const cudaError_t e = cudaSetDevice(cuda_device); e != cudaSuccess)
    throw CommError(where + "cudaSetDevice failed: " + cuda_text(e));
  ncclComm_t comm = nullptr;
  if (const ncclResult_t r = ncclCommInitRank(&comm, nranks, to_nccl(id), rank); r != ncclSuccess)
    throw CommError(where + "ncclCommInitRank failed: " + nccl_text(r, comm));
  return std::make_unique<NcclCommunicator>(comm, rank, nranks, cuda_device, options);
}

Group make_nccl_communicators(const NcclUniqueId& id, int nranks, int first_rank,
                              const std::vector<int>& devices, const NcclOptions& options) {
  connect_at_init();
  check_group_args("make_nccl_communicators", nranks, first_rank, devices);
  DeviceRestorer restore;
  const std::string where = "make_nccl_communicators: ranks " + std::to_string(first_rank) + ".." +
                            std::to_string(first_rank + int(devices.size()) - 1) + " of " +
                            std::to_string(nranks) + ": ";
  const ncclUniqueId raw = to_nccl(id);
  std::vector<ncclComm_t> comms(devices.size(), nullptr);
  std::string error;
  if (const ncclResult_t r = ncclGroupStart(); r != ncclSuccess)
    throw CommError(where + "ncclGroupStart failed: " + nccl_text(r, nullptr));
  for (size_t i = 0; i < devices.size() && error.empty(); ++i) {
    if (const cudaError_t e = cudaSetDevice(devices[i]); e != cudaSuccess) {
      error = "cudaSetDevice(" + std::to_string(devices[i]) + ") failed: " + cuda_text(e);
      break;
    }
    const int rank = first_rank + int(i);
    if (const ncclResult_t r = ncclCommInitRank(&comms[i], nranks, raw, rank); r != ncclSuccess)
      error =
          "ncclCommInitRank(rank " + std::to_string(rank) + ") failed: " + nccl_text(r, nullptr);
  }
  if (const ncclResult_t r = ncclGroupEnd(); r != ncclSuccess && error.empty())
    error = "ncclGroupEnd failed: " + nccl_text(r, nullptr);
  if (!error.empty()) {
    for (ncclComm_t c : comms)
      if (c) ncclCommAbort(c);
    throw CommError(where + error);
  }
  Group group;
  for (size_t i = 0; i < devices.size(); ++i) {
    ncclComm_t c = std::exchange(comms[i], nullptr);
    try {
      group.push_back(
          std::make_unique<NcclCommunicator>(c, first_rank + int(i), nranks, devices[i], options));
    } catch (...) {  // c was aborted by the constructor; abort the rest
      for (ncclComm_t rest : comms)
        if (rest) ncclCommAbort(rest);
      throw;
    }
  }
  return group;
}

Group make_nccl_group(const std::vector<int>& devices, const NcclOptions& options) {
  return make_nccl_communicators(nccl_unique_id(), int(devices.size()), 0, devices, options);
}

}  // namespace arbor::comm
