// The "nccl" backend (CUDA builds only): one rank per GPU, ranks in one process (threads) or
// in several processes and nodes. Buffers are device pointers on the rank's device; the
// data ops are asynchronous on `stream` and graph capturable; broadcast_bytes() and
// barrier() run on an internal stream, block the calling thread and are not capturable.
//
// Creating ranks (ncclCommInitRank blocks until all nranks ranks have joined):
//   * one process, all its GPUs:  make_nccl_group({0, 1, ...}) — rank r on devices[r].
//   * several processes / nodes:  one process creates the id (nccl_unique_id()), every
//     process receives it (e.g. rendezvous_broadcast(RendezvousOptions::from_env(),
//     id.to_bytes()), engine/comm/rendezvous.h), then each process creates its ranks
//     either with make_nccl_communicators(id, nranks, first_rank, its_devices) from one
//     thread, or with make_nccl_communicator(id, nranks, rank, device) called concurrently
//     from one thread per rank (never sequentially from one thread: the first call would
//     wait forever for the others).
// A CUDA device holds at most one rank of a communicator.
//
// Threading: each rank's communicator is used by one thread at a time; NCCL does not allow
// concurrent calls on communicators of the same device. The ops make the rank's device
// current on the calling thread. Destroy the communicators of a group after all their work
// is done (the destructor calls ncclCommDestroy; after a failed NCCL call, ncclCommAbort).
//
// Errors: every failed NCCL or CUDA call throws CommError naming the call, the rank, size
// and device, ncclGetErrorString and ncclGetLastError. NCCL data ops cannot time out (a
// missing peer makes the GPU wait); broadcast_bytes() and barrier() poll their internal
// stream and throw (and abort the communicator) after NcclOptions::timeout.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <vector>

#include "engine/comm/communicator.h"

namespace arbor::comm {

// ncclUniqueId as plain bytes (NCCL_UNIQUE_ID_BYTES), so nccl.h stays out of this header.
struct NcclUniqueId {
  std::array<uint8_t, 128> bytes{};
  std::vector<uint8_t> to_bytes() const { return {bytes.begin(), bytes.end()}; }
  static NcclUniqueId from_bytes(const std::vector<uint8_t>& b);  // throws on wrong size
};

struct NcclOptions {
  // Host waits of broadcast_bytes() and barrier() give up after this long.
  std::chrono::milliseconds timeout{300000};
};

// Whether this build has NCCL (found when it was configured, engine/comm/CMakeLists.txt).
// Without it every function below throws CommError saying so.
bool nccl_available();

// ncclGetUniqueId: call once (on one node) and share the result with every rank.
NcclUniqueId nccl_unique_id();
// The NCCL library version linked at run time, e.g. 22809 for 2.28.9.
int nccl_version();

// One rank of an nranks-rank communicator on CUDA device `cuda_device` (made current on the
// calling thread). Blocks until every rank has joined.
std::unique_ptr<Communicator> make_nccl_communicator(const NcclUniqueId& id, int nranks, int rank,
                                                     int cuda_device,
                                                     const NcclOptions& options = {});
// Ranks first_rank .. first_rank + devices.size() - 1 (rank first_rank + i on devices[i]) of
// an nranks-rank communicator, created from the calling thread (one NCCL group call).
// Blocks until every rank of the communicator has joined. The caller's current device is
// restored.
Group make_nccl_communicators(const NcclUniqueId& id, int nranks, int first_rank,
                              const std::vector<int>& devices, const NcclOptions& options = {});
// A single-process group: rank r on devices[r] (distinct devices).
Group make_nccl_group(const std::vector<int>& devices, const NcclOptions& options = {});

}  // namespace arbor::comm
