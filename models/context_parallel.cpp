#include "models/context_parallel.h"

#include <stdexcept>

#include "engine/comm/communicator.h"
#include "kernels/cpu/ops.h"

namespace arbor {

const char* to_string(CpCombine combine) {
  return combine == CpCombine::allreduce ? "allreduce" : "allgather";
}

CpCombine parse_cp_combine(const std::string& name) {
  if (name == "allreduce") return CpCombine::allreduce;
  if (name == "allgather") return CpCombine::allgather;
  throw std::invalid_argument("unknown context-parallel combine '" + name +
                              "' (expected allreduce or allgather)");
}

int ContextParallelRank::size() const {
  return comm ? comm->size() : 1;
}

int ContextParallelRank::rank() const {
  return comm ? comm->rank() : 0;
}

void combine_partials_host(const ContextParallelRank& cp, const float* o, const float* lse,
                           size_t rows, int head_dim, float* out, std::vector<float>& scratch) {
  comm::Communicator& c = *cp.comm;
  if (c.device_memory())
    throw std::logic_error("combine_partials_host needs a host-memory communicator");
  const size_t packed = rows * (size_t(head_dim) + 1);
  if (cp.combine == CpCombine::allgather) {
    scratch.resize(packed * (size_t(c.size()) + 1));
    float* mine = scratch.data();
    float* gathered = mine + packed;
    cpu::pack_partials(o, lse, rows, head_dim, mine);
    c.all_gather(mine, gathered, packed, comm::DType::f32);
    cpu::merge_packed_partials(gathered, c.size(), rows, head_dim, out);
    return;
  }
  scratch.resize(rows + packed);
  float* max_lse = scratch.data();
  float* weighted = max_lse + rows;
  c.all_reduce(lse, max_lse, rows, comm::DType::f32, comm::ReduceOp::max);
  cpu::weight_partials(o, lse, max_lse, rows, head_dim, weighted);
  c.all_reduce(weighted, weighted, packed, comm::DType::f32, comm::ReduceOp::sum);
  cpu::normalize_weighted(weighted, rows, head_dim, out);
}

}  // namespace arbor
