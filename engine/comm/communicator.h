// Communicators for context-parallel (tree) attention: one object per rank, a common
// interface over three backends.
//
//   "local-cpu"  N simulated ranks in one process, host memory (make_local_cpu_group, here).
//   "local-gpu"  N simulated ranks on ONE GPU, device memory
//   (engine/comm/local_gpu_communicator.h). "nccl"       NCCL, one rank per GPU, in one or several
//   processes/nodes
//                (engine/comm/nccl_communicator.h; engine/comm/rendezvous.h shares the id).
//
// Threading. One communicator per rank; each is used by one thread at a time (normally the
// rank's own thread). Every rank must make the same sequence of calls (same op, count,
// dtype, root); a mismatch is detected by the local backends (CommError on every rank),
// and is undefined (usually a hang) with NCCL. abort() is the exception to the threading
// rule for the local backends (see there).
//
// Buffers. device_memory() says what `send`/`recv`/`buf` are: host pointers (local-cpu) or
// CUDA device pointers of the communicator's device (local-gpu, nccl). Each rank's buffers
// are its own: two ranks never pass overlapping buffers.
//
// Streams. Device communicators order each op on `stream` like a kernel launch on it: the
// op reads its inputs after earlier work on `stream` and its outputs are visible to later
// work on `stream`. (local-gpu achieves this by synchronizing the stream on the host, so its
// ops also block the calling thread; NCCL's are asynchronous.) Host communicators ignore
// `stream` (pass nullptr).
//
// Errors. Every failure is a CommError whose message names the backend, the call, the rank
// and size, and the cause.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

// cudaStream_t is `struct CUstream_st*`; declared here at global scope so that Stream is the
// very same type without including CUDA headers (an elaborated `struct CUstream_st*` inside
// the namespace would declare a different arbor::comm::CUstream_st).
struct CUstream_st;

namespace arbor::comm {

enum class DType : uint8_t { f32, i32, u8 };
enum class ReduceOp : uint8_t { sum, max };
using Stream = CUstream_st*;  // == cudaStream_t; nullptr: the legacy default stream / host

size_t dtype_size(DType);
const char* to_string(DType);
const char* to_string(ReduceOp);

struct CommError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;
  virtual int size() const = 0;
  // true: buffers are CUDA device pointers and ops are ordered on `stream`.
  virtual bool device_memory() const = 0;
  // true: the data ops (all_reduce, all_gather, broadcast, send_recv) may be captured in a
  // CUDA graph on `stream` (NCCL). broadcast_bytes() and barrier() never may.
  virtual bool graph_capturable() const = 0;
  virtual std::string name() const = 0;  // "local-cpu", "local-gpu", "nccl"

  // Collectives: every rank calls with the same count/dtype (and op/root). count == 0 is a
  // valid no-op collective (every rank still has to call).
  //
  // all_reduce: recv[i] = op over ranks of send[i]. In place when send == recv; otherwise
  // send and recv must not overlap. The local backends reduce in rank order 0..n-1, so
  // every rank gets bit-identical results (NCCL gives identical results on every rank too,
  // in its own order).
  virtual void all_reduce(const void* send, void* recv, size_t count, DType, ReduceOp,
                          Stream = nullptr) = 0;
  // all_gather: recv holds size()*count elements, rank-major (rank r's send at r*count).
  // In place (NCCL's convention) when send == recv + rank()*count; otherwise send must
  // not overlap recv.
  virtual void all_gather(const void* send, void* recv, size_t count, DType, Stream = nullptr) = 0;
  // broadcast: root's buf is copied to every other rank's buf.
  virtual void broadcast(void* buf, size_t count, DType, int root, Stream = nullptr) = 0;
  // Point to point, for the ring-attention baseline: send `count` elements to `dst` and
  // receive `count` from `src` in one step; no deadlock around a ring. send and recv must
  // not overlap (double-buffer), except dst == src == rank(), a plain copy. In the local
  // backends this is a collective step: every rank of the group must call send_recv
  // together (as a ring step does), with matching pairs (rank src's dst is this rank).
  // With NCCL only the pairs must match.
  virtual void send_recv(const void* send, int dst, void* recv, int src, size_t count, DType,
                         Stream = nullptr) = 0;

  // Host control plane: root's `bytes` replaces `bytes` on every other rank (any length,
  // including 0; the size travels first). Blocking; host memory on every backend; not
  // graph capturable.
  virtual void broadcast_bytes(std::vector<uint8_t>& bytes, int root) = 0;
  // Host barrier: returns on a rank once every rank has called barrier(). It neither waits
  // for nor orders device work on any caller stream (synchronize your streams first if the
  // barrier must cover them); the NCCL backend implements it as a 1-element all_reduce on
  // an internal stream which it then synchronizes. Not graph capturable.
  virtual void barrier() = 0;

  // Gives up on the group: every later call on this communicator throws CommError.
  // Local backends: callable from any thread; every rank blocked in (or later entering) a
  // call gets CommError naming this rank and `reason`, instead of waiting for its timeout.
  // NCCL: ncclCommAbort; call it from the rank's own thread (peers blocked in NCCL are
  // not woken; they need their own timeout or abort).
  virtual void abort(const std::string& reason) = 0;
};

using Group = std::vector<std::unique_ptr<Communicator>>;

struct LocalGroupOptions {
  // A rank waiting longer than this for its peers aborts the whole group with a CommError
  // naming the ranks that did not arrive.
  std::chrono::milliseconds timeout{60000};
};

// N simulated ranks in one process, host memory; rank r's communicator is group[r] and is
// used by its own thread. Any n >= 1. Destroying one rank's communicator aborts the group
// for the others (they get CommError rather than hang); destroy the group after its threads
// are done.
Group make_local_cpu_group(int n, const LocalGroupOptions& options = {});

// Runs fn(*group[r]) on one thread per rank and joins them. When a rank throws, its
// communicator is aborted (so the others fail fast with CommError instead of waiting for a
// timeout) and, after every thread has finished, the first exception thrown (the cause, not
// the aborts it triggered) is rethrown. For device communicators, fn sets the CUDA device
// it needs (the communicators' ops set their own device).
void run_ranks(Group& group, const std::function<void(Communicator&)>& fn);

}  // namespace arbor::comm
