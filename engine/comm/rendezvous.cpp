#include "engine/comm/rendezvous.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <utility>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace arbor::comm {
namespace {

using Clock = std::chrono::steady_clock;
constexpr char kMagic[4] = {'A', 'R', 'B', 'R'};
constexpr uint32_t kVersion = 1;
constexpr uint64_t kMaxBlob = uint64_t(1) << 30;

class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    if (this != &o) {
      reset();
      fd_ = std::exchange(o.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

std::string errno_text(int err) {
  return std::strerror(err);
}

int remaining_ms(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return int(std::clamp<long long>(left, 0, 1 << 30));
}

std::string seconds_text(std::chrono::milliseconds t) {
  const auto ms = t.count();
  if (ms % 1000 == 0) return std::to_string(ms / 1000) + " s";
  return std::to_string(ms) + " ms";
}

void set_nonblocking(int fd) {
  const int flags = ::fcntl(fd, F_GETFL, 0);
  if (flags >= 0) ::fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

// Waits until fd is ready for `events`; false on deadline. Throws on poll errors.
bool wait_fd(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    pollfd p{fd, events, 0};
    const int r = ::poll(&p, 1, remaining_ms(deadline));
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) throw std::runtime_error("poll: " + errno_text(errno));
  }
}

// Sends all of [data, data+len); throws std::runtime_error (the caller adds context).
void send_all(int fd, const void* data, size_t len, Clock::time_point deadline) {
  auto p = static_cast<const char*>(data);
  while (len) {
    const ssize_t n = ::send(fd, p, len, MSG_NOSIGNAL);
    if (n > 0) {
      p += n;
      len -= size_t(n);
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
      if (!wait_fd(fd, POLLOUT, deadline)) throw std::runtime_error("timed out sending");
    } else {
      throw std::runtime_error("send: " + errno_text(errno));
    }
  }
}

void recv_all(int fd, void* data, size_t len, Clock::time_point deadline) {
  auto p = static_cast<char*>(data);
  while (len) {
    const ssize_t n = ::recv(fd, p, len, 0);
    if (n > 0) {
      p += n;
      len -= size_t(n);
    } else if (n == 0) {
      throw std::runtime_error("connection closed by peer");
    } else if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
      if (!wait_fd(fd, POLLIN, deadline)) throw std::runtime_error("timed out receiving");
    } else {
      throw std::runtime_error("recv: " + errno_text(errno));
    }
  }
}

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  for (int s = 24; s >= 0; s -= 8) out.push_back(uint8_t(v >> s));
}
void put_u64(std::vector<uint8_t>& out, uint64_t v) {
  for (int s = 56; s >= 0; s -= 8) out.push_back(uint8_t(v >> s));
}
uint32_t get_u32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | uint32_t(p[3]);
}
uint64_t get_u64(const uint8_t* p) {
  return uint64_t(get_u32(p)) << 32 | get_u32(p + 4);
}

std::vector<uint8_t> make_reply(uint32_t status, const void* payload, size_t len) {
  std::vector<uint8_t> out(kMagic, kMagic + 4);
  put_u32(out, status);
  put_u64(out, len);
  const auto* p = static_cast<const uint8_t*>(payload);
  out.insert(out.end(), p, p + len);
  return out;
}

