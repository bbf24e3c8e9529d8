// Test doubles for the engine: a ModelRunner whose "model" is a hash of the whole context it
// reads back from its paged cache (so any block-table or cache corruption changes the output),
// a letters-only tokenizer, and a sink that records every event.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/request.h"
#include "models/model_runner.h"
#include "tokenizer/tokenizer.h"

namespace arbor::test {

// Ids 0 (BOS) and 1 (EOS) are special; id k >= 2 decodes to letters (see piece()).
class FakeTokenizer : public Tokenizer {
 public:
  explicit FakeTokenizer(int vocab) : vocab_(vocab) {}
  static std::string piece(int32_t id) {
    std::string s(1, char('a' + (id - 2) % 26));
    if (id - 2 >= 26) s += char('a' + (id - 2) / 26 % 26);
    return s;
  }
  std::vector<int32_t> encode(std::string_view, bool) const override { return {}; }
  std::string decode(std::span<const int32_t> ids, bool skip_special) const override {
    std::string s;
    for (int32_t id : ids) {
      if (id < 0 || id >= vocab_) throw TokenizerError("id out of range");
      if (id < 2) {
        if (!skip_special) s += id == 0 ? "<s>" : "</s>";
        continue;
      }
      s += piece(id);
    }
    return s;
  }
  int vocab_size() const override { return vocab_; }
  std::optional<int32_t> bos_id() const override { return 0; }
  std::optional<int32_t> eos_id() const override { return 1; }
  bool is_special(int32_t id) const override { return id == 0 || id == 1; }
  std::string id_to_piece(int32_t id) const override { return piece(id); }

 private:
  int vocab_;
};

// The fake model: logits are pseudo-random in [0, 1) except the "intended" next token, which
// gets 4 more, all a function of the full context. EOS (1) is intended about once in
// eos_every tokens.
class FakeRunner : public ModelRunner {
 public:
  FakeRunner(int vocab, int num_blocks, int block_size, int max_positions = 256, int eos_every = 24)
      : num_blocks_(num_blocks),
        block_size_(block_size),
        eos_every_(eos_every),
        slots_(size_t(num_blocks) * block_size, Slot{-1, -1}) {
    config_.architecture = "FakeForCausalLM";
    config_.vocab_size = vocab;
    config_.max_position_embeddings = max_positions;
    config_.eos_token_ids = {1};
  }

  static uint64_t context_hash(std::span<const int32_t> context) {
    uint64_t h = 1469598103934665603ull;
    for (int32_t t : context) h = (h ^ uint64_t(t + 7)) * 1099511628211ull;
    return h ^ (h >> 29);
  }
  // The greedy choice after `context`.
  int32_t next_token(std::span<const int32_t> context) const {
    const uint64_t h = context_hash(context);
    if (eos_every_ > 0 && h % uint64_t(eos_every_) == 0) return 1;
    return int32_t(2 + (h >> 8) % uint64_t(config_.vocab_size - 2));
  }
  void fill_logits(std::span<const int32_t> context, float* row) const {
    const uint64_t h = context_hash(context);
    for (int v = 0; v < config_.vocab_size; ++v) {
      uint64_t x = (h + uint64_t(v) * 0x9e3779b97f4a7c15ull);
      x ^= x >> 31;
      x *= 0xbf58476d1ce4e5b9ull;
      x ^= x >> 29;
      row[v] = float(x >> 40) / float(1 << 24);
    }
    row[next_token(context)] += 4.0f;
  }

  const LlamaConfig& config() const override { return config_; }
  int num_kv_blocks() const override { return num_blocks_; }
  int block_size() const override { return block_size_; }
  int max_batch_tokens() const override { return max_batch_tokens_; }
  int max_logits_rows() const override { return 1 << 20; }
  std::string device_name() const override { return "fake"; }

  void forward(const ForwardBatch& b, std::vector<float>& logits) override {
    if (fail_next_) {
      fail_next_ = false;
      throw std::runtime_error("injected failure");
    }
    ++steps_;
    max_tokens_seen_ = std::max(max_tokens_seen_, b.num_tokens());
    max_seqs_seen_ = std::max(max_seqs_seen_, b.num_seqs());
    if (b.num_tokens() > max_batch_tokens_) throw std::logic_error("batch over the token limit");
    for (int t = 0; t < b.num_tokens(); ++t) {
      const int slot = b.slot_mapping[t];
      if (slot < 0 || slot >= int(slots_.size())) throw std::logic_error("slot out of range");
      slots_[slot] = {b.token_ids[t], b.positions[t]};
    }
    const int vocab = config_.vocab_size;
    logits.assign(b.logits_rows.size() * size_t(vocab), 0.0f);
    std::vector<int32_t> context;
    for (size_t r = 0; r < b.logits_rows.size(); ++r) {
      const int row = b.logits_rows[r];
      int s = 0;
      while (b.query_start[s + 1] <= row) ++s;
      const int pos = b.positions[row];
      if (pos != b.context_lens[s] - (b.query_start[s + 1] - row)) throw std::logic_error("pos");
      context.clear();
      for (int p = 0; p <= pos; ++p) {
        const int32_t block = b.block_tables[size_t(s) * b.max_blocks_per_seq + p / block_size_];
        if (block < 0) throw std::logic_error("missing block");
        const Slot& slot = slots_[size_t(block) * block_size_ + p % block_size_];
        if (slot.pos != p)
          throw std::logic_error("stale or foreign KV at position " + std::to_string(p));
        context.push_back(slot.token);
      }
      fill_logits(context, logits.data() + r * vocab);
    }
  }

