// Context-parallel serving: the ranks of one process driven as one ModelRunner. The engine
// talks to rank 0 (the leader); every step the leader broadcasts the batch description to all
// ranks (engine/comm broadcast_bytes) and each rank runs it on its own KV shard, the ranks
// combining their partial attentions inside the forward pass (models/context_parallel.h).
// Sampled token ids come back into the next step's batch, so they are broadcast with it.
//
// Ranks of other processes (multi-node) run ContextParallelFollowers, which obey the same
// broadcasts until the leader stops.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "engine/comm/communicator.h"
#include "models/model_runner.h"

namespace arbor {

// How long a serving rank waits for the leader's next step: for as long as the server is idle.
inline constexpr std::chrono::milliseconds kRankIdleTimeout = std::chrono::hours(24 * 365);

// Called first on each rank's thread (e.g. cudaSetDevice for that rank's GPU).
using RankThreadInit = std::function<void(int local_index)>;

class ContextParallelRunner final : public ModelRunner {
 public:
  // ranks[i] was built with comms[i]; comms[0] must be global rank 0. ranks[0] runs on the
  // caller's thread, ranks[1..] on a thread each.
  ContextParallelRunner(std::vector<std::unique_ptr<comm::Communicator>> comms,
                        std::vector<std::unique_ptr<ModelRunner>> ranks,
                        RankThreadInit thread_init = {});
  // Tells every rank to stop (a last broadcast) and joins the threads.
  ~ContextParallelRunner() override;

  const LlamaConfig& config() const override { return ranks_[0]->config(); }
  // The smallest rank's pool: every rank must hold every block the engine hands out.
  int num_kv_blocks() const override;
  int block_size() const override { return ranks_[0]->block_size(); }
  int max_batch_tokens() const override { return ranks_[0]->max_batch_tokens(); }
  int max_logits_rows() const override { return ranks_[0]->max_logits_rows(); }
  void forward(const ForwardBatch& batch, std::vector<float>& logits) override;
  void forward_greedy(const ForwardBatch& batch, std::vector<int32_t>& ids) override;
  bool samples_on_device() const override { return ranks_[0]->samples_on_device(); }
  void forward_sample(const ForwardBatch& batch, std::span<const DeviceSamplingRow> rows,
                      std::vector<DeviceSampledToken>& tokens) override;
  std::string device_name() const override;

  int cp_size() const { return comms_[0]->size(); }

 private:
  void broadcast(const ForwardBatch& batch, uint8_t mode);

  std::vector<std::unique_ptr<comm::Communicator>> comms_;  // outlive the runners
  std::vector<std::unique_ptr<ModelRunner>> ranks_;
  std::vector<std::thread> threads_;
  std::vector<uint8_t> message_;
};

// The ranks of a follower process: each runs every step the leader broadcasts, on its own
// thread, until the leader stops (or its communicator fails).
class ContextParallelFollowers {
 public:
  ContextParallelFollowers(std::vector<std::unique_ptr<comm::Communicator>> comms,
                           std::vector<std::unique_ptr<ModelRunner>> ranks,
                           RankThreadInit thread_init = {});
  ~ContextParallelFollowers();
  // Blocks until every rank has stopped.
  void wait();

 private:
  std::vector<std::unique_ptr<comm::Communicator>> comms_;
  std::vector<std::unique_ptr<ModelRunner>> ranks_;
  std::vector<std::thread> threads_;
};

// p simulated ranks of the CPU model in this process (threads, engine/comm local-cpu group),
// each with num_kv_blocks blocks of block_size positions: the engine sees num_kv_blocks
// super-blocks of p × block_size. For tests and for trying context parallelism anywhere.
std::unique_ptr<ContextParallelRunner> make_cpu_context_parallel_runner(
    const LlamaCpu& model, int cp_size, int num_kv_blocks, int block_size, CpCombine combine);

}  // namespace arbor
