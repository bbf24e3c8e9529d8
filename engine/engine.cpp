#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "engine/batch_builder.h"
#include "engine/sampler.h"
#include "engine/stop_strings.h"
#include "tokenizer/incremental_detokenizer.h"

namespace arbor {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

EngineConfig clamp_config(EngineConfig c, const ModelRunner& runner) {
  c.max_num_batched_tokens = std::min(c.max_num_batched_tokens, runner.max_batch_tokens());
  c.max_num_seqs = std::min({c.max_num_seqs, runner.max_logits_rows(), c.max_num_batched_tokens});
  if (c.max_num_seqs < 1 || c.max_num_batched_tokens < 1)
    throw std::invalid_argument("the engine needs max_num_seqs and max_num_batched_tokens >= 1");
  return c;
}

// Argmax of the raw logits is all the sampler would do: the runner may pick it on the device.
bool plain_greedy(const SamplingParams& p) {
  return p.temperature < kGreedyTemperature && p.logprobs < 0 && p.repetition_penalty == 1.0f &&
         p.presence_penalty == 0.0f && p.frequency_penalty == 0.0f && p.logit_bias.empty();
}

bool contains(const std::vector<int>& ids, int32_t id) {
  return std::find(ids.begin(), ids.end(), id) != ids.end();
}

}  // namespace

struct Engine::SeqState {
  SeqState(uint64_t request_id, int index, const Request& req, const Tokenizer& tokenizer)
      : seq(request_id, index, req.prompt_ids),
        sampler(seeded_params(req.sampling, index)),
        device_seed(sampler.params().seed ? *sampler.params().seed : random_sampling_seed()),
        detok(tokenizer, req.prompt_ids),
        stops(req.stop) {}

  static SamplingParams seeded_params(SamplingParams p, int index) {
    if (p.seed) *p.seed += uint64_t(index);
    return p;
  }

  Sequence seq;
  Sampler sampler;  // draws on the host (runners without device sampling)
  // The key of the sequence's draws on the device (ModelRunner::forward_sample), whose step
  // is the output index: a seeded request draws the same tokens whatever the batch.
  uint64_t device_seed;
  IncrementalDetokenizer detok;
  StopStringMatcher stops;
  Clock::time_point first_scheduled{};  // epoch: not scheduled yet
};

struct Engine::RequestState {
  uint64_t id = 0;
  Request req;
  std::vector<std::unique_ptr<SeqState>> seqs;  // [n]; 1.. start by forking 0 after prefill
  bool forked = false;
  int num_unfinished = 0;
  bool sink_failed = false;
};

Engine::Engine(ModelRunner& runner, const Tokenizer& tokenizer, EngineConfig config)
    : runner_(runner),
      tokenizer_(tokenizer),
      config_(clamp_config(config, runner)),
      blocks_(runner.num_kv_blocks(), runner.block_size(), config_.enable_prefix_caching),
      scheduler_({config_.max_num_batched_tokens, config_.max_num_seqs}, blocks_) {
  publish_stats();
}

Engine::~Engine() {
  stop();
}

