// The serving engine: continuous batching over one ModelRunner.
//
// Each step: take new requests and aborts from the inbox → Scheduler::schedule() →
// build_forward_batch → runner.forward → for every sequence that completed its tokens, its
// own Sampler picks the next token (when all of them are plain greedy, the runner's
// forward_greedy picks the argmax on the device instead) → stop checks (EOS ids, stop token
// ids, stop strings with held-back text, max_tokens, the model's context) → one
// RequestOutput per sequence to the request's sink. An abort frees the request's KV blocks
// before the next step.
//
// Two ways to drive it: start() runs the loop on its own thread (the server), or call
// step() yourself (tests, offline benchmarks) — not both. add_request() and abort() are
// thread-safe in either mode; sinks are called on the thread that runs the steps.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

#include "engine/kv_block_manager.h"
#include "engine/request.h"
#include "engine/sampler.h"
#include "engine/scheduler.h"
#include "models/model_runner.h"
#include "tokenizer/tokenizer.h"

namespace arbor {

struct EngineConfig {
  int max_num_batched_tokens = 2048;  // clamped to the runner's max_batch_tokens()
  int max_num_seqs = 256;             // clamped to the runner's max_logits_rows()
  bool enable_prefix_caching = true;
};

// A snapshot for metrics. Sequence counts are of the scheduler's queues; totals count since
// the engine started.
struct EngineStats {
  int num_running = 0;   // sequences
  int num_waiting = 0;   // sequences (requests not yet in the scheduler count as waiting)
  int num_requests = 0;  // unfinished requests
  KvCacheUsage kv;       // blocks and prefix-cache counters
  double kv_usage = 0;   // kv.usage(): fraction of blocks referenced by sequences
  double prefix_hit_rate = 0;
  uint64_t requests_total = 0;
  uint64_t requests_finished_total = 0;
  uint64_t prompt_tokens_total = 0;      // prompt tokens of added requests
  uint64_t generation_tokens_total = 0;  // sampled tokens
  uint64_t preemptions_total = 0;
  uint64_t steps_total = 0;
  uint64_t batched_tokens_total = 0;  // tokens run through the model
  uint64_t sampled_seqs_total = 0;    // sequences that sampled a token, over all steps
  double schedule_seconds = 0;        // scheduling + building the batch
  double forward_seconds = 0;         // runner.forward
  double postprocess_seconds = 0;     // sampling, stop checks, detokenizing, sinks
};

class Engine {
 public:
  // runner and tokenizer must outlive the engine.
  Engine(ModelRunner& runner, const Tokenizer& tokenizer, EngineConfig config = {});
  ~Engine();  // stops the loop; unfinished requests get an abort event
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Validates and queues a request; returns its id. Throws std::invalid_argument (naming the
  // field) for an empty prompt, ids outside the vocabulary, a prompt that fills the model's
  // context or the whole KV cache, max_tokens < 1, n outside [1, max_num_seqs], bad sampling
  // parameters or a missing sink.
  uint64_t add_request(Request request);
  // Aborts a request (all its sequences): blocks freed before the next step, one event with
  // FinishReason::kAbort per unfinished sequence. Unknown or finished ids are ignored.
  void abort(uint64_t request_id);

  // Runs one step on the calling thread (only while the loop thread is not running).
  // Returns whether work remains (queued requests or unfinished sequences).
  bool step();
  // Steps until no work remains.
  void run_until_idle();

  // The loop on its own thread: steps while there is work, sleeps on the inbox otherwise.
  void start();
  // Stops and joins the loop; unfinished requests are aborted.
  void stop();

  EngineStats stats() const;
  const EngineConfig& config() const { return config_; }
  const ModelRunner& runner() const { return runner_; }
  // For tests, between steps: throws std::logic_error when the scheduler's and the block
  // pool's bookkeeping disagree.
  void check_invariants() const { scheduler_.check_invariants(); }

 private:
  struct SeqState;
  struct RequestState;
  struct Command {
    uint64_t id = 0;
    std::unique_ptr<RequestState> add;  // null: abort
  };

  void drain_inbox();
  void abort_request(uint64_t id);
  void abort_all();
  // Appends the token sampled for `ss`, checks stop conditions and sends the event.
  void process_token(RequestState& rs, SeqState& ss, SampledToken tok);
  // Ends a sequence without a new token (abort, error, KV capacity) and sends the event.
  void end_sequence(RequestState& rs, SeqState& ss, FinishReason reason,
                    const std::string& error = {});
  RequestOutput make_output(const RequestState& rs, const SeqState& ss) const;
  void emit(RequestState& rs, const RequestOutput& out);
  void erase_done_requests();
  void publish_stats();
  void loop();

  ModelRunner& runner_;
  const Tokenizer& tokenizer_;
  EngineConfig config_;
  KvBlockManager blocks_;
  Scheduler scheduler_;
  std::unordered_map<uint64_t, std::unique_ptr<RequestState>> requests_;  // step thread only
  std::vector<uint64_t> done_;  // requests whose sequences all finished, erased after the step
  std::vector<float> logits_;
  std::vector<int32_t> greedy_ids_;
  std::vector<DeviceSamplingRow> device_rows_;  // forward_sample's input and output
  std::vector<DeviceSampledToken> device_tokens_;
  EngineStats totals_;  // step thread only; copied to stats_ after each step

  std::atomic<uint64_t> next_id_{1};
  mutable std::mutex mu_;  // guards inbox_, stop_, stats_
  std::condition_variable cv_;
  std::vector<Command> inbox_;
  bool stop_ = false;
  EngineStats stats_;
  std::thread thread_;
};

}  // namespace arbor
