// The TCP rendezvous between "nodes" on threads over loopback.
#include <catch2/catch.hpp>

#include <chrono>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "engine/comm/rendezvous.h"

using namespace arbor::comm;
using namespace std::chrono_literals;

namespace {

// A port nobody listens on right now (bound to port 0, then closed).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(fd >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  socklen_t len = sizeof addr;
  REQUIRE(::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::vector<uint8_t> blob(size_t n) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) b[i] = uint8_t(i * 131 + 7);
  return b;
}

struct ClientResult {
  std::vector<uint8_t> got;
  std::string error;
};

}  // namespace

TEST_CASE("rendezvous: node 0 hands its blob to every node (nnodes 1..4)", "[comm]") {
  const int nnodes = GENERATE(1, 2, 3, 4);
  INFO("nnodes " << nnodes);
  const auto payload = blob(128);
  RendezvousServer server(nnodes, 0, 10s);
  REQUIRE(server.port() > 0);
  std::vector<ClientResult> results(static_cast<size_t>(nnodes));
  std::vector<std::thread> clients;
  for (int k = 1; k < nnodes; ++k)
    clients.emplace_back([&, k] {
      const RendezvousOptions o{.nnodes = nnodes,
                                .node_rank = k,
                                // an address and a host name
                                .master_addr = k % 2 ? "127.0.0.1" : "localhost",
                                .master_port = server.port(),
                                .timeout = 10s};
      try {
        results[size_t(k)].got = rendezvous_receive(o);
      } catch (const std::exception& e) {
        results[size_t(k)].error = e.what();
      }
    });
  std::string server_error;
  try {
    server.serve(payload);
  } catch (const std::exception& e) {
    server_error = e.what();
  }
  for (auto& t : clients) t.join();
  CHECK(server_error.empty());
  for (int k = 1; k < nnodes; ++k) {
    INFO("node " << k << ": " << results[size_t(k)].error);
    CHECK(results[size_t(k)].got == payload);
  }
}

TEST_CASE("rendezvous: clients started before the server retry until it listens", "[comm]") {
  const int nnodes = 3;
  const int port = free_port();
  const auto payload = blob(1000);
  std::vector<ClientResult> results(static_cast<size_t>(nnodes));
  std::vector<std::thread> threads;
  for (int k = 1; k < nnodes; ++k)
    threads.emplace_back([&, k] {
      const RendezvousOptions o{
          .nnodes = nnodes, .node_rank = k, .master_port = port, .timeout = 20s};
      try {
        results[size_t(k)].got = rendezvous_broadcast(o, {});
      } catch (const std::exception& e) {
        results[size_t(k)].error = e.what();
      }
    });
  std::this_thread::sleep_for(300ms);  // the clients have been refused a few times by now
  const RendezvousOptions o0{.nnodes = nnodes, .node_rank = 0, .master_port = port, .timeout = 20s};
  std::vector<uint8_t> got0;
  std::string error0;
  try {
    got0 = rendezvous_broadcast(o0, payload);
  } catch (const std::exception& e) {
    error0 = e.what();
  }
  for (auto& t : threads) t.join();
  INFO(error0);
  CHECK(got0 == payload);
  for (int k = 1; k < nnodes; ++k) {
    INFO("node " << k << ": " << results[size_t(k)].error);
    CHECK(results[size_t(k)].got == payload);
  }
}

TEST_CASE("rendezvous: a client with no server times out naming addr:port", "[comm]") {
  const int port = free_port();
  const RendezvousOptions o{.nnodes = 2,
                            .node_rank = 1,
                            .master_addr = "127.0.0.1",
                            .master_port = port,
                            .timeout = 300ms};
  const auto start = std::chrono::steady_clock::now();
  CHECK_THROWS_WITH(rendezvous_receive(o), Catch::Contains("127.0.0.1:" + std::to_string(port)) &&
                                               Catch::Contains("could not connect within 300 ms") &&
                                               Catch::Contains("node 1 of 2"));
  CHECK(std::chrono::steady_clock::now() - start < 5s);
}