uint64_t Engine::add_request(Request request) {
  const LlamaConfig& mc = runner_.config();
  const int len = int(request.prompt_ids.size());
  if (!request.sink) throw std::invalid_argument("request has no sink");
  if (len == 0) throw std::invalid_argument("the prompt is empty");
  for (int32_t id : request.prompt_ids)
    if (id < 0 || id >= mc.vocab_size)
      throw std::invalid_argument("prompt token id " + std::to_string(id) +
                                  " is outside the vocabulary [0, " +
                                  std::to_string(mc.vocab_size) + ")");
  if (len >= mc.max_position_embeddings)
    throw std::invalid_argument("the prompt has " + std::to_string(len) +
                                " tokens; the model's context is " +
                                std::to_string(mc.max_position_embeddings) + " tokens");
  if (blocks_.blocks_for(len + 1) > blocks_.num_blocks())
    throw std::invalid_argument("the prompt has " + std::to_string(len) +
                                " tokens; the KV cache holds " +
                                std::to_string(blocks_.num_blocks() * blocks_.block_size()));
  if (request.max_tokens < 1)
    throw std::invalid_argument("max_tokens must be >= 1, got " +
                                std::to_string(request.max_tokens));
  if (request.n < 1 || request.n > config_.max_num_seqs)
    throw std::invalid_argument("n must be in [1, " + std::to_string(config_.max_num_seqs) +
                                "], got " + std::to_string(request.n));
  request.sampling.validate(mc.vocab_size);

  auto rs = std::make_unique<RequestState>();
  rs->id = next_id_.fetch_add(1);
  rs->req = std::move(request);
  for (int i = 0; i < rs->req.n; ++i)
    rs->seqs.push_back(std::make_unique<SeqState>(rs->id, i, rs->req, tokenizer_));
  rs->forked = rs->req.n == 1;
  rs->num_unfinished = rs->req.n;
  const uint64_t id = rs->id;
  {
    std::lock_guard lock(mu_);
    inbox_.push_back({id, std::move(rs)});
  }
  cv_.notify_one();
  return id;
}

void Engine::abort(uint64_t request_id) {
  {
    std::lock_guard lock(mu_);
    inbox_.push_back({request_id, nullptr});
  }
  cv_.notify_one();
}

void Engine::drain_inbox() {
  std::vector<Command> commands;
  {
    std::lock_guard lock(mu_);
    commands.swap(inbox_);
  }
  // Requests added here are published in the stats before anything can end them (an abort
  // below, or the step that follows): a client whose stream has ended finds its request
  // counted when it reads the stats (or /metrics) right away.
  bool unpublished = false;
  for (Command& c : commands) {
    if (!c.add) {
      if (unpublished) publish_stats();
      unpublished = false;
      abort_request(c.id);
      continue;
    }
    RequestState& rs = *c.add;
    scheduler_.add(&rs.seqs[0]->seq);
    ++totals_.requests_total;
    totals_.prompt_tokens_total += rs.seqs[0]->seq.prompt_len;
    requests_.emplace(c.id, std::move(c.add));
    unpublished = true;
  }
  if (unpublished) publish_stats();
}

void Engine::abort_request(uint64_t id) {
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  RequestState& rs = *it->second;
  for (auto& ss : rs.seqs)
    if (!ss->seq.is_finished()) end_sequence(rs, *ss, FinishReason::kAbort);
  erase_done_requests();
}

void Engine::abort_all() {
  drain_inbox();
  std::vector<uint64_t> ids;
  for (const auto& [id, rs] : requests_) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  for (uint64_t id : ids) abort_request(id);
  publish_stats();
}

RequestOutput Engine::make_output(const RequestState& rs, const SeqState& ss) const {
  RequestOutput o;
  o.request_id = rs.id;
  o.index = ss.seq.index;
  o.num_prompt_tokens = ss.seq.prompt_len;
  o.num_output_tokens = ss.seq.num_output();
  o.num_cached_tokens = std::max(0, ss.seq.num_cached_tokens);
  o.first_scheduled = ss.first_scheduled;
  return o;
}

void Engine::emit(RequestState& rs, const RequestOutput& out) {
  if (rs.sink_failed) return;
  try {
    rs.req.sink->on_output(out);
  } catch (const std::exception& e) {
    // A broken sink loses its own request only.
    std::fprintf(stderr, "arbor engine: sink of request %llu failed (%s); aborting it\n",
                 static_cast<unsigned long long>(rs.id), e.what());
    rs.sink_failed = true;
    abort(rs.id);
  }
}

