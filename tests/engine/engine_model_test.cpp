// The engine over the real CPU model (tiny-llama fixture): batch invariance under chunked
// prefill and preemption, prefix caching, n > 1, stop strings with a real tokenizer, aborts.
#include <algorithm>
#include <catch2/catch.hpp>
#include <memory>
#include <random>

#include "engine/engine.h"
#include "engine/generate.h"
#include "models/llama.h"
#include "models/model_runner.h"
#include "tests/engine/engine_fakes.h"
#include "tests/test_util.h"

namespace arbor {
namespace {

using test::CollectSink;
using test::run_checked;

struct TinyModel {
  TinyModel()
      : dir(test::fixtures_dir() / "models" / "tiny-llama"),
        model(LlamaCpu::load(dir)),
        tokenizer(load_tokenizer(dir)) {}
  std::filesystem::path dir;
  LlamaCpu model;
  std::unique_ptr<Tokenizer> tokenizer;
};

TinyModel& tiny() {
  static TinyModel m;
  return m;
}

std::vector<int32_t> random_ids(std::mt19937& rng, int len) {
  std::vector<int32_t> ids = {1};
  while (int(ids.size()) < len) ids.push_back(int32_t(3 + rng() % 509));
  return ids;
}

Request greedy(std::vector<int32_t> prompt, int max_tokens, std::shared_ptr<CollectSink> sink) {
  Request r;
  r.prompt_ids = std::move(prompt);
  r.sampling.temperature = 0.0f;
  r.max_tokens = max_tokens;
  r.ignore_eos = true;
  r.sink = std::move(sink);
  return r;
}

// Output of each request run alone on a roomy cache, prefix caching off.
std::vector<std::vector<int32_t>> run_alone(const std::vector<Request>& reqs) {
  CpuModelRunner runner(tiny().model, 64, 4);
  Engine engine(runner, *tiny().tokenizer, {512, 8, false});
  std::vector<std::vector<int32_t>> out;
  for (Request r : reqs) {
    auto sink = std::make_shared<CollectSink>(r.n);
    r.sink = sink;
    engine.add_request(r);
    engine.run_until_idle();
    out.push_back(sink->tokens());
  }
  return out;
}

}  // namespace

TEST_CASE("engine (tiny-llama): greedy output alone = inside a preempting batch",
          "[engine][model]") {
  std::mt19937 rng(7);
  std::vector<Request> reqs;
  for (int len : {3, 9, 14, 22, 31, 40}) reqs.push_back(greedy(random_ids(rng, len), 14, nullptr));
  const auto alone = run_alone(reqs);

  // The same as generate() gives (the single-request path).
  {
    CpuModelRunner runner(tiny().model, 64, 4);
    GenerateOptions g;
    g.sampling.temperature = 0;
    g.max_tokens = 14;
    g.ignore_eos = true;
    GenerateResult r =
        generate(runner, *tiny().tokenizer, reqs[3].prompt_ids, g, [](std::string_view) {});
    CHECK(r.output_ids == alone[3]);
  }

  // All at once: 8-token steps (chunked prefill) and a pool of 20 blocks of 4 for up to
  // 6 × 54 tokens (preemption).
  for (bool caching : {false, true}) {
    CpuModelRunner runner(tiny().model, 20, 4);
    Engine engine(runner, *tiny().tokenizer, {8, 6, caching});
    const auto sinks = run_checked(engine, reqs);
    const EngineStats s = engine.stats();
    CHECK(s.preemptions_total > 0);
    CHECK(s.kv.used_blocks == 0);
    for (size_t i = 0; i < reqs.size(); ++i) {
      INFO("request " << i << ", prefix caching " << caching);
      CHECK(sinks[i]->tokens() == alone[i]);
      CHECK(sinks[i]->finish() == FinishReason::kLength);
    }
  }
}

TEST_CASE("generate (tiny-llama) stops where stop_requested says, keeping what it made",
          "[engine][model]") {
  std::mt19937 rng(11);
  const std::vector<int32_t> prompt = random_ids(rng, 20);
  CpuModelRunner runner(tiny().model, 64, 4);
  GenerateOptions g;
  g.sampling.temperature = 0;
  g.max_tokens = 12;
  g.ignore_eos = true;
  g.prefill_chunk = 8;  // 3 prefill steps
  auto quiet = [](std::string_view) {};
  const GenerateResult full = generate(runner, *tiny().tokenizer, prompt, g, quiet);
  REQUIRE(full.output_ids.size() == 12);
  CHECK(full.finish_reason == FinishReason::kLength);

  // Asked before every step: 3 prefill chunks, then one decode step per token after the
  // first. Stopping at the k-th question leaves the tokens sampled until then.
  for (int stop_at : {1, 3, 4, 5, 9}) {
    int asked = 0;
    g.stop_requested = [&] { return ++asked >= stop_at; };
    std::string text;
    const GenerateResult r =
        generate(runner, *tiny().tokenizer, prompt, g, [&](std::string_view t) { text += t; });
    INFO("stop at question " << stop_at);
    CHECK(asked == stop_at);
    CHECK(r.finish_reason == FinishReason::kAbort);
    const size_t made = stop_at <= 3 ? 0 : size_t(stop_at - 3);
    REQUIRE(r.output_ids.size() == made);
    CHECK(std::equal(r.output_ids.begin(), r.output_ids.end(), full.output_ids.begin()));
    CHECK(r.prompt_tokens == 20);
  }
  // A stop that never comes changes nothing.
  g.stop_requested = [] { return false; };
  const GenerateResult again = generate(runner, *tiny().tokenizer, prompt, g, quiet);
  CHECK(again.output_ids == full.output_ids);
  CHECK(again.finish_reason == FinishReason::kLength);
}

TEST_CASE("engine (tiny-llama): a repeated prompt hits the prefix cache, same output",
          "[engine][model][prefix]") {
  std::mt19937 rng(8);
  const Request req = greedy(random_ids(rng, 37), 10, nullptr);
  CpuModelRunner runner(tiny().model, 64, 4);
  Engine engine(runner, *tiny().tokenizer, {512, 8, true});
  auto first = std::make_shared<CollectSink>(), second = std::make_shared<CollectSink>();
  Request r = req;
  r.sink = first;
  engine.add_request(r);
  engine.run_until_idle();
  CHECK(engine.stats().kv.prefix_hit_tokens == 0);
  CHECK(engine.stats().kv.cached_blocks > 0);
  r.sink = second;
  engine.add_request(r);
  engine.run_until_idle();
  CHECK(second->events.front().num_cached_tokens == 36);
  CHECK(engine.stats().kv.prefix_hit_tokens == 36);
  CHECK(second->tokens() == first->tokens());
  CHECK(second->tokens() == run_alone({req})[0]);

  SECTION("also while the first is still running") {
    auto a = std::make_shared<CollectSink>(), b = std::make_shared<CollectSink>();
    Request ra = greedy(random_ids(rng, 29), 12, a);
    engine.add_request(ra);
    engine.step();
    engine.step();
    Request rb = ra;
    rb.sink = b;
    engine.add_request(rb);
    engine.run_until_idle();
    CHECK(b->events.front().num_cached_tokens == 28);
    CHECK(a->tokens() == b->tokens());
    CHECK(engine.stats().kv.used_blocks == 0);
  }
}

TEST_CASE("engine (tiny-llama): n > 1 equals n single requests seeded seed + i",
          "[engine][model][n]") {
  std::mt19937 rng(9);
  Request r = greedy(random_ids(rng, 21), 10, nullptr);
  r.sampling.temperature = 0.9f;
  r.sampling.seed = 42;
  r.n = 3;
  CpuModelRunner runner(tiny().model, 64, 4);
  Engine engine(runner, *tiny().tokenizer, {512, 8, false});  // sharing by fork alone
  auto sink = std::make_shared<CollectSink>(3);
  r.sink = sink;
  engine.add_request(r);
  engine.step();
  CHECK(engine.stats().kv.used_blocks == 6);  // 5 shared full blocks + the parent's tail
  engine.run_until_idle();
  std::vector<Request> singles;
  for (int i = 0; i < 3; ++i) {
    Request s = r;
    s.n = 1;
    s.sampling.seed = 42 + i;
    singles.push_back(s);
  }
  const auto alone = run_alone(singles);
  for (int i = 0; i < 3; ++i) CHECK(sink->tokens(i) == alone[i]);
  CHECK(engine.stats().kv.used_blocks == 0);
}

TEST_CASE("engine (demo model): stop strings with a real tokenizer", "[engine][model][stop]") {
  // The demo model writes English-ish text (tiny-llama's random weights give byte soup).
  const std::unique_ptr<Tokenizer> demo_tokenizer = load_tokenizer(test::demo_model_dir());
  const Tokenizer& tok = *demo_tokenizer;
  CpuModelRunner runner(LlamaCpu::load(test::demo_model_dir()), 16, 16);
  Engine engine(runner, tok);
  const std::vector<int32_t> prompt = tok.encode("The jury said", true);
  auto full = std::make_shared<CollectSink>();
  engine.add_request(greedy(prompt, 16, full));
  engine.run_until_idle();
  const std::string text = full->text();
  // Pick a stop string across a token boundary: the end of one increment + the start of the
  // next.
  std::string stop;
  for (size_t i = 2; i + 1 < full->events.size() && stop.empty(); ++i) {
    const std::string& a = full->events[i].text;
    const std::string& b = full->events[i + 1].text;
    if (a.size() >= 2 && b.size() >= 2) stop = a.substr(a.size() - 2) + b.substr(0, 2);
  }
  REQUIRE_FALSE(stop.empty());
  INFO("text: " << text << "\nstop: " << stop);
  auto cut = std::make_shared<CollectSink>();
  Request r = greedy(prompt, 16, cut);
  r.stop = {stop};
  engine.add_request(r);
  engine.run_until_idle();
  CHECK(cut->finish() == FinishReason::kStopString);
  CHECK(cut->text() == text.substr(0, text.find(stop)));
  CHECK(cut->tokens().size() < full->tokens().size());
}

TEST_CASE("engine (tiny-llama): an abort mid-generation frees the blocks at once",
          "[engine][model]") {
  std::mt19937 rng(10);
  CpuModelRunner runner(tiny().model, 64, 4);
  Engine engine(runner, *tiny().tokenizer, {512, 8, false});
  auto keep = std::make_shared<CollectSink>(), gone = std::make_shared<CollectSink>();
  const Request rk = greedy(random_ids(rng, 10), 8, keep);
  engine.add_request(rk);
  const uint64_t id = engine.add_request(greedy(random_ids(rng, 30), 100, gone));
  for (int i = 0; i < 3; ++i) engine.step();
  const int used_before = engine.stats().kv.used_blocks;
  engine.abort(id);
  engine.step();
  CHECK(gone->finish() == FinishReason::kAbort);
  CHECK(gone->tokens().size() == 3);
  CHECK(used_before == 3 + 8);                // 12 + 32 tokens in blocks of 4
  CHECK(engine.stats().kv.used_blocks == 4);  // the other request's 13 tokens only
  engine.run_until_idle();
  CHECK(keep->tokens() == run_alone({rk})[0]);
  CHECK(engine.stats().kv.used_blocks == 0);
  CHECK(engine.stats().kv.free_blocks == 64);
}

}  // namespace arbor