TEST_CASE("rendezvous: an unresolvable host name fails with the resolver's error", "[comm]") {
  const RendezvousOptions o{.nnodes = 2,
                            .node_rank = 1,
                            .master_addr = "no-such-host.invalid",
                            .master_port = 29500,
                            .timeout = 200ms};
  CHECK_THROWS_WITH(rendezvous_receive(o), Catch::Contains("no-such-host.invalid:29500") &&
                                               Catch::Contains("cannot resolve host"));
}

TEST_CASE("rendezvous: the server times out naming the missing nodes", "[comm]") {
  RendezvousServer server(3, 0, 500ms);
  std::thread client([&] {
    const RendezvousOptions o{
        .nnodes = 3, .node_rank = 1, .master_port = server.port(), .timeout = 2s};
    try {
      rendezvous_receive(o);
    } catch (const std::exception&) {  // the server gives up, closing the connection
    }
  });
  CHECK_THROWS_WITH(server.serve(blob(8)),
                    Catch::Contains("waiting for node(s) 2 (1 of 2 connected)") &&
                        Catch::Contains(":" + std::to_string(server.port())));
  client.join();
}

TEST_CASE("rendezvous: a node with another nnodes is refused on both sides", "[comm]") {
  RendezvousServer server(2, 0, 5s);
  std::string client_error;
  std::thread client([&] {
    const RendezvousOptions o{
        .nnodes = 3, .node_rank = 1, .master_port = server.port(), .timeout = 5s};
    try {
      rendezvous_receive(o);
    } catch (const std::exception& e) {
      client_error = e.what();
    }
  });
  CHECK_THROWS_WITH(server.serve(blob(8)), Catch::Contains("node 1 has nnodes=3"));
  client.join();
  CHECK_THAT(client_error, Catch::Contains("node 0 refused") && Catch::Contains("nnodes=3"));
}

TEST_CASE("rendezvous: a stray connection is ignored", "[comm]") {
  RendezvousServer server(2, 0, 5s);
  std::thread stray([&] {
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(uint16_t(server.port()));
    if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0) {
      const char junk[16] = "GET / HTTP/1.0\n";
      (void)!::send(fd, junk, sizeof junk, 0);
    }
    ::close(fd);
  });
  stray.join();
  std::vector<uint8_t> got;
  std::thread client([&] {
    const RendezvousOptions o{
        .nnodes = 2, .node_rank = 1, .master_port = server.port(), .timeout = 5s};
    got = rendezvous_receive(o);
  });
  server.serve(blob(16));
  client.join();
  CHECK(got == blob(16));
}

