// The CPU Llama against golden values from Hugging Face transformers (fp32, on CPU), made by
// tools/make_fixtures.py and tools/train_demo.py: logits at every prompt position, and 32
// greedy tokens per prompt.
//
// Tolerance: both sides compute in fp32 from the same weights, but sum in different orders
// (OpenMP/blocked dot products vs. MKL/oneDNN), so logits differ by rounding only: a few
// 1e-6 for these tiny models. 1e-4 max-abs leaves room for that while any real error (a
// wrong rope pairing, norm, GQA mapping or mask) moves logits by 1e-2 or more.
#include <catch2/catch.hpp>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "engine/batch_builder.h"
#include "engine/generate.h"
#include "engine/kv_block_manager.h"
#include "models/llama.h"
#include "models/model_runner.h"
#include "tests/test_util.h"
#include "tokenizer/tokenizer.h"

namespace arbor {
namespace {

constexpr float kLogitTolerance = 1e-4f;

struct GoldenPrompt {
  std::string text;
  std::vector<int32_t> ids;
  std::vector<float> logits;  // [positions][vocab]
  std::vector<int32_t> greedy;
};

std::vector<GoldenPrompt> load_golden(const std::filesystem::path& dir) {
  nlohmann::json g = nlohmann::json::parse(test::read_file(dir / "golden.json"));
  const std::string blob = test::read_file(dir / "golden.logits.f32");
  const int vocab = g["vocab_size"];
  std::vector<GoldenPrompt> prompts;
  for (const auto& p : g["prompts"]) {
    GoldenPrompt gp;
    gp.text = p["text"];
    gp.ids = p["ids"].get<std::vector<int32_t>>();
    gp.greedy = p["greedy"].get<std::vector<int32_t>>();
    const size_t offset = p["logits_offset"], n = size_t(p["num_positions"]) * vocab;
    REQUIRE((offset + n) * sizeof(float) <= blob.size());
    gp.logits.resize(n);
    std::memcpy(gp.logits.data(), blob.data() + offset * sizeof(float), n * sizeof(float));
    prompts.push_back(std::move(gp));
  }
  return prompts;
}

// Runs the prompt through the model in chunks of `chunk` tokens, returning all logits.
std::vector<float> prompt_logits(LlamaCpu& model, const std::vector<int32_t>& ids, int chunk,
                                 int block_size) {
  KvBlockManager blocks(256, block_size);
  CpuKvCache cache(model.config().num_layers, model.kv_shape(256, block_size));
  std::vector<int32_t> table;
  REQUIRE(blocks.reserve(table, int(ids.size())));
  std::vector<float> all, logits;
  for (int start = 0; start < int(ids.size()); start += chunk) {
    ScheduledChunk c{ids, table, start, std::min(chunk, int(ids.size()) - start), true};
    model.forward(build_forward_batch({&c, 1}, block_size, /*all_logits=*/true), cache, logits);
    all.insert(all.end(), logits.begin(), logits.end());
  }
  return all;
}

void check_fixture(const std::filesystem::path& dir) {
  INFO("model folder " << dir);
  LlamaCpu model = LlamaCpu::load(dir);
  auto tokenizer = load_tokenizer(dir);
  std::vector<GoldenPrompt> golden = load_golden(dir);
  REQUIRE_FALSE(golden.empty());

  for (const GoldenPrompt& p : golden) {
    INFO("prompt: " << p.text);
    // The tokenizer gives the ids transformers saw (BOS included).
    CHECK(tokenizer->encode(p.text, true) == p.ids);

    // Whole prompt in one step, token by token (decode path), and in odd chunks over
    // blocks of different sizes: all must give the golden logits.
    for (auto [chunk, block_size] : {std::pair{4096, 16}, std::pair{1, 16}, std::pair{7, 5}}) {
      INFO("chunk " << chunk << ", block size " << block_size);
      std::vector<float> logits = prompt_logits(model, p.ids, chunk, block_size);
      CHECK(test::max_abs_diff(logits, p.logits) <= kLogitTolerance);
    }

    // 32 greedy tokens, as transformers chose them.
    GenerateOptions opts;
    opts.sampling.temperature = 0;
    opts.max_tokens = int(p.greedy.size());
    opts.ignore_eos = true;
    CpuModelRunner runner(model, /*num_kv_blocks=*/64, /*block_size=*/16);
    GenerateResult r = generate(runner, *tokenizer, p.ids, opts, [](std::string_view) {});
    CHECK(r.output_ids == p.greedy);
  }

  // All prompts together in ragged batches: step 1 prefills a first chunk of each prompt,
  // later steps continue every sequence with chunks of different sizes (the last ones
  // single decode-like tokens). Each row must equal the golden logits of its position.
  const int block_size = 16;
  KvBlockManager blocks(512, block_size);
  CpuKvCache cache(model.config().num_layers, model.kv_shape(512, block_size));
  std::vector<std::vector<int32_t>> tables(golden.size());
  std::vector<int> done(golden.size(), 0);
  for (size_t s = 0; s < golden.size(); ++s)
    REQUIRE(blocks.reserve(tables[s], int(golden[s].ids.size())));
  const int vocab = model.config().vocab_size;
  std::vector<float> logits;
  for (int step = 0;; ++step) {
    std::vector<ScheduledChunk> chunks;
    std::vector<size_t> owners;
    for (size_t s = 0; s < golden.size(); ++s) {
      const int len = int(golden[s].ids.size());
      if (done[s] == len) continue;
      const int want = step == 0 ? int(3 + 5 * s) : (step % 2 ? 1 : 9);
      chunks.push_back({golden[s].ids, tables[s], done[s], std::min(want, len - done[s]), true});
      owners.push_back(s);
    }
    if (chunks.empty()) break;
    ForwardBatch batch = build_forward_batch(chunks, block_size, /*all_logits=*/true);
    model.forward(batch, cache, logits);
    int row = 0;
    for (size_t i = 0; i < chunks.size(); ++i) {
      const GoldenPrompt& p = golden[owners[i]];
      for (int t = 0; t < chunks[i].count; ++t, ++row) {
        const int pos = chunks[i].start + t;
        std::vector<float> got(logits.begin() + size_t(row) * vocab,
                               logits.begin() + size_t(row + 1) * vocab);
        std::vector<float> want(p.logits.begin() + size_t(pos) * vocab,
                                p.logits.begin() + size_t(pos + 1) * vocab);
        INFO("ragged step " << step << ", sequence " << owners[i] << ", position " << pos);
        CHECK(test::max_abs_diff(got, want) <= kLogitTolerance);
      }
      done[owners[i]] += chunks[i].count;
    }
  }
  for (auto& t : tables) blocks.release(t);
  CHECK(blocks.num_free_blocks() == blocks.num_blocks());
}

}  // namespace

TEST_CASE("tiny Llama (fp32, untied, GQA 4:2) matches transformers", "[golden]") {
  check_fixture(test::fixtures_dir() / "models" / "tiny-llama");
}

TEST_CASE("tiny Llama with tied embeddings, bf16 shards matches transformers", "[golden]") {
  check_fixture(test::fixtures_dir() / "models" / "tiny-llama-tied-bf16");
}

TEST_CASE("tiny Llama with llama3 rope scaling, f16, head_dim 32 matches transformers",
          "[golden]") {
  check_fixture(test::fixtures_dir() / "models" / "tiny-llama3-rope-f16");
}

TEST_CASE("the demo model matches transformers", "[golden]") {
  // The shipped demo model with golden values from its training run (tools/train_demo.py).
  test::TempDir dir;
  for (const auto& e : std::filesystem::directory_iterator(test::demo_model_dir()))
    std::filesystem::copy(e.path(), dir.path() / e.path().filename());
  for (const char* f : {"golden.json", "golden.logits.f32"})
    std::filesystem::copy(test::fixtures_dir() / "demo-golden" / f, dir.path() / f);
  check_fixture(dir.path());
}

}  // namespace arbor