void Engine::end_sequence(RequestState& rs, SeqState& ss, FinishReason reason,
                          const std::string& error) {
  scheduler_.finish(&ss.seq, reason);
  if (--rs.num_unfinished == 0) done_.push_back(rs.id);
  RequestOutput o = make_output(rs, ss);
  o.finish_reason = reason;
  o.error = error;
  if (reason == FinishReason::kLength) {  // a normal end: send the text still held back
    try {
      StopStringMatcher::Result r = ss.stops.push(ss.detok.flush());
      o.text = std::move(r.text);
      if (r.stopped)
        o.finish_reason = FinishReason::kStopString;
      else
        o.text += ss.stops.flush();
    } catch (const std::exception&) {
    }
  }
  emit(rs, o);
}

void Engine::process_token(RequestState& rs, SeqState& ss, SampledToken tok) {
  Sequence& seq = ss.seq;
  seq.tokens.push_back(tok.id);
  ++totals_.generation_tokens_total;

  RequestOutput o = make_output(rs, ss);
  o.token_id = tok.id;
  o.has_logprobs = rs.req.sampling.logprobs >= 0;
  o.logprob = tok.logprob;
  o.top_logprobs = std::move(tok.top_logprobs);

  std::optional<FinishReason> reason;
  const LlamaConfig& mc = runner_.config();
  try {
    if ((!rs.req.ignore_eos && contains(mc.eos_token_ids, tok.id)) ||
        std::find(rs.req.stop_token_ids.begin(), rs.req.stop_token_ids.end(), tok.id) !=
            rs.req.stop_token_ids.end()) {
      reason = FinishReason::kStop;  // the stop token's text is not sent
    } else {
      StopStringMatcher::Result r = ss.stops.push(ss.detok.push(tok.id));
      o.text = std::move(r.text);
      if (r.stopped) reason = FinishReason::kStopString;
    }
    if (!reason &&
        (seq.num_output() >= rs.req.max_tokens || seq.num_tokens() >= mc.max_position_embeddings))
      reason = FinishReason::kLength;
    if (reason && *reason != FinishReason::kStopString) {  // send what is held back
      StopStringMatcher::Result r = ss.stops.push(ss.detok.flush());
      o.text += r.text;
      if (r.stopped)
        reason = FinishReason::kStopString;
      else
        o.text += ss.stops.flush();
    }
  } catch (const std::exception& e) {  // e.g. an id the tokenizer does not know
    end_sequence(rs, ss, FinishReason::kError, std::string("detokenizing failed: ") + e.what());
    return;
  }
  if (reason) {
    scheduler_.finish(&seq, *reason);
    if (--rs.num_unfinished == 0) done_.push_back(rs.id);
    o.finish_reason = reason;
  }
  emit(rs, o);
}

