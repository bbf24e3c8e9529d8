// Context parallelism ("tree attention across GPUs"): one sequence's KV cache is sharded over
// cp_size ranks (layout: kernels/paged_kv.h, local_kv_len), every rank runs the same batch
// with replicated weights, and per layer the ranks' partial attentions (o, lse) are combined
// through a communicator (engine/comm) by their log-sum-exp:
//   allreduce: all-reduce max of lse, then all-reduce sum of (exp(lse − max)·o, exp(lse − max)),
//              then divide — two collectives, messages of rows·(D+1) floats;
//   allgather: one all-gather of (o, lse) from every rank, merged locally — one collective,
//              p times the message.
// Both are exact up to fp32 rounding; the combine runs in fp32.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace arbor {

namespace comm {
class Communicator;
}

enum class CpCombine { allreduce, allgather };

const char* to_string(CpCombine combine);
// "allreduce" / "allgather"; throws std::invalid_argument naming the valid values.
CpCombine parse_cp_combine(const std::string& name);

// One rank's view. With comm == nullptr (or a communicator of size 1) a runner behaves
// exactly as without context parallelism.
struct ContextParallelRank {
  comm::Communicator* comm = nullptr;
  CpCombine combine = CpCombine::allgather;

  int size() const;
  int rank() const;
  bool enabled() const { return comm != nullptr; }
};

// Combines this rank's partials in host memory (comm->device_memory() must be false):
// o [rows][head_dim] and lse [rows] → out [rows][head_dim], the attention over all ranks'
// keys. `scratch` is resized as needed. Every rank gets the same out.
void combine_partials_host(const ContextParallelRank& cp, const float* o, const float* lse,
                           size_t rows, int head_dim, float* out, std::vector<float>& scratch);

}  // namespace arbor
