// What a client asks the engine for (Request) and what the engine sends back, one event per
// sequence per step (RequestOutput), through the request's sink.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/sampler.h"

namespace arbor {

// Why a sequence ended. kStop: an EOS id or one of the request's stop token ids; kStopString:
// one of its stop strings (OpenAI reports both as "stop"); kLength: max_tokens, the model's
// context or the KV cache's capacity; kAbort: the client went away; kError: the step failed.
enum class FinishReason { kStop, kStopString, kLength, kAbort, kError };
// OpenAI's names: "stop", "stop", "length", "abort", "error".
const char* finish_reason_name(FinishReason reason);

// One event for one sequence (choice `index` of request `request_id`).
struct RequestOutput {
  uint64_t request_id = 0;
  int index = 0;              // which of the request's n sequences
  int32_t token_id = -1;      // the token sampled this step; -1 for an abort/error event
  std::string text;           // newly stable text (may be empty: held back or special id)
  bool has_logprobs = false;  // sampling.logprobs >= 0
  float logprob = 0.0f;       // of token_id
  std::vector<std::pair<int32_t, float>> top_logprobs;
  std::optional<FinishReason> finish_reason;  // set on the sequence's last event
  std::string error;                          // with kError
  int num_prompt_tokens = 0;
  int num_output_tokens = 0;  // generated so far, this token included
  int num_cached_tokens = 0;  // prompt tokens found in the prefix cache at first admission
  // When the scheduler first put the sequence into a batch (the end of its queueing; forked
  // samples n > 1 share their parent's); the epoch while it has not been scheduled yet.
  std::chrono::steady_clock::time_point first_scheduled{};
};

// Receives a request's events on the engine's thread, in order; the last event of each of the
// n sequences has finish_reason set. Must be quick (it runs inside the step loop) and may
// call Engine::abort / add_request.
class RequestSink {
 public:
  virtual ~RequestSink() = default;
  virtual void on_output(const RequestOutput& output) = 0;
};

struct Request {
  std::vector<int32_t> prompt_ids;
  SamplingParams sampling;
  int max_tokens = 16;                  // >= 1
  bool ignore_eos = false;              // ignore the model's EOS ids (not stop_token_ids)
  std::vector<int32_t> stop_token_ids;  // end the sequence; their text is not sent
  std::vector<std::string> stop;        // stop strings; the text is cut before the match
  int n = 1;                            // parallel samples sharing the prompt's KV blocks;
                                        // sequence i draws with seed + i when seeded
  std::shared_ptr<RequestSink> sink;    // required
};

}  // namespace arbor