bool Engine::step() {
  drain_inbox();
  if (!scheduler_.has_work()) {
    publish_stats();
    return false;
  }
  const auto t0 = Clock::now();
  SchedulerOutput out = scheduler_.schedule();
  for (Sequence* seq : out.finished) {  // too long for the whole KV cache
    RequestState& rs = *requests_.at(seq->request_id);
    end_sequence(rs, *rs.seqs[seq->index], FinishReason::kLength);
  }
  if (out.empty()) {
    erase_done_requests();
    publish_stats();
    return scheduler_.has_work();
  }
  ForwardBatch batch = build_forward_batch(out.chunks, blocks_.block_size());
  const auto t1 = Clock::now();
  for (Sequence* seq : out.seqs) {
    SeqState& ss = *requests_.at(seq->request_id)->seqs[seq->index];
    if (ss.first_scheduled == Clock::time_point{}) ss.first_scheduled = t0;
  }
  totals_.schedule_seconds += std::chrono::duration<double>(t1 - t0).count();
  // How tokens are drawn: argmax ids from the device when every row is plain greedy; else
  // on the device when the runner can (only the tokens come back, not [rows][vocab] fp32
  // logits: then every draw of a sequence is made there, keyed by its seed and output index,
  // whatever else the step holds); else on the host from the logits.
  bool greedy_only = true;
  size_t logits_rows = 0, fork_rows = 0;
  for (size_t i = 0; i < out.seqs.size(); ++i) {
    if (!out.chunks[i].want_logits) continue;
    const RequestState& rs = *requests_.at(out.seqs[i]->request_id);
    greedy_only = greedy_only && plain_greedy(rs.req.sampling);
    ++logits_rows;
    if (!rs.forked) fork_rows += rs.seqs.size() - 1;
  }
  // An n > 1 request forks its other samples off its prompt's last row: on the device each
  // of them draws from a copy of that row (the row repeated in the batch), unless the copies
  // would pass the runner's row limit; then this step draws on the host.
  const bool device_sampling = !greedy_only && runner_.samples_on_device() &&
                               logits_rows + fork_rows <= size_t(runner_.max_logits_rows());
  std::vector<size_t> first_fork_row(out.seqs.size(), 0);  // device: row of a parent's child 1
  try {
    if (greedy_only) {
      runner_.forward_greedy(batch, greedy_ids_);
    } else if (device_sampling) {
      device_rows_.clear();
      auto add_row = [&](const RequestState& rs, const SeqState& ss, const Sequence& from) {
        DeviceSamplingRow row = device_sampling_row(rs.req.sampling, ss.device_seed);
        row.step = uint64_t(from.num_output());
        row.prompt_ids = from.prompt();
        row.output_ids = from.output();
        device_rows_.push_back(row);
      };
      for (size_t i = 0; i < out.seqs.size(); ++i) {
        if (!out.chunks[i].want_logits) continue;
        const Sequence& seq = *out.seqs[i];
        const RequestState& rs = *requests_.at(seq.request_id);
        add_row(rs, *rs.seqs[seq.index], seq);
      }
      size_t parent_row = 0;
      for (size_t i = 0; i < out.seqs.size(); ++i) {
        if (!out.chunks[i].want_logits) continue;
        const size_t this_row = parent_row++;
        const Sequence& seq = *out.seqs[i];
        const RequestState& rs = *requests_.at(seq.request_id);
        if (rs.forked) continue;
        first_fork_row[i] = device_rows_.size();
        for (size_t k = 1; k < rs.seqs.size(); ++k) {  // child k: row first + k - 1
          batch.logits_rows.push_back(batch.logits_rows[this_row]);
          add_row(rs, *rs.seqs[k], seq);  // the child starts from the parent's prompt
        }
      }
      runner_.forward_sample(batch, device_rows_, device_tokens_);
    } else {
      runner_.forward(batch, logits_);
    }
  } catch (const std::exception& e) {
    totals_.forward_seconds += seconds_since(t1);
    const std::string msg = std::string("model step failed: ") + e.what();
    for (Sequence* seq : out.seqs) {
      RequestState& rs = *requests_.at(seq->request_id);
      if (!seq->is_finished()) end_sequence(rs, *rs.seqs[seq->index], FinishReason::kError, msg);
    }
    erase_done_requests();
    publish_stats();
    return scheduler_.has_work();
  }
  const auto t2 = Clock::now();
  totals_.forward_seconds += std::chrono::duration<double>(t2 - t1).count();

  scheduler_.complete_step(out);
  // Which sequences sample from which logits row; n > 1 requests fork their other samples
  // off the first one when its prompt is done (on the host they share its row this once; on
  // the device each has its copy of it, after the step's other rows).
  struct Job {
    RequestState* rs;
    SeqState* ss;
    size_t row;
    SampledToken tok;
    std::string error;
  };
  std::vector<Job> jobs;
  size_t row = 0;
  for (size_t i = 0; i < out.seqs.size(); ++i) {
    if (!out.chunks[i].want_logits) continue;
    Sequence* seq = out.seqs[i];
    const size_t this_row = row++;
    if (seq->is_finished()) continue;
    RequestState& rs = *requests_.at(seq->request_id);
    jobs.push_back({&rs, rs.seqs[seq->index].get(), this_row, {}, {}});
    if (!rs.forked) {
      rs.forked = true;
      for (size_t k = 1; k < rs.seqs.size(); ++k) {
        SeqState& child = *rs.seqs[k];
        if (child.seq.is_finished()) continue;
        scheduler_.fork(*seq, &child.seq);
        child.first_scheduled = rs.seqs[seq->index]->first_scheduled;
        jobs.push_back(
            {&rs, &child, device_sampling ? first_fork_row[i] + k - 1 : this_row, {}, {}});
      }
    }
  }
  // Sampling is independent per sequence (each its own sampler), so it runs in parallel; a
  // 128k vocabulary costs tens of microseconds per row.
  const size_t vocab = size_t(runner_.config().vocab_size);
  const int num_jobs = int(jobs.size());
  const bool host_sampling = !greedy_only && !device_sampling;
#pragma omp parallel for schedule(dynamic, 1) if (num_jobs >= 8 && host_sampling)
  for (int j = 0; j < num_jobs; ++j) {
    Job& job = jobs[j];
    const Sequence& seq = job.ss->seq;
    if (greedy_only) {
      job.tok.id = greedy_ids_[job.row];
      continue;
    }
    try {
      job.tok = device_sampling ? take_device_token(device_tokens_[job.row])
                                : job.ss->sampler.sample({logits_.data() + job.row * vocab, vocab},
                                                         seq.prompt(), seq.output());
    } catch (const std::exception& e) {
      job.error = e.what();
    }
  }
  for (Job& job : jobs) {
    if (!job.error.empty())
      end_sequence(*job.rs, *job.ss, FinishReason::kError, "sampling failed: " + job.error);
    else
      process_token(*job.rs, *job.ss, std::move(job.tok));
    ++totals_.sampled_seqs_total;
  }
  ++totals_.steps_total;
  totals_.batched_tokens_total += uint64_t(out.num_batched_tokens);
  erase_done_requests();
  totals_.postprocess_seconds += seconds_since(t2);
  publish_stats();
  std::lock_guard lock(mu_);
  return scheduler_.has_work() || !inbox_.empty();
}