// Strict decimal integer in [lo, hi].
bool parse_int(const char* s, long long lo, long long hi, long long* out) {
  if (!s || !*s) return false;
  const char* end = s + std::strlen(s);
  long long v = 0;
  const auto r = std::from_chars(s, end, v);
  if (r.ec != std::errc() || r.ptr != end || v < lo || v > hi) return false;
  *out = v;
  return true;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// RendezvousOptions

RendezvousOptions RendezvousOptions::from_env() {
  return resolve({});
}

RendezvousOptions RendezvousOptions::from_env(
    const std::function<const char*(const char*)>& getenv) {
  return resolve({}, getenv);
}

RendezvousOptions RendezvousOptions::resolve(const Given& given) {
  return resolve(given, [](const char* name) -> const char* { return std::getenv(name); });
}

RendezvousOptions RendezvousOptions::resolve(
    const Given& given, const std::function<const char*(const char*)>& getenv) {
  RendezvousOptions o;
  // The first set variable of `names` into *out; returns its "NAME=" for messages, or
  // `fallback` when none is set.
  auto read_int = [&](std::initializer_list<const char*> names, long long lo, long long hi,
                      const char* what, long long* out, std::string fallback) {
    for (const char* name : names) {
      const char* v = getenv(name);
      if (!v || !*v) continue;
      if (!parse_int(v, lo, hi, out))
        throw CommError(std::string("rendezvous: ") + name + "='" + v + "' is not " + what);
      return std::string(name) + "=";
    }
    return fallback;
  };
  long long v = o.nnodes;
  std::string nnodes_source = "nnodes ";
  if (given.nnodes)
    v = *given.nnodes;
  else
    nnodes_source = read_int({"ARBOR_NNODES"}, 1, 1 << 20, "an integer >= 1", &v, "nnodes ");
  o.nnodes = int(v);
  v = o.node_rank;
  std::string rank_source = "node rank ";
  if (given.node_rank)
    v = *given.node_rank;
  else
    rank_source = read_int({"ARBOR_NODE_RANK"}, 0, 1 << 20, "an integer >= 0", &v, "node rank ");
  o.node_rank = int(v);
  if (o.nnodes < 1 || o.node_rank < 0 || o.node_rank >= o.nnodes)
    throw CommError("rendezvous: " + rank_source + std::to_string(o.node_rank) +
                    " is out of range for " + nnodes_source + std::to_string(o.nnodes));
  if (given.master_addr) {
    o.master_addr = *given.master_addr;
  } else {
    for (const char* name : {"ARBOR_MASTER_ADDR", "MASTER_ADDR"}) {
      if (const char* a = getenv(name); a && *a) {
        o.master_addr = a;
        break;
      }
    }
  }
  v = o.master_port;
  if (given.master_port)
    v = *given.master_port;
  else
    read_int({"ARBOR_MASTER_PORT", "MASTER_PORT"}, 1, 65535, "a port number in 1..65535", &v, "");
  o.master_port = int(v);
  if (given.timeout) {
    o.timeout = *given.timeout;
  } else {
    v = o.timeout.count() / 1000;
    read_int({"ARBOR_RENDEZVOUS_TIMEOUT_S"}, 1, 1 << 24, "a number of seconds >= 1", &v, "");
    o.timeout = std::chrono::seconds(v);
  }
  return o;
}

// ---------------------------------------------------------------------------------------
// Server

RendezvousServer::RendezvousServer(int nnodes, int port, std::chrono::milliseconds timeout)
    : nnodes_(nnodes), timeout_(timeout) {
  const std::string where = "rendezvous: node 0 listening on 0.0.0.0:" + std::to_string(port);
  if (nnodes < 1) throw CommError("rendezvous: nnodes " + std::to_string(nnodes) + " < 1");
  if (port < 0 || port > 65535) throw CommError(where + ": port out of range");
  Fd fd(::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (fd.get() < 0) throw CommError(where + ": socket: " + errno_text(errno));
  const int one = 1;
  ::setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = htons(uint16_t(port));
  if (::bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw CommError(where + ": bind: " + errno_text(errno));
  if (::listen(fd.get(), std::max(16, nnodes)) != 0)
    throw CommError(where + ": listen: " + errno_text(errno));
  socklen_t len = sizeof addr;
  if (::getsockname(fd.get(), reinterpret_cast<sockaddr*>(&addr), &len) != 0)
    throw CommError(where + ": getsockname: " + errno_text(errno));
  port_ = ntohs(addr.sin_port);
  set_nonblocking(fd.get());
  fd_ = fd.release();
}

RendezvousServer::~RendezvousServer() {
  if (fd_ >= 0) ::close(fd_);
}

void RendezvousServer::serve(const std::vector<uint8_t>& blob) {
  const std::string where = "rendezvous: node 0 listening on 0.0.0.0:" + std::to_string(port_);
  if (fd_ < 0) throw CommError(where + ": serve() called twice");
  Fd listener(std::exchange(fd_, -1));
  const auto deadline = Clock::now() + timeout_;
  std::vector<Fd> peers(static_cast<size_t>(nnodes_));  // by node rank; [0] unused
  int connected = 0;
  while (connected < nnodes_ - 1) {
    if (!wait_fd(listener.get(), POLLIN, deadline)) {
      std::string missing;
      for (int k = 1; k < nnodes_; ++k)
        if (peers[size_t(k)].get() < 0)
          missing += (missing.empty() ? "" : ", ") + std::to_string(k);
      throw CommError(where + ": timed out after " + seconds_text(timeout_) +
                      " waiting for node(s) " + missing + " (" + std::to_string(connected) +
                      " of " + std::to_string(nnodes_ - 1) + " connected)");
    }
    Fd conn(::accept4(listener.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (conn.get() < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
        continue;
      throw CommError(where + ": accept: " + errno_text(errno));
    }
    uint8_t hello[16];
    try {
      // A stray connection must not hold the rendezvous up for long.
      recv_all(conn.get(), hello, sizeof hello,
               std::min(deadline, Clock::now() + std::chrono::seconds(10)));
    } catch (const std::exception&) {
      continue;  // not one of ours
    }
    if (std::memcmp(hello, kMagic, 4) != 0) continue;
    const uint32_t version = get_u32(hello + 4), their_nnodes = get_u32(hello + 8),
                   their_rank = get_u32(hello + 12);
    std::string problem;
    if (version != kVersion)
      problem = "protocol version " + std::to_string(version) + ", node 0 speaks " +
                std::to_string(kVersion);
    else if (int64_t(their_nnodes) != nnodes_)
      problem = "node " + std::to_string(their_rank) +
                " has nnodes=" + std::to_string(their_nnodes) +
                " but node 0 has nnodes=" + std::to_string(nnodes_);
    else if (their_rank < 1 || int64_t(their_rank) >= nnodes_)
      problem = "node rank " + std::to_string(their_rank) + " is out of range 1.." +
                std::to_string(nnodes_ - 1);
    else if (peers[their_rank].get() >= 0)
      problem = "two nodes connected with node rank " + std::to_string(their_rank);
    if (!problem.empty()) {
      const auto reply = make_reply(1, problem.data(), problem.size());
      try {
        send_all(conn.get(), reply.data(), reply.size(), deadline);
      } catch (const std::exception&) {
      }
      throw CommError(where + ": " + problem);
    }
    peers[their_rank] = std::move(conn);
    ++connected;
  }
  const auto reply = make_reply(0, blob.data(), blob.size());
  for (int k = 1; k < nnodes_; ++k) {
    try {
      send_all(peers[size_t(k)].get(), reply.data(), reply.size(), deadline);
    } catch (const std::exception& e) {
      throw CommError(where + ": sending to node " + std::to_string(k) + ": " + e.what());
    }
  }
}

// ---------------------------------------------------------------------------------------
// Client

namespace {

// One connection attempt, bounded by `deadline`. Returns the connected socket, or an
// invalid Fd with `error` set.
Fd try_connect(const std::string& host, int port, Clock::time_point deadline, std::string* error) {
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port_text = std::to_string(port);
  const int rc = ::getaddrinfo(host.c_str(), port_text.c_str(), &hints, &res);
  if (rc != 0) {
    *error = std::string("cannot resolve host: ") + ::gai_strerror(rc);
    return Fd();
  }
  std::unique_ptr<addrinfo, decltype(&::freeaddrinfo)> guard(res, ::freeaddrinfo);
  for (addrinfo* ai = res; ai; ai = ai->ai_next) {
    Fd fd(::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol));
    if (fd.get() < 0) {
      *error = "socket: " + errno_text(errno);
      continue;
    }
    if (::connect(fd.get(), ai->ai_addr, ai->ai_addrlen) != 0) {
      if (errno != EINPROGRESS) {
        *error = errno_text(errno);
        continue;
      }
      if (!wait_fd(fd.get(), POLLOUT, deadline)) {
        *error = "connect timed out";
        continue;
      }
      int err = 0;
      socklen_t len = sizeof err;
      ::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        *error = errno_text(err);
        continue;
      }
    }
    const int one = 1;
    ::setsockopt(fd.get(), IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
  }
  return Fd();
}

}  // namespace

std::vector<uint8_t> rendezvous_receive(const RendezvousOptions& o) {
  const std::string where = "rendezvous: node " + std::to_string(o.node_rank) + " of " +
                            std::to_string(o.nnodes) + " connecting to master " + o.master_addr +
                            ":" + std::to_string(o.master_port);
  if (o.node_rank < 1 || o.node_rank >= o.nnodes)
    throw CommError(where + ": node_rank must be in 1..nnodes-1 on the receiving side");
  if (o.master_port < 1 || o.master_port > 65535) throw CommError(where + ": port out of range");
  const auto deadline = Clock::now() + o.timeout;
  auto backoff = std::chrono::milliseconds(20);
  std::string last_error = "no attempt made";
  int attempts = 0;
  Fd fd;
  for (;;) {
    ++attempts;
    fd = try_connect(o.master_addr, o.master_port, deadline, &last_error);
    if (fd.get() >= 0) break;
    if (Clock::now() + backoff >= deadline)
      throw CommError(where + ": could not connect within " + seconds_text(o.timeout) + " (" +
                      std::to_string(attempts) + " attempts; last error: " + last_error +
                      "). Is node 0 running with the same ARBOR_MASTER_PORT?");
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
  }
  try {
    std::vector<uint8_t> hello(kMagic, kMagic + 4);
    put_u32(hello, kVersion);
    put_u32(hello, uint32_t(o.nnodes));
    put_u32(hello, uint32_t(o.node_rank));
    send_all(fd.get(), hello.data(), hello.size(), deadline);
    uint8_t head[16];
    recv_all(fd.get(), head, sizeof head, deadline);
    if (std::memcmp(head, kMagic, 4) != 0)
      throw std::runtime_error("the peer is not an arbor rendezvous server");
    const uint32_t status = get_u32(head + 4);
    const uint64_t len = get_u64(head + 8);
    if (len > kMaxBlob) throw std::runtime_error("reply of " + std::to_string(len) + " bytes");
    std::vector<uint8_t> payload(len);
    recv_all(fd.get(), payload.data(), payload.size(), deadline);
    if (status != 0)
      throw std::runtime_error("node 0 refused: " + std::string(payload.begin(), payload.end()));
    return payload;
  } catch (const CommError&) {
    throw;
  } catch (const std::exception& e) {
    throw CommError(
        where + ": " + e.what() +
        (Clock::now() >= deadline ? " (timeout " + seconds_text(o.timeout) + ")" : std::string()));
  }
}

std::vector<uint8_t> rendezvous_broadcast(const RendezvousOptions& o,
                                          const std::vector<uint8_t>& blob) {
  if (o.nnodes < 1 || o.node_rank < 0 || o.node_rank >= o.nnodes)
    throw CommError("rendezvous: node_rank " + std::to_string(o.node_rank) +
                    " out of range for nnodes " + std::to_string(o.nnodes));
  if (o.nnodes == 1) return blob;
  if (o.node_rank != 0) return rendezvous_receive(o);
  RendezvousServer server(o.nnodes, o.master_port, o.timeout);
  server.serve(blob);
  return blob;
}

}  // namespace arbor::comm
