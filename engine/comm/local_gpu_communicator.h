// The "local-gpu" backend (CUDA builds only): N simulated ranks on ONE GPU, for tests of the
// context-parallel path without several GPUs. Each rank is driven by its own thread and
// passes its own stream; buffers are device pointers on `device`.
//
// Every data op synchronizes the caller's stream (so peers can read its inputs), meets the
// other ranks at a host barrier, does its share with device-to-device copies and a small
// reduction kernel that reads the peers' device pointers directly (same device), then
// synchronizes its stream again and meets the others once more. So the ops block the
// calling thread until the result is complete, like the local-cpu backend. They are NOT
// graph capturable: called while `stream` is capturing, they throw CommError before
// enqueuing anything (end the capture and discard it).
// all_reduce reduces in rank order 0..n-1: every rank gets bit-identical results.
// Abort and timeout as local-cpu (LocalGroupOptions).
#pragma once

#include "engine/comm/communicator.h"

namespace arbor::comm {

// Ranks 0..n-1 on CUDA device `device`; at most kMaxLocalGpuRanks.
constexpr int kMaxLocalGpuRanks = 64;
Group make_local_gpu_group(int n, int device = 0, const LocalGroupOptions& options = {});

}  // namespace arbor::comm