  // Sampling "on the device" (when device_sampling_ is set): the token depends only on the
  // row's logits, temperature, seed and step, as with kernels/cuda/sampling.h, and every row
  // is recorded. A row whose seed is poison_seed_ has nothing to draw from (id -1).
  bool samples_on_device() const override { return device_sampling_; }
  void forward_sample(const ForwardBatch& b, std::span<const DeviceSamplingRow> rows,
                      std::vector<DeviceSampledToken>& tokens) override {
    if (!device_sampling_) return ModelRunner::forward_sample(b, rows, tokens);
    if (rows.size() != b.logits_rows.size()) throw std::invalid_argument("rows != logits rows");
    std::vector<float> logits;
    forward(b, logits);
    ++sample_steps_;
    tokens.assign(rows.size(), {});
    for (size_t r = 0; r < rows.size(); ++r) {
      const DeviceSamplingRow& row = rows[r];
      rows_seen_.push_back({row.seed,
                            row.step,
                            {row.prompt_ids.begin(), row.prompt_ids.end()},
                            {row.output_ids.begin(), row.output_ids.end()}});
      if (row.seed == poison_seed_) continue;
      tokens[r].id = device_draw(logits.data() + r * size_t(config_.vocab_size), row);
      if (row.logprobs >= 0) tokens[r].logprob = -0.5f;
    }
  }
  // The fake device draw: argmax of logit + 8 u(seed, step, id), u in [0, 1) from a hash
  // (8 outweighs the intended token's +4), or the plain argmax at greedy temperatures.
  int32_t device_draw(const float* row, const DeviceSamplingRow& p) const {
    int32_t best = 0;
    float best_value = -1.0f;
    for (int v = 0; v < config_.vocab_size; ++v) {
      float value = row[v];
      if (p.temperature >= 1e-5f) {
        uint64_t x = p.seed * 0x9e3779b97f4a7c15ull + p.step * 0xbf58476d1ce4e5b9ull + uint64_t(v);
        x ^= x >> 31;
        x *= 0x94d049bb133111ebull;
        x ^= x >> 29;
        value += 8.0f * float(x >> 40) / float(1 << 24);
      }
      if (value > best_value) best = v, best_value = value;
    }
    return best;
  }
  struct SampledRowRecord {
    uint64_t seed, step;
    std::vector<int32_t> prompt, output;
  };

  int max_batch_tokens_ = 1 << 20;
  bool device_sampling_ = false;
  uint64_t poison_seed_ = ~0ull;
  int sample_steps_ = 0;
  std::vector<SampledRowRecord> rows_seen_;
  bool fail_next_ = false;
  int steps_ = 0;
  int max_tokens_seen_ = 0;
  int max_seqs_seen_ = 0;

 private:
  struct Slot {
    int32_t token, pos;
  };
  LlamaConfig config_;
  int num_blocks_, block_size_, eos_every_;
  std::vector<Slot> slots_;
};

// Records every event; thread-safe; wait_done() blocks until every sequence has finished.
class CollectSink : public RequestSink {
 public:
  explicit CollectSink(int n = 1) : n_(n) {}
  void on_output(const RequestOutput& o) override {
    std::lock_guard lock(mu_);
    events.push_back(o);
    if (o.finish_reason) ++finished_;
    cv_.notify_all();
  }
  bool done() const {
    std::lock_guard lock(mu_);
    return finished_ >= n_;
  }
  void wait_done() {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return finished_ >= n_; });
  }
  // Per sample index: the sampled tokens, the text, the finish reason (if finished).
  std::vector<int32_t> tokens(int index = 0) const {
    std::lock_guard lock(mu_);
    std::vector<int32_t> t;
    for (const auto& e : events)
      if (e.index == index && e.token_id >= 0) t.push_back(e.token_id);
    return t;
  }
  std::string text(int index = 0) const {
    std::lock_guard lock(mu_);
    std::string t;
    for (const auto& e : events)
      if (e.index == index) t += e.text;
    return t;
  }
  std::optional<FinishReason> finish(int index = 0) const {
    std::lock_guard lock(mu_);
    for (const auto& e : events)
      if (e.index == index && e.finish_reason) return e.finish_reason;
    return std::nullopt;
  }
  int num_finish_events(int index) const {
    std::lock_guard lock(mu_);
    int k = 0;
    for (const auto& e : events) k += e.index == index && e.finish_reason.has_value();
    return k;
  }

  std::vector<RequestOutput> events;

 private:
  int n_;
  int finished_ = 0;
  mutable std::mutex mu_;
  std::condition_variable cv_;
};

// Adds every request with a sink of its own, steps the engine until it has nothing left,
// checking its invariants after every step; returns the sinks in request order.
inline std::vector<std::shared_ptr<CollectSink>> run_checked(Engine& engine,
                                                             std::vector<Request> reqs) {
  std::vector<std::shared_ptr<CollectSink>> sinks;
  for (Request& r : reqs) {
    sinks.push_back(std::make_shared<CollectSink>());
    r.sink = sinks.back();
    engine.add_request(r);
  }
  while (engine.step()) engine.check_invariants();
  return sinks;
}

}  // namespace arbor::test
