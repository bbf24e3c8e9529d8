// The checks every communicator backend must pass, shared by the CPU tests (local-cpu,
// tests/comm) and the GPU tests (local-gpu, NCCL; tests/gpu/comm_test.cpp). Each rank runs
// them on its own thread (run_ranks); a failed check throws CheckFailed (Catch2 v2 assertions
// are not thread-safe), which run_ranks rethrows on the test's thread.
#pragma once

#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "engine/comm/communicator.h"

namespace arbor::test::comm {

using arbor::comm::Communicator;
using arbor::comm::DType;
using arbor::comm::ReduceOp;

struct CheckFailed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

inline void ensure(bool ok, const std::string& what) {
  if (!ok) throw CheckFailed(what);
}

// memcmp that accepts empty ranges (whose pointers may be null).
inline bool same_bytes(const void* a, const void* b, size_t n) {
  return n == 0 || std::memcmp(a, b, n) == 0;
}

// Where a rank's buffers live: host vectors (local-cpu) or device memory (GPU backends).
// Made on the rank's own thread; owns everything it allocates.
class Buffers {
 public:
  virtual ~Buffers() = default;
  virtual void* alloc(size_t bytes) = 0;
  virtual void upload(void* dst, const void* src, size_t bytes) = 0;    // complete on return
  virtual void download(void* dst, const void* src, size_t bytes) = 0;  // complete on return
  virtual arbor::comm::Stream stream() = 0;
};
using BuffersFactory = std::function<std::unique_ptr<Buffers>(Communicator&)>;

class HostBuffers final : public Buffers {
 public:
  void* alloc(size_t bytes) override {
    blocks_.emplace_back(bytes ? bytes : 1);
    return blocks_.back().data();
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  void download(void* dst, const void* src, size_t bytes) override {
    if (bytes) std::memcpy(dst, src, bytes);
  }
  arbor::comm::Stream stream() override { return nullptr; }

 private:
  std::vector<std::vector<uint8_t>> blocks_;
};

struct CheckOptions {
  // true: f32 all_reduce sums must equal the sum in rank order 0..n-1 bit for bit (local
  // backends); false: within a relative tolerance (NCCL's order is its own).
  bool exact_f32_sum = true;
};

// State shared by the ranks of one run (written by each rank in its own slot).
struct SharedState {
  explicit SharedState(int n) : f32_sums(size_t(n)) {}
  std::vector<std::vector<float>> f32_sums;  // rank r's result of one f32 sum all_reduce
  std::atomic<int> barrier_counter{0};
};

inline uint32_t mix(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t h = a * 0x9E3779B1u ^ (b + 0x7F4A7C15u) * 0x85EBCA77u ^ (c + 0x165667B1u) * 0xC2B2AE3Du;
  h ^= h >> 15;
  h *= 0x2C1B3C6Du;
  h ^= h >> 12;
  return h;
}

// Rank r's i-th input element (salt tells calls apart).
template <typename T>
T input(int rank, size_t i, uint32_t salt) {
  const uint32_t h = mix(uint32_t(rank), uint32_t(i), salt);
  if constexpr (std::is_same_v<T, float>) {
    return float(int(h % 2001) - 1000) / 37.0f;  // not exact in binary: sums round
  } else if constexpr (std::is_same_v<T, int32_t>) {
    return int32_t(h % 200001) - 100000;
  } else {
    return uint8_t(h);
  }
}

template <typename T>
constexpr DType dtype_of() {
  if constexpr (std::is_same_v<T, float>)
    return DType::f32;
  else if constexpr (std::is_same_v<T, int32_t>)
    return DType::i32;
  else
    return DType::u8;
}

template <typename T>
std::vector<T> inputs(int rank, size_t count, uint32_t salt) {
  std::vector<T> v(count);
  for (size_t i = 0; i < count; ++i) v[i] = input<T>(rank, i, salt);
  return v;
}

template <typename T>
T combine(T a, T b, ReduceOp op) {
  if (op == ReduceOp::max) return b > a ? b : a;
  if constexpr (std::is_same_v<T, float>)
    return a + b;
  else if constexpr (std::is_same_v<T, int32_t>)
    return int32_t(uint32_t(a) + uint32_t(b));
  else
    return uint8_t(a + b);
}

inline std::string ctx(const Communicator& c, const std::string& what) {
  return c.name() + " rank " + std::to_string(c.rank()) + " of " + std::to_string(c.size()) + ": " +
         what;
}

template <typename T>
void check_all_reduce(Communicator& c, Buffers& mem, const CheckOptions& opt, SharedState& shared,
                      size_t count, ReduceOp op, bool in_place, uint32_t salt) {
  const int n = c.size();
  const size_t bytes = count * sizeof(T);
  const auto mine = inputs<T>(c.rank(), count, salt);
  std::vector<T> want = inputs<T>(0, count, salt);
  std::vector<double> magnitude(count);
  for (size_t i = 0; i < count; ++i) magnitude[i] = std::abs(double(want[i]));
  for (int r = 1; r < n; ++r) {
    const auto x = inputs<T>(r, count, salt);
    for (size_t i = 0; i < count; ++i) {
      want[i] = combine(want[i], x[i], op);
      magnitude[i] += std::abs(double(x[i]));
    }
  }
  void* send = mem.alloc(bytes);
  void* recv = in_place ? send : mem.alloc(bytes);
  mem.upload(send, mine.data(), bytes);
  if (!in_place) {
    const std::vector<uint8_t> poison(bytes, 0xAB);
    mem.upload(recv, poison.data(), bytes);
  }
  c.all_reduce(send, recv, count, dtype_of<T>(), op, mem.stream());
  std::vector<T> got(count);
  mem.download(got.data(), recv, bytes);
  const std::string what = std::string("all_reduce ") + to_string(dtype_of<T>()) + " " +
                           to_string(op) + (in_place ? " in place" : "") +
                           " count=" + std::to_string(count);
  for (size_t i = 0; i < count; ++i) {
    bool ok = got[i] == want[i];
    if constexpr (std::is_same_v<T, float>) {
      if (!opt.exact_f32_sum && op == ReduceOp::sum)
        ok = std::abs(double(got[i]) - double(want[i])) <= 1e-5 * (magnitude[i] + 1);
    }
    ensure(ok, ctx(c, what + ": element " + std::to_string(i) + " is " +
                          std::to_string(double(got[i])) + ", want " +
                          std::to_string(double(want[i]))));
  }
  if (!in_place) {
    std::vector<T> still(count);
    mem.download(still.data(), send, bytes);
    ensure(same_bytes(still.data(), mine.data(), bytes),
           ctx(c, what + ": the send buffer changed"));
  }
  if constexpr (std::is_same_v<T, float>) {
    if (op == ReduceOp::sum) shared.f32_sums[size_t(c.rank())] = got;
  }
}

template <typename T>
void check_all_gather(Communicator& c, Buffers& mem, size_t count, bool in_place, uint32_t salt) {
  const int n = c.size();
  const size_t bytes = count * sizeof(T);
  const auto mine = inputs<T>(c.rank(), count, salt);
  void* recv = mem.alloc(bytes * size_t(n));
  const std::vector<uint8_t> poison(bytes * size_t(n), 0xCD);
  mem.upload(recv, poison.data(), poison.size());
  void* send = in_place ? static_cast<char*>(recv) + bytes * size_t(c.rank()) : mem.alloc(bytes);
  mem.upload(send, mine.data(), bytes);
  c.all_gather(send, recv, count, dtype_of<T>(), mem.stream());
  std::vector<T> got(count * size_t(n));
  mem.download(got.data(), recv, bytes * size_t(n));
  for (int r = 0; r < n; ++r) {
    const auto want = inputs<T>(r, count, salt);
    ensure(same_bytes(got.data() + size_t(r) * count, want.data(), bytes),
           ctx(c, std::string("all_gather ") + to_string(dtype_of<T>()) +
                      (in_place ? " in place" : "") + " count=" + std::to_string(count) +
                      ": block of rank " + std::to_string(r) + " is wrong"));
  }
}

template <typename T>
void check_broadcast(Communicator& c, Buffers& mem, size_t count, int root, uint32_t salt) {
  const size_t bytes = count * sizeof(T);
  const auto mine = inputs<T>(c.rank(), count, salt);
  void* buf = mem.alloc(bytes);
  mem.upload(buf, mine.data(), bytes);
  c.broadcast(buf, count, dtype_of<T>(), root, mem.stream());
  std::vector<T> got(count);
  mem.download(got.data(), buf, bytes);
  const auto want = inputs<T>(root, count, salt);
  ensure(same_bytes(got.data(), want.data(), bytes),
         ctx(c, "broadcast from root " + std::to_string(root) + " count=" + std::to_string(count) +
                    " is wrong"));
}

template <typename T>
void check_send_recv(Communicator& c, Buffers& mem, size_t count, int shift, uint32_t salt) {
  const int n = c.size(), r = c.rank();
  const int dst = ((r + shift) % n + n) % n, src = ((r - shift) % n + n) % n;
  const size_t bytes = count * sizeof(T);
  const auto mine = inputs<T>(r, count, salt);
  void* send = mem.alloc(bytes);
  void* recv = mem.alloc(bytes);
  mem.upload(send, mine.data(), bytes);
  c.send_recv(send, dst, recv, src, count, dtype_of<T>(), mem.stream());
  std::vector<T> got(count);
  mem.download(got.data(), recv, bytes);
  const auto want = inputs<T>(src, count, salt);
  ensure(same_bytes(got.data(), want.data(), bytes),
         ctx(c, "send_recv shift " + std::to_string(shift) + " count=" + std::to_string(count) +
                    ": data from rank " + std::to_string(src) + " is wrong"));
}

inline std::vector<uint8_t> payload(int root, size_t len) {
  std::vector<uint8_t> v(len);
  for (size_t i = 0; i < len; ++i) v[i] = uint8_t(mix(uint32_t(root), uint32_t(i), 77));
  return v;
}

// Every op, several shapes; to be run by every rank of `c`'s group at once.
inline void run_standard_checks(Communicator& c, Buffers& mem, const CheckOptions& opt,
                                SharedState& shared) {
  const int n = c.size();
  uint32_t salt = 1;
  for (size_t count : {size_t(0), size_t(1), size_t(5), size_t(1000), size_t(4099)}) {
    for (ReduceOp op : {ReduceOp::sum, ReduceOp::max}) {
      for (bool in_place : {false, true}) {
        check_all_reduce<float>(c, mem, opt, shared, count, op, in_place, ++salt);
        check_all_reduce<int32_t>(c, mem, opt, shared, count, op, in_place, ++salt);
        check_all_reduce<uint8_t>(c, mem, opt, shared, count, op, in_place, ++salt);
      }
    }
  }
  // One more f32 sum, whose results every rank publishes: they must be bit-identical.
  check_all_reduce<float>(c, mem, opt, shared, 3001, ReduceOp::sum, false, ++salt);
  c.barrier();
  for (int r = 0; r < n; ++r)
    ensure(shared.f32_sums[size_t(r)] == shared.f32_sums[0],
           ctx(c, "f32 all_reduce results of rank " + std::to_string(r) + " and rank 0 differ"));
  c.barrier();  // nobody overwrites f32_sums before everyone compared

  for (size_t count : {size_t(0), size_t(1), size_t(1000)}) {
    for (bool in_place : {false, true}) {
      check_all_gather<float>(c, mem, count, in_place, ++salt);
      check_all_gather<int32_t>(c, mem, count, in_place, ++salt);
      check_all_gather<uint8_t>(c, mem, count, in_place, ++salt);
    }
  }
  for (int root = 0; root < n; ++root) {
    check_broadcast<float>(c, mem, 1000, root, ++salt);
    check_broadcast<uint8_t>(c, mem, 3, root, ++salt);
  }
  check_broadcast<int32_t>(c, mem, 0, n - 1, ++salt);
  for (int shift : {1, -1, 2}) {
    check_send_recv<float>(c, mem, 1000, shift, ++salt);
    check_send_recv<uint8_t>(c, mem, 3, shift, ++salt);
  }
  check_send_recv<int32_t>(c, mem, 0, 1, ++salt);

  for (int root = 0; root < n; ++root) {
    for (size_t len : {size_t(0), size_t(5), size_t(1) << 20}) {
      std::vector<uint8_t> bytes = c.rank() == root ? payload(root, len) : payload(99, 17);
      c.broadcast_bytes(bytes, root);
      ensure(bytes == payload(root, len),
             ctx(c, "broadcast_bytes from root " + std::to_string(root) + " of " +
                        std::to_string(len) + " bytes is wrong (got " +
                        std::to_string(bytes.size()) + " bytes)"));
    }
  }
  for (int round = 1; round <= 3; ++round) {
    shared.barrier_counter.fetch_add(1);
    c.barrier();
    const int seen = shared.barrier_counter.load();
    ensure(seen == round * n, ctx(c, "after barrier round " + std::to_string(round) +
                                         " the "
                                         "counter is " +
                                         std::to_string(seen)));
    c.barrier();  // nobody increments for the next round before everyone read
  }
}

// Runs run_standard_checks on every rank of `group`, each with buffers from `make`.
inline void run_standard_checks(arbor::comm::Group& group, const BuffersFactory& make,
                                const CheckOptions& opt = {}) {
  SharedState shared(int(group.size()));
  arbor::comm::run_ranks(group, [&](Communicator& c) {
    auto mem = make(c);
    run_standard_checks(c, *mem, opt, shared);
  });
}

}  // namespace arbor::test::comm
