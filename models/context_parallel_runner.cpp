#include "models/context_parallel_runner.h"

#include <algorithm>
#include <stdexcept>
#include <string>

#include <spdlog/spdlog.h>

namespace arbor {
namespace {

// First byte of a step message; an empty message means "stop".
constexpr uint8_t kForward = 1, kForwardGreedy = 2;

// What every non-leader rank runs: receive a step, run it, repeat. A rank that rejects a
// batch rejects it exactly as the leader does (same checks on the same batch), so the error
// reaches the engine through the leader and the follower goes on with the next step.
void follow(comm::Communicator& c, ModelRunner& runner) {
  std::vector<uint8_t> message;
  std::vector<float> logits;
  std::vector<int32_t> ids;
  for (;;) {
    try {
      c.broadcast_bytes(message, 0);
    } catch (const comm::CommError& e) {
      spdlog::error("context-parallel rank {}: {}; stopping", c.rank(), e.what());
      return;
    }
    if (message.empty()) return;
    try {
      const ForwardBatch batch =
          deserialize_forward_batch(std::span<const uint8_t>(message).subspan(1));
      if (message[0] == kForwardGreedy)
        runner.forward_greedy(batch, ids);
      else
        runner.forward(batch, logits);
    } catch (const comm::CommError& e) {
      spdlog::error("context-parallel rank {}: {}; stopping", c.rank(), e.what());
      return;
    } catch (const std::exception& e) {
      spdlog::debug("context-parallel rank {}: step rejected: {}", c.rank(), e.what());
    }
  }
}

// What a rank does once it stops: destroy its runner, then (NCCL) its communicator, each rank
// on its own thread, all at once (destroying an NCCL communicator may wait for its peers).
// The runner goes first because a CUDA graph that captured an NCCL call holds a reference on
// the communicator, and destroying the communicator waits until every such graph is gone:
// the other order hangs at exit. The local backends are destroyed after all threads are done
// (destroying one aborts its peers' pending calls).
void finish_rank(std::unique_ptr<comm::Communicator>& c, std::unique_ptr<ModelRunner>& runner) {
  runner.reset();
  if (c && c->name() == "nccl") c.reset();
}

// One thread per rank from `first` on: follow the leader's steps, then finish the rank.
void start_following(std::vector<std::thread>& threads,
                     std::vector<std::unique_ptr<comm::Communicator>>& comms,
                     std::vector<std::unique_ptr<ModelRunner>>& ranks, size_t first,
                     const RankThreadInit& thread_init) {
  for (size_t i = first; i < ranks.size(); ++i) {
    threads.emplace_back([&comms, &ranks, i, thread_init] {
      if (thread_init) thread_init(int(i));
      follow(*comms[i], *ranks[i]);
      finish_rank(comms[i], ranks[i]);
    });
  }
}

void check_ranks(const std::vector<std::unique_ptr<comm::Communicator>>& comms,
                 const std::vector<std::unique_ptr<ModelRunner>>& ranks) {
  if (comms.empty() || comms.size() != ranks.size())
    throw std::invalid_argument("context parallelism needs one communicator per rank runner");
  for (size_t i = 0; i < comms.size(); ++i)
    if (!comms[i] || !ranks[i]) throw std::invalid_argument("null rank or communicator");
}

}  // namespace

ContextParallelRunner::ContextParallelRunner(std::vector<std::unique_ptr<comm::Communicator>> comms,
                                             std::vector<std::unique_ptr<ModelRunner>> ranks,
                                             RankThreadInit thread_init)
    : comms_(std::move(comms)), ranks_(std::move(ranks)) {
  check_ranks(comms_, ranks_);
  if (comms_[0]->rank() != 0)
    throw std::invalid_argument("the leader's first rank must be global rank 0");
  for (size_t i = 0; i < ranks_.size(); ++i)
    spdlog::info("context-parallel rank {} of {}: {} on {}, {} KV blocks", comms_[i]->rank(),
                 comms_[i]->size(), comms_[i]->name(), ranks_[i]->device_name(),
                 ranks_[i]->num_kv_blocks());
  start_following(threads_, comms_, ranks_, 1, thread_init);
}

ContextParallelRunner::~ContextParallelRunner() {
  std::vector<uint8_t> stop;
  try {
    comms_[0]->broadcast_bytes(stop, 0);
  } catch (const std::exception& e) {
    spdlog::error("context parallelism: stopping the ranks failed: {}", e.what());
  }
  finish_rank(comms_[0], ranks_[0]);
  for (std::thread& t : threads_) t.join();
}

int ContextParallelRunner::num_kv_blocks() const {
  int blocks = ranks_[0]->num_kv_blocks();
  for (const auto& r : ranks_) blocks = std::min(blocks, r->num_kv_blocks());
  return blocks;
}

void ContextParallelRunner::broadcast(const ForwardBatch& batch, uint8_t mode) {
  message_.assign(1, mode);  // the mode byte, then the batch (no shift of the whole message)
  serialize_forward_batch(batch, message_);
  comms_[0]->broadcast_bytes(message_, 0);
}

void ContextParallelRunner::forward(const ForwardBatch& batch, std::vector<float>& logits) {
  broadcast(batch, kForward);
  ranks_[0]->forward(batch, logits);
}

void ContextParallelRunner::forward_greedy(const ForwardBatch& batch, std::vector<int32_t>& ids) {
  broadcast(batch, kForwardGreedy);
  ranks_[0]->forward_greedy(batch, ids);
}

// The followers run the step as for greedy decoding (only ids come back to their host); the
// leader draws the tokens. What only the leader would reject is rejected before the
// broadcast: the followers would otherwise run a step whose collectives the leader skips.
void ContextParallelRunner::forward_sample(const ForwardBatch& batch,
                                           std::span<const DeviceSamplingRow> rows,
                                           std::vector<DeviceSampledToken>& tokens) {
  if (!samples_on_device()) ModelRunner::forward_sample(batch, rows, tokens);  // throws
  check_sampling_rows(batch, rows);
  broadcast(batch, kForwardGreedy);
  ranks_[0]->forward_sample(batch, rows, tokens);
}

std::unique_ptr<ContextParallelRunner> make_cpu_context_parallel_runner(
    const LlamaCpu& model, int cp_size, int num_kv_blocks, int block_size, CpCombine combine) {
  if (cp_size < 1) throw std::invalid_argument("context parallel size must be at least 1");
  comm::LocalGroupOptions options;
  options.timeout = kRankIdleTimeout;
  std::vector<std::unique_ptr<comm::Communicator>> comms =
      comm::make_local_cpu_group(cp_size, options);
  std::vector<std::unique_ptr<ModelRunner>> ranks;
  for (int r = 0; r < cp_size; ++r)
    ranks.push_back(std::make_unique<CpuModelRunner>(
        model, num_kv_blocks, block_size, ContextParallelRank{comms[size_t(r)].get(), combine}));
  return std::make_unique<ContextParallelRunner>(std::move(comms), std::move(ranks));
}

std::string ContextParallelRunner::device_name() const {
  return ranks_[0]->device_name() + ", context parallel over " + std::to_string(cp_size()) +
         " ranks (" + comms_[0]->name() + ")";
}

ContextParallelFollowers::ContextParallelFollowers(
    std::vector<std::unique_ptr<comm::Communicator>> comms,
    std::vector<std::unique_ptr<ModelRunner>> ranks, RankThreadInit thread_init)
    : comms_(std::move(comms)), ranks_(std::move(ranks)) {
  check_ranks(comms_, ranks_);
  start_following(threads_, comms_, ranks_, 0, thread_init);
}

ContextParallelFollowers::~ContextParallelFollowers() {
  wait();
}

void ContextParallelFollowers::wait() {
  for (std::thread& t : threads_)
    if (t.joinable()) t.join();
}

}  // namespace arbor
