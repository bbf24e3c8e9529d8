#include "engine/comm/local_group.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <utility>

namespace arbor::comm::detail {

const char* to_string(OpKind k) {
  switch (k) {
    case OpKind::all_reduce:
      return "all_reduce";
    case OpKind::all_gather:
      return "all_gather";
    case OpKind::broadcast:
      return "broadcast";
    case OpKind::send_recv:
      return "send_recv";
    case OpKind::broadcast_bytes:
      return "broadcast_bytes";
    case OpKind::barrier:
      return "barrier";
  }
  return "?";
}

namespace {

std::string describe(const LocalCall& c) {
  std::string s = to_string(c.kind);
  switch (c.kind) {
    case OpKind::all_reduce:
      s += "(count=" + std::to_string(c.count) + ", " + to_string(c.dtype) + ", " +
           to_string(c.op) + ")";
      break;
    case OpKind::all_gather:
      s += "(count=" + std::to_string(c.count) + ", " + to_string(c.dtype) + ")";
      break;
    case OpKind::broadcast:
      s += "(count=" + std::to_string(c.count) + ", " + to_string(c.dtype) +
           ", root=" + std::to_string(c.root) + ")";
      break;
    case OpKind::send_recv:
      s += "(dst=" + std::to_string(c.dst) + ", src=" + std::to_string(c.src) +
           ", count=" + std::to_string(c.count) + ", " + to_string(c.dtype) + ")";
      break;
    case OpKind::broadcast_bytes:
      s += "(root=" + std::to_string(c.root) + ")";
      break;
    case OpKind::barrier:
      s += "()";
      break;
  }
  return s;
}

// Whether byte ranges [a, a+na) and [b, b+nb) overlap.
bool overlaps(const void* a, size_t na, const void* b, size_t nb) {
  const auto pa = reinterpret_cast<uintptr_t>(a), pb = reinterpret_cast<uintptr_t>(b);
  return na && nb && pa < pb + nb && pb < pa + na;
}

}  // namespace

// ---------------------------------------------------------------------------------------
// LocalGroup

LocalGroup::LocalGroup(int n, std::string backend, const LocalGroupOptions& options)
    : n_(n),
      backend_(std::move(backend)),
      options_(options),
      slots_(size_t(n)),
      here_(size_t(n), 0) {}

std::string LocalGroup::prefix(const char* what, int rank) const {
  return backend_ + " " + what + " on rank " + std::to_string(rank) + " of " + std::to_string(n_) +
         ": ";
}

bool LocalGroup::aborted() const {
  std::lock_guard lk(mu_);
  return aborted_;
}

void LocalGroup::abort(const std::string& reason) {
  std::lock_guard lk(mu_);
  if (aborted_) return;
  aborted_ = true;
  abort_reason_ = reason;
  cv_.notify_all();
}

void LocalGroup::arrive_and_wait(int rank, const LocalCall* call, const char* what) {
  std::unique_lock lk(mu_);
  if (aborted_) throw CommError(prefix(what, rank) + "group aborted: " + abort_reason_);
  if (call) slots_[size_t(rank)] = *call;
  here_[size_t(rank)] = 1;
  if (++arrived_ == n_) {
    arrived_ = 0;
    std::fill(here_.begin(), here_.end(), 0);
    ++generation_;
    cv_.notify_all();
    return;
  }
  const uint64_t gen = generation_;
  const auto deadline = std::chrono::steady_clock::now() + options_.timeout;
  while (generation_ == gen && !aborted_) {
    if (cv_.wait_until(lk, deadline) == std::cv_status::timeout && generation_ == gen &&
        !aborted_) {
      std::string missing;
      for (int r = 0; r < n_; ++r)
        if (!here_[size_t(r)]) missing += (missing.empty() ? "" : ", ") + std::to_string(r);
      std::string msg = prefix(what, rank) + "timed out after " +
                        std::to_string(options_.timeout.count()) + " ms waiting for rank(s) " +
                        missing + " (" + std::to_string(arrived_) + " of " + std::to_string(n_) +
                        " arrived); the group is aborted";
      aborted_ = true;
      abort_reason_ = msg;
      cv_.notify_all();
      throw CommError(msg);
    }
  }
  if (generation_ != gen) return;  // completed, even if an abort came right after
  throw CommError(prefix(what, rank) + "group aborted: " + abort_reason_);
}

// ---------------------------------------------------------------------------------------
// LocalCommunicatorBase

LocalCommunicatorBase::LocalCommunicatorBase(std::shared_ptr<LocalGroup> group, int rank)
    : group_(std::move(group)), rank_(rank) {}

LocalCommunicatorBase::~LocalCommunicatorBase() {
  group_->abort("rank " + std::to_string(rank_) + "'s communicator was destroyed");
}

void LocalCommunicatorBase::abort(const std::string& reason) {
  group_->abort("rank " + std::to_string(rank_) + " aborted: " + reason);
}

void LocalCommunicatorBase::fail(const char* what, const std::string& cause) {
  throw CommError(prefix(what) + cause);
}

void LocalCommunicatorBase::check_same_call(const LocalCall& mine, const char* what) const {
  const int n = size();
  for (int r = 0; r < n; ++r) {
    const LocalCall& other = group_->slot(r);
    bool same = other.kind == mine.kind;
    if (same && mine.kind != OpKind::send_recv && mine.kind != OpKind::barrier) {
      same = other.root == mine.root;
      if (mine.kind != OpKind::broadcast_bytes)
        same = same && other.count == mine.count && other.dtype == mine.dtype &&
               (mine.kind != OpKind::all_reduce || other.op == mine.op);
    }
    if (!same)
      throw CommError(prefix(what) + "rank " + std::to_string(rank_) + " called " + describe(mine) +
                      " but rank " + std::to_string(r) + " called " + describe(other));
  }
  if (mine.kind == OpKind::send_recv) {
    const LocalCall& from = group_->slot(mine.src);
    if (from.dst != rank_ || from.count != mine.count || from.dtype != mine.dtype)
      throw CommError(prefix(what) + "rank " + std::to_string(rank_) + " called " + describe(mine) +
                      " but its source rank " + std::to_string(mine.src) + " called " +
                      describe(from));
  }
}

template <typename Work>
void LocalCommunicatorBase::run_op(const LocalCall& call, const char* what, Stream stream,
                                   Work&& work) {
  const bool data_op = call.kind != OpKind::broadcast_bytes && call.kind != OpKind::barrier;
  try {
    if (data_op) before_publish(stream, what);
    group_->arrive_and_wait(rank_, &call, what);
    check_same_call(call, what);
    work();
    if (data_op) after_work(stream, what);
    group_->arrive_and_wait(rank_, nullptr, what);
  } catch (const CommError& e) {
    group_->abort(e.what());
    throw;
  } catch (const std::exception& e) {
    const std::string msg = prefix(what) + e.what();
    group_->abort(msg);
    throw CommError(msg);
  }
}

void LocalCommunicatorBase::abort_group(const std::string& reason) {
  group_->abort(reason);
}

void LocalCommunicatorBase::all_reduce(const void* send, void* recv, size_t count, DType dtype,
                                       ReduceOp op, Stream stream) {
  const char* what = "all_reduce";
  const size_t bytes = count * dtype_size(dtype);
  check_args([&] {
    if (count && (!send || !recv)) fail(what, "null buffer");
    if (send != recv && overlaps(send, bytes, recv, bytes))
      fail(what, "send and recv overlap without being equal");
  });
  const LocalCall call{.kind = OpKind::all_reduce,
                       .send = send,
                       .recv = recv,
                       .count = count,
                       .dtype = dtype,
                       .op = op};
  run_op(call, what, stream, [&] {
    size_t begin = 0, end = 0;
    chunk_of(count, size(), rank_, &begin, &end);
    if (begin == end) return;
    std::vector<const void*> srcs(static_cast<size_t>(size()));
    std::vector<void*> dsts(static_cast<size_t>(size()));
    for (int r = 0; r < size(); ++r) {
      srcs[size_t(r)] = group_->slot(r).send;
      dsts[size_t(r)] = group_->slot(r).recv;
    }
    reduce(srcs.data(), dsts.data(), size(), begin, end, dtype, op, stream, what);
  });
}

void LocalCommunicatorBase::all_gather(const void* send, void* recv, size_t count, DType dtype,
                                       Stream stream) {
  const char* what = "all_gather";
  const size_t bytes = count * dtype_size(dtype);
  check_args([&] {
    if (count && (!send || !recv)) fail(what, "null buffer");
    const void* in_place = static_cast<const char*>(recv) + size_t(rank_) * bytes;
    if (send != in_place && overlaps(send, bytes, recv, bytes * size_t(size())))
      fail(what, "send overlaps recv without being recv + rank*count (the in-place position)");
  });
  const LocalCall call{
      .kind = OpKind::all_gather, .send = send, .recv = recv, .count = count, .dtype = dtype};
  run_op(call, what, stream, [&] {
    if (!bytes) return;
    for (int r = 0; r < size(); ++r) {
      void* dst = static_cast<char*>(group_->slot(r).recv) + size_t(rank_) * bytes;
      if (dst != send) copy(dst, send, bytes, stream, what);
    }
  });
}

void LocalCommunicatorBase::broadcast(void* buf, size_t count, DType dtype, int root,
                                      Stream stream) {
  const char* what = "broadcast";
  const size_t bytes = count * dtype_size(dtype);
  check_args([&] {
    if (root < 0 || root >= size()) fail(what, "root " + std::to_string(root) + " out of range");
    if (count && !buf) fail(what, "null buffer");
  });
  const LocalCall call{.kind = OpKind::broadcast,
                       .send = buf,
                       .recv = buf,
                       .count = count,
                       .dtype = dtype,
                       .root = root};
  run_op(call, what, stream, [&] {
    const void* src = group_->slot(root).recv;
    if (bytes && rank_ != root && src != buf) copy(buf, src, bytes, stream, what);
  });
}

void LocalCommunicatorBase::send_recv(const void* send, int dst, void* recv, int src, size_t count,
                                      DType dtype, Stream stream) {
  const char* what = "send_recv";
  const size_t bytes = count * dtype_size(dtype);
  check_args([&] {
    if (dst < 0 || dst >= size()) fail(what, "dst " + std::to_string(dst) + " out of range");
    if (src < 0 || src >= size()) fail(what, "src " + std::to_string(src) + " out of range");
    if (count && (!send || !recv)) fail(what, "null buffer");
    const bool self_copy = dst == rank_ && src == rank_;
    if (!(self_copy && send == recv) && overlaps(send, bytes, recv, bytes))
      fail(what, "send and recv overlap (send_recv is not in place; double-buffer)");
  });
  const LocalCall call{.kind = OpKind::send_recv,
                       .send = send,
                       .recv = recv,
                       .count = count,
                       .dtype = dtype,
                       .dst = dst,
                       .src = src};
  run_op(call, what, stream, [&] {
    const void* from = group_->slot(src).send;
    if (bytes && from != recv) copy(recv, from, bytes, stream, what);
  });
}

void LocalCommunicatorBase::broadcast_bytes(std::vector<uint8_t>& bytes, int root) {
  const char* what = "broadcast_bytes";
  check_args([&] {
    if (root < 0 || root >= size()) fail(what, "root " + std::to_string(root) + " out of range");
  });
  const LocalCall call{.kind = OpKind::broadcast_bytes, .root = root, .bytes = &bytes};
  run_op(call, what, nullptr, [&] {
    if (rank_ != root) bytes = *group_->slot(root).bytes;
  });
}

void LocalCommunicatorBase::barrier() {
  const LocalCall call{.kind = OpKind::barrier};
  run_op(call, "barrier", nullptr, [] {});
}

}  // namespace arbor::comm::detail
