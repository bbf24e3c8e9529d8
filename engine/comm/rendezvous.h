// TCP rendezvous across nodes: node 0 hands a byte blob (normally the NCCL unique id, see
// engine/comm/nccl_communicator.h) to every other node before they create communicators.
//
//   node 0:  listens on master_port (all IPv4 interfaces), waits until nodes 1..nnodes-1
//            have connected and said who they are, then sends each of them the blob.
//   node k:  connects to master_addr:master_port (IPv4 address or host name), retrying with
//            backoff while node 0 is not listening yet, and receives the blob.
// Both sides give up after `timeout` with a CommError naming addr:port and what was missing.
//
// Wire format (integers big-endian): node k → node 0: "ARBR", u32 version (1), u32 nnodes,
// u32 node_rank. Node 0 → node k: "ARBR", u32 status (0 ok, 1 error), u64 length, then the
// blob (ok) or an error message (error: a node with a mismatched nnodes, an out-of-range
// or duplicate node_rank; node 0 fails too). Connections that do not start with the magic
// are dropped and ignored.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "engine/comm/communicator.h"

namespace arbor::comm {

struct RendezvousOptions {
  int nnodes = 1;
  int node_rank = 0;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;  // node 0 may use 0 (an ephemeral port) with RendezvousServer
  std::chrono::milliseconds timeout{300000};

  // What a command line (or a config file) set; unset fields come from the environment.
  struct Given {
    std::optional<int> nnodes, node_rank;
    std::optional<std::string> master_addr;
    std::optional<int> master_port;
    std::optional<std::chrono::milliseconds> timeout;
  };

  // Each field from `given`, else the environment: ARBOR_NNODES (default 1),
  // ARBOR_NODE_RANK (default 0), ARBOR_MASTER_ADDR (else MASTER_ADDR, default 127.0.0.1),
  // ARBOR_MASTER_PORT (else MASTER_PORT, default 29500), ARBOR_RENDEZVOUS_TIMEOUT_S
  // (default 300). Malformed or out-of-range values, and a node rank >= nnodes, throw a
  // CommError naming the variable.
  static RendezvousOptions resolve(const Given& given);
  // The same, reading variables through `getenv` (tests).
  static RendezvousOptions resolve(const Given& given,
                                   const std::function<const char*(const char*)>& getenv);
  // resolve() with nothing given.
  static RendezvousOptions from_env();
  static RendezvousOptions from_env(const std::function<const char*(const char*)>& getenv);
};

// Node 0's side. The constructor binds and listens (so port() is known, also for port 0).
class RendezvousServer {
 public:
  RendezvousServer(int nnodes, int port, std::chrono::milliseconds timeout);
  ~RendezvousServer();
  RendezvousServer(const RendezvousServer&) = delete;
  RendezvousServer& operator=(const RendezvousServer&) = delete;

  int port() const { return port_; }
  // Waits (up to the timeout, counted from this call) for nodes 1..nnodes-1, then sends each
  // of them `blob` and closes the connections. Call once.
  void serve(const std::vector<uint8_t>& blob);

 private:
  int nnodes_;
  int port_ = 0;
  std::chrono::milliseconds timeout_;
  int fd_ = -1;
};

// Node k's side (k >= 1): connects, retrying, and returns node 0's blob.
std::vector<uint8_t> rendezvous_receive(const RendezvousOptions& options);

// Either side, by options.node_rank: node 0 serves `blob` (RendezvousServer on master_port)
// and returns it; other nodes ignore `blob` and return node 0's. nnodes == 1 returns `blob`
// without any networking.
std::vector<uint8_t> rendezvous_broadcast(const RendezvousOptions& options,
                                          const std::vector<uint8_t>& blob);

}  // namespace arbor::comm
