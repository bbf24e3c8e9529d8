// Building context-parallel CUDA runners: communicators (NCCL or simulated ranks on one GPU),
// one LlamaCuda runner per rank, and the ContextParallelRunner / followers that drive them.
#include <stdexcept>
#include <string>

#include <cuda_runtime.h>

#include "engine/comm/local_gpu_communicator.h"
#include "engine/comm/nccl_communicator.h"
#include "engine/comm/rendezvous.h"
#include "kernels/cuda/check.h"
#include "models/context_parallel_runner.h"
#include "models/llama_cuda.h"

namespace arbor {

const char* to_string(CpBackend backend) {
  return backend == CpBackend::nccl ? "nccl" : "local";
}

CpBackend parse_cp_backend(const std::string& name) {
  if (name == "nccl") return CpBackend::nccl;
  if (name == "local") return CpBackend::local;
  throw std::invalid_argument("unknown context-parallel backend '" + name +
                              "' (expected nccl or local)");
}

std::unique_ptr<ModelRunner> make_cuda_context_parallel_runner(
    const std::filesystem::path& model_dir, const CudaRunnerOptions& options,
    const CudaContextParallelOptions& cp) {
  if (cp.size < 1) throw std::invalid_argument("--context-parallel must be at least 1");
  if (cp.nnodes < 1 || cp.node_rank < 0 || cp.node_rank >= cp.nnodes)
    throw std::invalid_argument("node rank " + std::to_string(cp.node_rank) + " of " +
                                std::to_string(cp.nnodes) + " nodes is invalid");
  if (cp.size % cp.nnodes != 0)
    throw std::invalid_argument("--context-parallel " + std::to_string(cp.size) +
                                " is not a multiple of --nnodes " + std::to_string(cp.nnodes));
  const int local_ranks = cp.size / cp.nnodes;

  comm::Group comms;
  std::vector<int> devices;
  if (cp.backend == CpBackend::local) {
    if (cp.nnodes != 1) throw std::invalid_argument("the local backend runs on one node");
    comm::LocalGroupOptions lo;
    lo.timeout = kRankIdleTimeout;
    comms = comm::make_local_gpu_group(cp.size, options.device, lo);
    devices.assign(size_t(cp.size), options.device);
  } else {
    int visible = 0;
    CUDA_CHECK(cudaGetDeviceCount(&visible));
    if (local_ranks > visible)
      throw std::runtime_error("--context-parallel " + std::to_string(cp.size) + " over " +
                               std::to_string(cp.nnodes) + " node(s) needs " +
                               std::to_string(local_ranks) + " GPUs per node, " +
                               std::to_string(visible) + " visible" +
                               (local_ranks > 1 ? " (or use --cp-backend local to simulate "
                                                  "the ranks on one GPU)"
                                                : ""));
    for (int i = 0; i < local_ranks; ++i) devices.push_back(i);
    // The caller resolved the nodes and the master (serve: flag > ARBOR_* > MASTER_*); the
    // timeout comes from ARBOR_RENDEZVOUS_TIMEOUT_S. One node needs no rendezvous.
    comm::RendezvousOptions ro;
    if (cp.nnodes > 1)
      ro = comm::RendezvousOptions::resolve(
          {cp.nnodes, cp.node_rank, cp.master_addr, cp.master_port, std::nullopt});
    comm::NcclUniqueId id;
    if (cp.node_rank == 0) id = comm::nccl_unique_id();
    id = comm::NcclUniqueId::from_bytes(comm::rendezvous_broadcast(ro, id.to_bytes()));
    comm::NcclOptions no;
    no.timeout = kRankIdleTimeout;
    comms = comm::make_nccl_communicators(id, cp.size, cp.node_rank * local_ranks, devices, no);
  }

  std::vector<std::unique_ptr<ModelRunner>> ranks;
  for (int i = 0; i < local_ranks; ++i) {
    CudaRunnerOptions o = options;
    o.device = devices[size_t(i)];
    o.cp = ContextParallelRank{comms[size_t(i)].get(), cp.combine};
    if (cp.backend == CpBackend::local && o.num_kv_blocks == 0) {
      // Ranks share one GPU: rank i may fill it up to (i + 1)/p of the allowed fraction, so
      // each gets about an equal share of the KV memory.
      o.gpu_memory_utilization = options.gpu_memory_utilization * float(i + 1) / float(cp.size);
    }
    ranks.push_back(make_cuda_runner(model_dir, o));
  }
  RankThreadInit init = [devices](int i) { CUDA_CHECK(cudaSetDevice(devices[size_t(i)])); };
  if (cp.node_rank == 0) {
    CUDA_CHECK(cudaSetDevice(devices[0]));
    return std::make_unique<ContextParallelRunner>(std::move(comms), std::move(ranks), init);
  }
  ContextParallelFollowers followers(std::move(comms), std::move(ranks), init);
  followers.wait();
  return nullptr;
}

}  // namespace arbor