void Engine::run_until_idle() {
  while (step()) {
  }
}

void Engine::erase_done_requests() {
  for (uint64_t id : done_)
    if (requests_.erase(id)) ++totals_.requests_finished_total;
  done_.clear();
}

void Engine::publish_stats() {
  EngineStats s = totals_;
  s.num_running = scheduler_.num_running();
  s.num_waiting = scheduler_.num_waiting();
  s.num_requests = int(requests_.size());
  s.kv = blocks_.usage_stats();
  s.kv_usage = s.kv.usage();
  s.prefix_hit_rate = s.kv.hit_rate();
  s.preemptions_total = scheduler_.num_preemptions();
  std::lock_guard lock(mu_);
  for (const Command& c : inbox_)
    if (c.add) {
      ++s.num_waiting;
      ++s.num_requests;
    }
  stats_ = s;
}

EngineStats Engine::stats() const {
  std::lock_guard lock(mu_);
  return stats_;
}

void Engine::loop() {
  for (;;) {
    bool busy = false;
    try {
      busy = step();
    } catch (const std::exception& e) {  // a bookkeeping bug: fail what is in flight
      std::fprintf(stderr, "arbor engine: step failed: %s\n", e.what());
      for (auto& [id, rs] : requests_)
        for (auto& ss : rs->seqs)
          if (!ss->seq.is_finished())
            end_sequence(*rs, *ss, FinishReason::kError, std::string("engine error: ") + e.what());
      erase_done_requests();
      publish_stats();
    }
    std::unique_lock lock(mu_);
    if (!busy) cv_.wait(lock, [&] { return stop_ || !inbox_.empty(); });
    if (stop_) return;
  }
}

void Engine::start() {
  std::lock_guard lock(mu_);
  if (thread_.joinable()) throw std::logic_error("the engine loop is already running");
  stop_ = false;
  thread_ = std::thread(&Engine::loop, this);
}

void Engine::stop() {
  {
    std::lock_guard lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  abort_all();
}

}  // namespace arbor
