// Internal: the shared state and protocol of the in-process ("local") communicators. The
// local-cpu and local-gpu backends differ only in how they move and reduce data (hooks of
// LocalCommunicatorBase); the rendezvous of ranks, the argument checks, the abort and the
// timeout are here.
//
// Protocol of one op on rank r:
//   1. validate arguments; before_publish(stream) (local-gpu: synchronize the stream, so
//      peers may read r's inputs);
//   2. publish the call (pointers, count, ...) in slot r and wait at the group's barrier;
//   3. check that every rank made the same call; do r's share of the work, reading peers'
//      published inputs and writing peers' outputs directly; after_work(stream);
//   4. wait at the barrier again: all outputs are written, no input is read any more.
// A barrier wait throws CommError when the group was aborted or the timeout expired (the
// waiter then aborts the group, so the others fail at once too).
#pragma once

#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "engine/comm/communicator.h"

namespace arbor::comm::detail {

enum class OpKind : uint8_t {
  all_reduce,
  all_gather,
  broadcast,
  send_recv,
  broadcast_bytes,
  barrier
};
const char* to_string(OpKind);

// What one rank published for the current op.
struct LocalCall {
  OpKind kind = OpKind::barrier;
  const void* send = nullptr;
  void* recv = nullptr;
  size_t count = 0;
  DType dtype = DType::f32;
  ReduceOp op = ReduceOp::sum;
  int root = -1;                          // broadcast, broadcast_bytes
  int dst = -1;                           // send_recv
  int src = -1;                           // send_recv
  std::vector<uint8_t>* bytes = nullptr;  // broadcast_bytes
};

class LocalGroup {
 public:
  LocalGroup(int n, std::string backend, const LocalGroupOptions& options);

  int size() const { return n_; }
  const std::string& backend() const { return backend_; }

  // Publishes `call` (when non-null) as rank's slot and waits until every rank has arrived.
  // `what` names the call for error messages.
  void arrive_and_wait(int rank, const LocalCall* call, const char* what);
  // Slots are stable between the two barriers of an op.
  const LocalCall& slot(int rank) const { return slots_[size_t(rank)]; }

  // Marks the group failed (first reason wins) and wakes every waiter.
  void abort(const std::string& reason);
  bool aborted() const;
  // "<backend> <what> on rank r of n: " — the prefix of every error message.
  std::string prefix(const char* what, int rank) const;

 private:
  const int n_;
  const std::string backend_;
  const LocalGroupOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
  bool aborted_ = false;
  std::string abort_reason_;
  std::vector<LocalCall> slots_;
  std::vector<char> here_;  // which ranks have arrived at the current barrier
};

// The Communicator of the local backends; subclasses supply data movement.
class LocalCommunicatorBase : public Communicator {
 public:
  LocalCommunicatorBase(std::shared_ptr<LocalGroup> group, int rank);
  ~LocalCommunicatorBase() override;

  int rank() const override { return rank_; }
  int size() const override { return group_->size(); }
  std::string name() const override { return group_->backend(); }

  void all_reduce(const void* send, void* recv, size_t count, DType, ReduceOp,
                  Stream stream) override;
  void all_gather(const void* send, void* recv, size_t count, DType, Stream stream) override;
  void broadcast(void* buf, size_t count, DType, int root, Stream stream) override;
  void send_recv(const void* send, int dst, void* recv, int src, size_t count, DType,
                 Stream stream) override;
  void broadcast_bytes(std::vector<uint8_t>& bytes, int root) override;
  void barrier() override;
  void abort(const std::string& reason) override;

 protected:
  // Called first in every data op (not in broadcast_bytes/barrier); may throw.
  virtual void before_publish(Stream, const char* what) = 0;
  // Copies `bytes` bytes (regions do not overlap unless dst == src).
  virtual void copy(void* dst, const void* src, size_t bytes, Stream, const char* what) = 0;
  // For i in [begin, end): v = srcs[0][i] op srcs[1][i] op ... srcs[n-1][i] (in that order),
  // then dsts[r][i] = v for every r. dsts[r] may equal srcs[r].
  virtual void reduce(const void* const* srcs, void* const* dsts, int n, size_t begin, size_t end,
                      DType, ReduceOp, Stream, const char* what) = 0;
  // Called after this rank's share of the work is issued, before the final barrier.
  virtual void after_work(Stream, const char* what) = 0;

  std::string prefix(const char* what) const { return group_->prefix(what, rank_); }
  [[noreturn]] void fail(const char* what, const std::string& cause);
  // Runs an op's argument checks; a CommError from them aborts the whole group (the peers
  // would otherwise wait for this rank) and is rethrown.
  template <typename Checks>
  void check_args(Checks&& checks) {
    try {
      checks();
    } catch (const CommError& e) {
      abort_group(e.what());
      throw;
    }
  }
  void abort_group(const std::string& reason);

 private:
  // Steps 2-4 of the protocol around `work`; aborts the group when anything throws.
  template <typename Work>
  void run_op(const LocalCall& call, const char* what, Stream stream, Work&& work);
  void check_same_call(const LocalCall& mine, const char* what) const;

  std::shared_ptr<LocalGroup> group_;
  int rank_;
};

// Element range [begin, end) that rank `rank` of `n` reduces out of `count`.
inline void chunk_of(size_t count, int n, int rank, size_t* begin, size_t* end) {
  *begin = count * size_t(rank) / size_t(n);
  *end = count * size_t(rank + 1) / size_t(n);
}

}  // namespace arbor::comm::detail
