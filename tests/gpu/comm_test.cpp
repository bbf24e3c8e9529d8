// The device communicators: local-gpu (simulated ranks on one GPU) and NCCL (one rank, and
// every visible GPU when there are several), with the same checks as the local-cpu backend
// (tests/comm/comm_checks.h), plus NCCL inside a CUDA graph.
#include <catch2/catch.hpp>

#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <cuda_runtime.h>

#include "engine/comm/communicator.h"
#include "engine/comm/local_gpu_communicator.h"
#include "engine/comm/nccl_communicator.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/device_buffer.h"
#include "tests/comm/comm_checks.h"

using namespace arbor::comm;
using arbor::test::comm::Buffers;
using arbor::test::comm::CheckOptions;

namespace {

// Device buffers on `device`, transfers on the rank's own stream. Made on the rank's thread.
class DeviceBuffers final : public Buffers {
 public:
  explicit DeviceBuffers(int device) : device_(device) {
    CUDA_CHECK(cudaSetDevice(device_));
    stream_ = std::make_unique<arbor::cuda::Stream>();
  }
  void* alloc(size_t bytes) override {
    CUDA_CHECK(cudaSetDevice(device_));
    blocks_.emplace_back(bytes ? bytes : 1);
    return blocks_.back().get();
  }
  void upload(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, stream_->get()));
    stream_->sync();
  }
  void download(void* dst, const void* src, size_t bytes) override {
    if (!bytes) return;
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, stream_->get()));
    stream_->sync();
  }
  Stream stream() override { return stream_->get(); }

 private:
  int device_;
  std::unique_ptr<arbor::cuda::Stream> stream_;
  std::vector<arbor::cuda::DeviceBuffer> blocks_;
};

int device_count() {
  int n = 0;
  CUDA_CHECK(cudaGetDeviceCount(&n));
  return n;
}

// Which device each rank's buffers live on: local-gpu ranks share `device`; NCCL rank r is on
// devices[r].
arbor::test::comm::BuffersFactory on_devices(std::vector<int> devices) {
  return [devices](Communicator& c) {
    const int d = devices.size() == 1 ? devices[0] : devices[size_t(c.rank())];
    return std::make_unique<DeviceBuffers>(d);
  };
}

void run_checks(Group& group, const arbor::test::comm::BuffersFactory& make,
                const CheckOptions& opt) {
  try {
    arbor::test::comm::run_standard_checks(group, make, opt);
  } catch (const std::exception& e) {
    FAIL(e.what());
  }
}

// Destroys each rank's communicator on its own thread (NCCL teardown of several ranks of one
// process is never serialized on one thread).
void destroy_concurrently(Group& group) {
  std::vector<std::thread> threads;
  for (auto& c : group) threads.emplace_back([&c] { c.reset(); });
  for (auto& t : threads) t.join();
  group.clear();
}

// Captures {copy in → buf; all_reduce(buf → out)} in a CUDA graph on every rank, then
// replays it twice with new inputs: out must be the sum over ranks of that replay's input.
void check_graph_captured_all_reduce(Group& group, const std::vector<int>& devices) {
  const size_t count = 4096;
  const int n = int(group.size());
  run_ranks(group, [&](Communicator& c) {
    const int r = c.rank();
    CUDA_CHECK(cudaSetDevice(devices[size_t(r)]));
    arbor::cuda::Stream stream;
    arbor::cuda::DeviceArray<float> in(count), buf(count), out(count);
    arbor::cuda::Graph graph;
    graph.capture(stream.get(), [&] {
      CUDA_CHECK(cudaMemcpyAsync(buf.data(), in.data(), count * sizeof(float),
                                 cudaMemcpyDeviceToDevice, stream.get()));
      c.all_reduce(buf.data(), out.data(), count, DType::f32, ReduceOp::sum, stream.get());
    });
    for (int replay = 1; replay <= 2; ++replay) {
      std::vector<float> x(count), want(count, 0.0f);
      for (size_t i = 0; i < count; ++i) {
        x[i] = float((r + 1) * replay) + float(i % 7);
        for (int q = 0; q < n; ++q) want[i] += float((q + 1) * replay) + float(i % 7);
      }
      in.upload(x.data(), count, stream.get());
      graph.launch(stream.get());
      std::vector<float> got(count);
      out.download(got.data(), count, stream.get());
      stream.sync();
      for (size_t i = 0; i < count; ++i)
        arbor::test::comm::ensure(got[i] == want[i],
                                  "graph replay " + std::to_string(replay) + " rank " +
                                      std::to_string(r) + " element " + std::to_string(i) + ": " +
                                      std::to_string(got[i]) + " want " + std::to_string(want[i]));
    }
  });
}

}  // namespace

TEST_CASE("local-gpu group passes the standard checks (n = 1, 2, 4)", "[gpu][comm]") {
  const int n = GENERATE(1, 2, 4);
  INFO("n = " << n);
  auto group = make_local_gpu_group(n, 0);
  REQUIRE(group.size() == size_t(n));
  CHECK(group[0]->name() == "local-gpu");
  CHECK(group[0]->device_memory());
  CHECK_FALSE(group[0]->graph_capturable());
  run_checks(group, on_devices({0}), CheckOptions{});
}

