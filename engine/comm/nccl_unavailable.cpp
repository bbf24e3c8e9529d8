// The "nccl" backend of a build without NCCL (engine/comm/CMakeLists.txt): the same functions
// as nccl_communicator.cpp, each throwing CommError that says why and what works instead.
#include <string>

#include "engine/comm/nccl_communicator.h"

namespace arbor::comm {
namespace {

[[noreturn]] void no_nccl(const char* call) {
  throw CommError(std::string(call) +
                  ": this build of arbor has no NCCL (it was not found when the build was "
                  "configured; install libnccl-dev or set -DNCCL_ROOT, then rebuild): the nccl "
                  "backend (context parallelism across GPUs) is unavailable; --cp-backend local "
                  "simulates ranks on one GPU");
}

}  // namespace

bool nccl_available() {
  return false;
}

NcclUniqueId NcclUniqueId::from_bytes(const std::vector<uint8_t>&) {
  no_nccl("NcclUniqueId::from_bytes");
}

NcclUniqueId nccl_unique_id() {
  no_nccl("nccl_unique_id");
}

int nccl_version() {
  no_nccl("nccl_version");
}

std::unique_ptr<Communicator> make_nccl_communicator(const NcclUniqueId&, int, int, int,
                                                     const NcclOptions&) {
  no_nccl("make_nccl_communicator");
}

Group make_nccl_communicators(const NcclUniqueId&, int, int, const std::vector<int>&,
                              const NcclOptions&) {
  no_nccl("make_nccl_communicators");
}

Group make_nccl_group(const std::vector<int>&, const NcclOptions&) {
  no_nccl("make_nccl_group");
}

}  // namespace arbor::comm