TEST_CASE("RendezvousOptions::from_env", "[comm]") {
  std::map<std::string, std::string> env;
  auto get = [&](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  SECTION("defaults") {
    const auto o = RendezvousOptions::from_env(get);
    CHECK(o.nnodes == 1);
    CHECK(o.node_rank == 0);
    CHECK(o.master_addr == "127.0.0.1");
    CHECK(o.master_port == 29500);
    CHECK(o.timeout == 300s);
  }
  SECTION("ARBOR_ variables") {
    env = {{"ARBOR_NNODES", "4"},
           {"ARBOR_NODE_RANK", "3"},
           {"ARBOR_MASTER_ADDR", "node-a"},
           {"ARBOR_MASTER_PORT", "1234"},
           {"MASTER_ADDR", "ignored"},
           {"MASTER_PORT", "999"},
           {"ARBOR_RENDEZVOUS_TIMEOUT_S", "7"}};
    const auto o = RendezvousOptions::from_env(get);
    CHECK(o.nnodes == 4);
    CHECK(o.node_rank == 3);
    CHECK(o.master_addr == "node-a");
    CHECK(o.master_port == 1234);
    CHECK(o.timeout == 7s);
  }
  SECTION("torchrun's MASTER_ADDR / MASTER_PORT as fallback") {
    env = {{"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "6000"}};
    const auto o = RendezvousOptions::from_env(get);
    CHECK(o.master_addr == "10.0.0.1");
    CHECK(o.master_port == 6000);
  }
  SECTION("malformed values name the variable") {
    env = {{"ARBOR_NNODES", "two"}};
    CHECK_THROWS_WITH(RendezvousOptions::from_env(get), Catch::Contains("ARBOR_NNODES='two'"));
    env = {{"ARBOR_NNODES", "2"}, {"ARBOR_NODE_RANK", "2"}};
    CHECK_THROWS_WITH(RendezvousOptions::from_env(get), Catch::Contains("ARBOR_NODE_RANK=2"));
    env = {{"MASTER_PORT", "70000"}};
    CHECK_THROWS_WITH(RendezvousOptions::from_env(get), Catch::Contains("MASTER_PORT='70000'"));
    env = {{"ARBOR_MASTER_PORT", "12x"}};
    CHECK_THROWS_AS(RendezvousOptions::from_env(get), CommError);
  }
}

TEST_CASE("the rendezvous: flag > ARBOR_* > MASTER_ADDR / MASTER_PORT > default", "[comm]") {
  std::map<std::string, std::string> env;
  auto get = [&](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  };
  SECTION("torchrun's variables when nothing else is set") {
    env = {
        {"MASTER_ADDR", "10.0.0.1"}, {"MASTER_PORT", "6000"}, {"ARBOR_RENDEZVOUS_TIMEOUT_S", "20"}};
    const auto o =
        RendezvousOptions::resolve({2, 1, std::nullopt, std::nullopt, std::nullopt}, get);
    CHECK(o.nnodes == 2);
    CHECK(o.node_rank == 1);
    CHECK(o.master_addr == "10.0.0.1");
    CHECK(o.master_port == 6000);
    CHECK(o.timeout == 20s);
  }
  SECTION("ARBOR_ variables over torchrun's") {
    env = {{"MASTER_ADDR", "10.0.0.1"},
           {"MASTER_PORT", "6000"},
           {"ARBOR_MASTER_ADDR", "10.0.0.2"},
           {"ARBOR_MASTER_PORT", "7000"}};
    const auto o = RendezvousOptions::resolve({}, get);
    CHECK(o.master_addr == "10.0.0.2");
    CHECK(o.master_port == 7000);
  }
  SECTION("flags over every variable") {
    env = {{"MASTER_ADDR", "10.0.0.1"},         {"MASTER_PORT", "6000"}, {"ARBOR_MASTER_ADDR", "x"},
           {"ARBOR_MASTER_PORT", "7000"},       {"ARBOR_NNODES", "8"},   {"ARBOR_NODE_RANK", "7"},
           {"ARBOR_RENDEZVOUS_TIMEOUT_S", "20"}};
    const auto o = RendezvousOptions::resolve({4, 3, "node0", 1234, 5s}, get);
    CHECK(o.nnodes == 4);
    CHECK(o.node_rank == 3);
    CHECK(o.master_addr == "node0");
    CHECK(o.master_port == 1234);
    CHECK(o.timeout == 5s);
  }
  SECTION("bad values name their source") {
    env = {{"MASTER_PORT", "http"}};
    CHECK_THROWS_WITH(RendezvousOptions::resolve({2, 1, "a", std::nullopt, std::nullopt}, get),
                      Catch::Contains("MASTER_PORT='http'"));
    env = {{"ARBOR_RENDEZVOUS_TIMEOUT_S", "0"}};
    CHECK_THROWS_WITH(RendezvousOptions::resolve({}, get),
                      Catch::Contains("ARBOR_RENDEZVOUS_TIMEOUT_S='0'"));
    env = {};
    CHECK_THROWS_WITH(RendezvousOptions::resolve({2, 2, "a", 1, std::nullopt}, get),
                      Catch::Contains("node rank 2 is out of range for nnodes 2"));
  }
}
