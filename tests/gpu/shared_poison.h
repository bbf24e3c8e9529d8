// Shared memory full of NaN before a kernel under test. A kernel that reads shared memory it
// has not written in its own launch (the rows of a ring stage past a split's end, say) then
// reads NaN, which fails the comparison, instead of whatever finite values an earlier launch
// left there, which a multiplication by p = 0 would hide.
#pragma once

#include <cuda_runtime.h>

namespace arbor::test {

// One block per SM, each writing all bits to 1 (NaN as bf16 and as fp32) over as much shared
// memory as a block may have. Shared memory keeps its contents from one kernel to the next on
// the GPUs tested (this is what makes the poison work); where it did not, the poison would only
// be weaker, never the cause of a failure.
void poison_shared_memory(cudaStream_t stream);

}  // namespace arbor::test
