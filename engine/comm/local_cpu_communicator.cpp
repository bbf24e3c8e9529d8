// The "local-cpu" backend: N simulated ranks in one process, host memory.
#include <algorithm>
#include <cstring>
#include <memory>

#include "engine/comm/communicator.h"
#include "engine/comm/local_group.h"

namespace arbor::comm {
namespace {

// Reduces [begin, end) block by block: each block of every source is combined in rank
// order into a temporary, then written to every destination; a destination equal to its
// source (in place) is written only after the whole block was read.
template <typename T, typename Op>
void reduce_typed(const void* const* srcs, void* const* dsts, int n, size_t begin, size_t end,
                  Op op) {
  constexpr size_t kBlock = 1024;
  T tmp[kBlock];
  for (size_t b = begin; b < end; b += kBlock) {
    const size_t len = std::min(kBlock, end - b);
    std::memcpy(tmp, static_cast<const T*>(srcs[0]) + b, len * sizeof(T));
    for (int r = 1; r < n; ++r) {
      const T* s = static_cast<const T*>(srcs[r]) + b;
      for (size_t i = 0; i < len; ++i) tmp[i] = op(tmp[i], s[i]);
    }
    for (int r = 0; r < n; ++r) std::memcpy(static_cast<T*>(dsts[r]) + b, tmp, len * sizeof(T));
  }
}

template <typename T>
T max_of(T a, T b) {
  return b > a ? b : a;
}

class LocalCpuCommunicator final : public detail::LocalCommunicatorBase {
 public:
  using LocalCommunicatorBase::LocalCommunicatorBase;
  bool device_memory() const override { return false; }
  bool graph_capturable() const override { return false; }

 protected:
  void before_publish(Stream, const char*) override {}
  void after_work(Stream, const char*) override {}
  void copy(void* dst, const void* src, size_t bytes, Stream, const char*) override {
    std::memmove(dst, src, bytes);
  }
  void reduce(const void* const* srcs, void* const* dsts, int n, size_t begin, size_t end,
              DType dtype, ReduceOp op, Stream, const char*) override {
    const bool sum = op == ReduceOp::sum;
    switch (dtype) {
      case DType::f32:
        if (sum)
          reduce_typed<float>(srcs, dsts, n, begin, end, [](float a, float b) { return a + b; });
        else
          reduce_typed<float>(srcs, dsts, n, begin, end, max_of<float>);
        return;
      case DType::i32:  // two's-complement wraparound on overflow, as NCCL
        if (sum)
          reduce_typed<int32_t>(srcs, dsts, n, begin, end, [](int32_t a, int32_t b) {
            return int32_t(uint32_t(a) + uint32_t(b));
          });
        else
          reduce_typed<int32_t>(srcs, dsts, n, begin, end, max_of<int32_t>);
        return;
      case DType::u8:
        if (sum)
          reduce_typed<uint8_t>(srcs, dsts, n, begin, end,
                                [](uint8_t a, uint8_t b) { return uint8_t(a + b); });
        else
          reduce_typed<uint8_t>(srcs, dsts, n, begin, end, max_of<uint8_t>);
        return;
    }
  }
};

}  // namespace

Group make_local_cpu_group(int n, const LocalGroupOptions& options) {
  if (n < 1) throw CommError("make_local_cpu_group: group size " + std::to_string(n) + " < 1");
  auto group = std::make_shared<detail::LocalGroup>(n, "local-cpu", options);
  Group comms;
  for (int r = 0; r < n; ++r) comms.push_back(std::make_unique<LocalCpuCommunicator>(group, r));
  return comms;
}

}  // namespace arbor::comm