TEST_CASE("local-gpu refuses to be captured in a CUDA graph", "[gpu][comm]") {
  auto group = make_local_gpu_group(1, 0);
  CUDA_CHECK(cudaSetDevice(0));
  arbor::cuda::Stream stream;
  arbor::cuda::DeviceArray<float> buf(16);
  CUDA_CHECK(cudaStreamBeginCapture(stream.get(), cudaStreamCaptureModeThreadLocal));
  std::string error;
  try {
    group[0]->all_reduce(buf.data(), buf.data(), 16, DType::f32, ReduceOp::sum, stream.get());
  } catch (const CommError& e) {
    error = e.what();
  }
  cudaGraph_t graph = nullptr;
  cudaStreamEndCapture(stream.get(), &graph);
  if (graph) cudaGraphDestroy(graph);
  cudaGetLastError();
  CHECK_THAT(error, Catch::Contains("not graph capturable"));
}

TEST_CASE("local-gpu: a rank that throws makes the others fail with CommError", "[gpu][comm]") {
  LocalGroupOptions options;
  options.timeout = std::chrono::seconds(30);
  auto group = make_local_gpu_group(2, 0, options);
  std::string error0;
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(run_ranks(group,
                              [&](Communicator& c) {
                                if (c.rank() == 1) throw std::runtime_error("rank 1 exploded");
                                CUDA_CHECK(cudaSetDevice(0));
                                arbor::cuda::DeviceArray<float> buf(8);
                                try {
                                  c.all_reduce(buf.data(), buf.data(), 8, DType::f32, ReduceOp::sum,
                                               nullptr);
                                } catch (const CommError& e) {
                                  error0 = e.what();
                                  throw;
                                }
                              }),
                    "rank 1 exploded");
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
  CHECK_THAT(error0, Catch::Contains("local-gpu all_reduce on rank 0 of 2") &&
                         Catch::Contains("rank 1 exploded"));
}

// A build without NCCL (engine/comm/CMakeLists.txt) has no nccl backend: its calls say so.
static bool skip_without_nccl() {
  if (arbor::comm::nccl_available()) return false;
  CHECK_THROWS_WITH(make_nccl_group({0}), Catch::Contains("no NCCL"));
  WARN("NCCL tests skipped: this build has no NCCL");
  return true;
}

TEST_CASE("nccl with one rank: every op, and an all_reduce inside a CUDA graph", "[gpu][comm]") {
  if (skip_without_nccl()) return;
  std::printf("NCCL version %d\n", nccl_version());
  SECTION("make_nccl_group") {
    auto group = make_nccl_group({0});
    REQUIRE(group.size() == 1);
    CHECK(group[0]->name() == "nccl");
    CHECK(group[0]->device_memory());
    CHECK(group[0]->graph_capturable());
    run_checks(group, on_devices({0}), CheckOptions{false});
    try {
      check_graph_captured_all_reduce(group, {0});
    } catch (const std::exception& e) {
      FAIL(e.what());
    }
    destroy_concurrently(group);
  }
  SECTION("make_nccl_communicator from an id passed as bytes") {
    const auto id = NcclUniqueId::from_bytes(nccl_unique_id().to_bytes());
    Group group;
    group.push_back(make_nccl_communicator(id, 1, 0, 0));
    run_checks(group, on_devices({0}), CheckOptions{false});
    destroy_concurrently(group);
  }
  SECTION("bad arguments") {
    CHECK_THROWS_WITH(make_nccl_group({0, 0}), Catch::Contains("given twice"));
    CHECK_THROWS_WITH(make_nccl_group({device_count()}), Catch::Contains("does not exist"));
    auto group = make_nccl_group({0});
    float* p = nullptr;
    CHECK_THROWS_WITH(
        group[0]->broadcast(p, 1, DType::f32, 1, nullptr),
        Catch::Contains("nccl broadcast on rank 0 of 1") && Catch::Contains("root 1 out of range"));
    group[0]->abort("test");
    std::vector<uint8_t> bytes;
    CHECK_THROWS_WITH(group[0]->broadcast_bytes(bytes, 0), Catch::Contains("aborted: test"));
  }
}

TEST_CASE("nccl across every visible GPU", "[gpu][comm]") {
  if (skip_without_nccl()) return;
  const int n = device_count();
  if (n < 2) {
    std::printf("SKIPPED the multi-GPU NCCL test: %d GPU visible\n", n);
    WARN("multi-GPU NCCL test skipped: only " << n << " GPU visible");
    return;
  }
  std::vector<int> devices;
  for (int d = 0; d < n; ++d) devices.push_back(d);
  SECTION("make_nccl_group") {
    auto group = make_nccl_group(devices);
    REQUIRE(group.size() == size_t(n));
    run_checks(group, on_devices(devices), CheckOptions{false});
    try {
      check_graph_captured_all_reduce(group, devices);
    } catch (const std::exception& e) {
      FAIL(e.what());
    }
    destroy_concurrently(group);
  }
  SECTION("make_nccl_communicator called concurrently, one thread per rank") {
    const NcclUniqueId id = nccl_unique_id();
    Group group(static_cast<size_t>(n));
    std::vector<std::string> errors(static_cast<size_t>(n));
    std::vector<std::thread> threads;
    for (int r = 0; r < n; ++r)
      threads.emplace_back([&, r] {
        try {
          group[size_t(r)] = make_nccl_communicator(id, n, r, devices[size_t(r)]);
        } catch (const std::exception& e) {
          errors[size_t(r)] = e.what();
        }
      });
    for (auto& t : threads) t.join();
    for (const auto& e : errors) REQUIRE(e.empty());
    run_checks(group, on_devices(devices), CheckOptions{false});
    destroy_concurrently(group);
  }
}
