#include "engine/comm/communicator.h"

#include <exception>
#include <mutex>
#include <thread>

namespace arbor::comm {

size_t dtype_size(DType t) {
  switch (t) {
    case DType::f32:
      return 4;
    case DType::i32:
      return 4;
    case DType::u8:
      return 1;
  }
  throw CommError("dtype_size: unknown DType " + std::to_string(int(t)));
}

const char* to_string(DType t) {
  switch (t) {
    case DType::f32:
      return "f32";
    case DType::i32:
      return "i32";
    case DType::u8:
      return "u8";
  }
  return "?";
}

const char* to_string(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return "sum";
    case ReduceOp::max:
      return "max";
  }
  return "?";
}

void run_ranks(Group& group, const std::function<void(Communicator&)>& fn) {
  std::mutex mu;
  std::exception_ptr first_comm_error, first_other;
  std::vector<std::thread> threads;
  threads.reserve(group.size());
  for (auto& comm_ptr : group) {
    Communicator* comm = comm_ptr.get();
    threads.emplace_back([&, comm] {
      try {
        fn(*comm);
      } catch (...) {
        std::string why = "unknown exception";
        bool is_comm_error = false;
        try {
          throw;
        } catch (const CommError& e) {
          why = e.what();
          is_comm_error = true;
        } catch (const std::exception& e) {
          why = e.what();
        } catch (...) {
        }
        {
          std::lock_guard lk(mu);
          auto& slot = is_comm_error ? first_comm_error : first_other;
          if (!slot) slot = std::current_exception();
        }
        try {
          comm->abort("it threw: " + why);
        } catch (...) {
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  if (first_other) std::rethrow_exception(first_other);
  if (first_comm_error) std::rethrow_exception(first_comm_error);
}

}  // namespace arbor::comm
