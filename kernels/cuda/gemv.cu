#include "kernels/cuda/gemv.h"

#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/check.h"
#include "kernels/cuda/gemv_kernel.cuh"
#include "kernels/cuda/pdl.h"

namespace arbor::cuda {
namespace {

constexpr int kWarps = kGemvWarps;
constexpr int kMaxSmemBytes = 96 * 1024;

template <int M>
void launch(const bf16* x, const bf16* w, int n, int k, bf16* out, cudaStream_t stream) {
  const size_t smem = size_t(M) * k * sizeof(bf16);
  if (smem > 48 * 1024) {
    CUDA_CHECK(cudaFuncSetAttribute(detail::gemv_kernel<M, kGemvLoadsInFlight, kWarps>,
                                    cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  }
  const unsigned blocks = unsigned((n + kWarps - 1) / kWarps);
  launch_pdl(detail::gemv_kernel<M, kGemvLoadsInFlight, kWarps>, dim3(blocks), dim3(kWarps * 32),
             smem, stream, x, w, n, k, out);
  CUDA_CHECK_LAUNCH();
}

bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

}  // namespace

bool gemv_supported(const void* x, const void* w, int m, int k) {
  return x && w && m >= 1 && m <= kMaxGemvRows && k > 0 && k % 8 == 0 && aligned16(x) &&
         aligned16(w) && size_t(m) * size_t(k) * sizeof(bf16) <= size_t(kMaxSmemBytes);
}

void gemv(const bf16* x, const bf16* w, int m, int n, int k, bf16* out, cudaStream_t stream) {
  if (n <= 0 || !out || !gemv_supported(x, w, m, k)) {
    throw std::invalid_argument("gemv: unsupported shape or pointers (m=" + std::to_string(m) +
                                " n=" + std::to_string(n) + " k=" + std::to_string(k) +
                                "; need 1 <= m <= " + std::to_string(kMaxGemvRows) +
                                ", k % 8 == 0, 16-byte aligned x and w)");
  }
  switch (m) {
    case 1:
      return launch<1>(x, w, n, k, out, stream);
    case 2:
      return launch<2>(x, w, n, k, out, stream);
    case 3:
      return launch<3>(x, w, n, k, out, stream);
    default:
      return launch<4>(x, w, n, k, out, stream);
  }
}

}  // namespace arbor::cuda
