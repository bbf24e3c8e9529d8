// The local-cpu communicator: N simulated ranks on threads, host memory.
#include <catch2/catch.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/comm/communicator.h"
#include "tests/comm/comm_checks.h"

using namespace arbor::comm;
using arbor::test::comm::HostBuffers;

namespace {

LocalGroupOptions short_timeout(int ms) {
  LocalGroupOptions o;
  o.timeout = std::chrono::milliseconds(ms);
  return o;
}

// Runs fn(rank) on one thread per rank and returns each rank's exception message ("" if
// none). Unlike run_ranks it does not abort the group when a rank throws.
std::vector<std::string> run_raw(Group& group, const std::function<void(Communicator&)>& fn) {
  std::vector<std::string> errors(group.size());
  std::vector<std::thread> threads;
  for (size_t r = 0; r < group.size(); ++r)
    threads.emplace_back([&, r] {
      try {
        fn(*group[r]);
      } catch (const std::exception& e) {
        errors[r] = e.what();
      }
    });
  for (auto& t : threads) t.join();
  return errors;
}

}  // namespace

TEST_CASE("local-cpu group passes the standard checks for n = 1..8", "[comm]") {
  const int n = GENERATE(1, 2, 3, 4, 5, 6, 7, 8);
  INFO("n = " << n);
  auto group = make_local_cpu_group(n);
  REQUIRE(group.size() == size_t(n));
  for (int r = 0; r < n; ++r) {
    CHECK(group[size_t(r)]->rank() == r);
    CHECK(group[size_t(r)]->size() == n);
    CHECK(group[size_t(r)]->name() == "local-cpu");
    CHECK_FALSE(group[size_t(r)]->device_memory());
    CHECK_FALSE(group[size_t(r)]->graph_capturable());
  }
  try {
    arbor::test::comm::run_standard_checks(
        group, [](Communicator&) { return std::make_unique<HostBuffers>(); });
  } catch (const std::exception& e) {
    FAIL(e.what());
  }
}

TEST_CASE("local-cpu all_reduce sums f32 in rank order, bit-identical on every rank", "[comm]") {
  // 1e8 + 1 - 1e8 depends on the order; in rank order (1e8 + 1) rounds to 1e8 in fp32,
  // so the sum is 0 (another order would give 1).
  auto group = make_local_cpu_group(3);
  const float in[3] = {1e8f, 1.0f, -1e8f};
  std::vector<float> out(3);
  run_ranks(group, [&](Communicator& c) {
    float x = in[c.rank()];
    c.all_reduce(&x, &x, 1, DType::f32, ReduceOp::sum);
    out[size_t(c.rank())] = x;
  });
  CHECK(out[0] == 0.0f);
  CHECK(out[1] == out[0]);
  CHECK(out[2] == out[0]);
}

TEST_CASE("local-cpu: a rank that throws makes the others fail with CommError", "[comm]") {
  auto group = make_local_cpu_group(4, short_timeout(30000));
  std::vector<std::string> errors(4);
  const auto start = std::chrono::steady_clock::now();
  try {
    run_ranks(group, [&](Communicator& c) {
      try {
        if (c.rank() == 2) throw std::runtime_error("rank 2 exploded");
        float x = 1;
        c.all_reduce(&x, &x, 1, DType::f32, ReduceOp::sum);
        c.barrier();
      } catch (const CommError& e) {
        errors[size_t(c.rank())] = e.what();
        throw;
      }
    });
    FAIL("run_ranks did not throw");
  } catch (const CommError& e) {
    FAIL(std::string("run_ranks rethrew a CommError, not the cause: ") + e.what());
  } catch (const std::runtime_error& e) {
    CHECK(std::string(e.what()) == "rank 2 exploded");
  }
  // run_ranks aborted the group: nobody waited for the 30 s timeout.
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
  for (int r : {0, 1, 3}) {
    INFO("rank " << r << ": " << errors[size_t(r)]);
    CHECK(errors[size_t(r)].find("local-cpu") != std::string::npos);
    CHECK(errors[size_t(r)].find("rank 2") != std::string::npos);
    CHECK(errors[size_t(r)].find("rank 2 exploded") != std::string::npos);
  }
  // The group stays aborted.
  float x = 0;
  CHECK_THROWS_AS(group[0]->all_reduce(&x, &x, 1, DType::f32, ReduceOp::sum), CommError);
}

TEST_CASE("local-cpu: a rank that never arrives times out the others", "[comm]") {
  auto group = make_local_cpu_group(4, short_timeout(200));
  const auto start = std::chrono::steady_clock::now();
  const auto errors = run_raw(group, [](Communicator& c) {
    if (c.rank() == 2) return;  // never calls
    c.barrier();
  });
  CHECK(std::chrono::steady_clock::now() - start < std::chrono::seconds(10));
  CHECK(errors[2].empty());
  for (int r : {0, 1, 3}) {
    INFO(errors[size_t(r)]);
    CHECK(errors[size_t(r)].find("barrier on rank " + std::to_string(r) + " of 4") !=
          std::string::npos);
    // The first to time out names the missing rank; the others see its abort.
    CHECK(errors[size_t(r)].find("waiting for rank(s) 2 (3 of 4 arrived)") != std::string::npos);
  }
}

TEST_CASE("local-cpu: abort() from another thread wakes the waiting ranks", "[comm]") {
  auto group = make_local_cpu_group(3, short_timeout(60000));
  std::vector<std::string> errors(3);
  std::thread waiter0([&] {
    try {
      group[0]->barrier();
    } catch (const CommError& e) {
      errors[0] = e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  group[2]->abort("shutting down");
  waiter0.join();
  CHECK(errors[0].find("rank 2 aborted: shutting down") != std::string::npos);
}

TEST_CASE("local-cpu: destroying a rank's communicator aborts the group", "[comm]") {
  auto group = make_local_cpu_group(2, short_timeout(60000));
  std::string error;
  std::thread waiter([&] {
    try {
      group[0]->barrier();
    } catch (const CommError& e) {
      error = e.what();
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  group[1].reset();
  waiter.join();
  CHECK(error.find("rank 1's communicator was destroyed") != std::string::npos);
}

TEST_CASE("local-cpu: mismatched calls fail on every rank", "[comm]") {
  SECTION("different counts") {
    auto group = make_local_cpu_group(2, short_timeout(5000));
    const auto errors = run_raw(group, [](Communicator& c) {
      float x[8] = {};
      c.all_reduce(x, x, c.rank() == 0 ? 4 : 5, DType::f32, ReduceOp::sum);
    });
    for (const auto& e : errors) {
      INFO(e);
      CHECK(e.find("called all_reduce(count=") != std::string::npos);
    }
  }
  SECTION("different ops") {
    auto group = make_local_cpu_group(3, short_timeout(5000));
    const auto errors = run_raw(group, [](Communicator& c) {
      float x[3] = {};
      if (c.rank() == 1)
        c.all_gather(x, x + 1, 1, DType::f32);
      else
        c.broadcast(x, 1, DType::f32, 0);
    });
    for (const auto& e : errors) {
      INFO(e);
      CHECK(e.find("all_gather(count=1, f32)") != std::string::npos);
    }
  }
  SECTION("send_recv pairs that do not match") {
    auto group = make_local_cpu_group(3, short_timeout(5000));
    const auto errors = run_raw(group, [](Communicator& c) {
      float s = 1, r = 0;
      c.send_recv(&s, 0, &r, 0, 1, DType::f32);  // everyone sends to 0 and receives from 0
    });
    CHECK(errors[1].find("its source rank 0") != std::string::npos);
    CHECK(errors[2].find("its source rank 0") != std::string::npos);
    CHECK_FALSE(errors[0].empty());  // woken by the others' abort
  }
}

TEST_CASE("local-cpu: bad arguments throw CommError naming the call", "[comm]") {
  auto group = make_local_cpu_group(1);
  Communicator& c = *group[0];
  float x[4] = {};
  std::vector<uint8_t> b;
  CHECK_THROWS_WITH(c.broadcast(x, 1, DType::f32, 1),
                    Catch::Contains("broadcast on rank 0 of 1") && Catch::Contains("root 1"));
  group = make_local_cpu_group(1);  // the failed call aborted the group
  CHECK_THROWS_WITH(group[0]->all_reduce(x, x + 1, 2, DType::f32, ReduceOp::sum),
                    Catch::Contains("overlap"));
  group = make_local_cpu_group(1);
  CHECK_THROWS_WITH(group[0]->send_recv(x, 0, x, 1, 1, DType::f32), Catch::Contains("src 1"));
  group = make_local_cpu_group(2);
  CHECK_THROWS_WITH(group[0]->broadcast_bytes(b, -1), Catch::Contains("root -1"));
  CHECK_THROWS_AS(make_local_cpu_group(0), CommError);
}

TEST_CASE("local-cpu: send_recv to itself and the in-place forms", "[comm]") {
  auto group = make_local_cpu_group(1);
  Communicator& c = *group[0];
  float a[3] = {1, 2, 3}, b[3] = {};
  c.send_recv(a, 0, b, 0, 3, DType::f32);
  CHECK(b[2] == 3);
  c.send_recv(a, 0, a, 0, 3, DType::f32);  // a self copy onto itself is allowed
  float g[3] = {7, 8, 9};
  c.all_gather(g, g, 3, DType::f32);  // rank 0's in-place position is recv itself
  CHECK(g[1] == 8);
}
