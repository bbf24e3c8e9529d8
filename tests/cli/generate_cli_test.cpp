// End-to-end tests of `arbor generate`: the built executable, run as a user would.
#include <catch2/catch.hpp>

#include "tests/cli/run_arbor.h"
#include "tests/test_util.h"

namespace arbor {

using test::run_arbor;
using test::RunResult;

TEST_CASE("generate with the demo model streams text and reports speed", "[cli]") {
  RunResult r = run_arbor("generate --prompt 'The jury said' --max-tokens 24 --temperature 0 -t 2");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK(r.out.rfind("The jury said", 0) == 0);
  CHECK(r.out.size() > std::string("The jury said").size() + 20);  // 24 tokens of text
  CHECK_THAT(r.err, Catch::Contains("generated: 24 tokens"));
  CHECK_THAT(r.err, Catch::Contains("tok/s"));

  // Greedy decoding is deterministic, and a seeded sample is reproducible.
  CHECK(run_arbor("generate --prompt 'The jury said' --max-tokens 24 --temperature 0 -t 2").out ==
        r.out);
  const std::string seeded = "generate -p 'It was' -n 16 --temperature 1 --seed 42 -t 2";
  CHECK(run_arbor(seeded).out == run_arbor(seeded).out);
}

TEST_CASE("generate reports bad input clearly and exits non-zero", "[cli]") {
  SECTION("missing model folder") {
    RunResult r = run_arbor("generate --model /nonexistent/model -p hi");
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("/nonexistent/model") && Catch::Contains("does not exist"));
  }
  SECTION("truncated weights") {
    test::TempDir dir;
    const auto src = test::fixtures_dir() / "models" / "tiny-llama";
    for (const char* f : {"config.json", "tokenizer.model"})
      std::filesystem::copy(src / f, dir.path() / f);
    std::string weights = test::read_file(src / "model.safetensors");
    test::write_file(dir.path() / "model.safetensors", weights.substr(0, weights.size() / 2));
    RunResult r = run_arbor("generate --model " + dir.path().string() + " -p hi");
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("model.safetensors"));
  }
  SECTION("no prompt") {
    RunResult r = run_arbor("generate");
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains("prompt"));
  }
  SECTION("out-of-range sampling parameter") {
    RunResult r = run_arbor("generate -p hi --temperature -1");
    CHECK(r.exit_code == 1);
    CHECK_THAT(r.err, Catch::Contains("temperature"));
  }
}

TEST_CASE("generate checks its flags and the prompt before loading the model", "[cli]") {
  for (const char* flags : {"--temperature -1", "--top-p 7", "--min-p 2", "--repetition-penalty 0",
                            "--presence-penalty 3", "--frequency-penalty -3", "--top-k -2"}) {
    RunResult r = run_arbor(std::string("generate -p 'The jury said' ") + flags);
    INFO(flags << ": " << r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.out.empty());  // the prompt is not echoed
    CHECK_THAT(r.err, Catch::StartsWith("arbor: error: --") && !Catch::Contains("loaded"));
  }
  // A prompt longer than the context is refused before it is echoed (demo model: 2048).
  test::TempDir dir;
  std::string words;
  for (int i = 0; i < 1500; ++i) words += "word" + std::to_string(i) + " ";
  test::write_file(dir.path() / "long.txt", words);
  RunResult r = run_arbor("generate -t 2 --prompt-file " + (dir.path() / "long.txt").string());
  CHECK(r.exit_code == 1);
  CHECK(r.out.empty());
  CHECK_THAT(r.err, Catch::Contains("the model's context is 2048 tokens"));
  CHECK_THAT(r.err, !Catch::Contains("loaded"));
}

TEST_CASE("generate sizes the KV cache from the context, not --max-tokens", "[cli]") {
  // Generation stops at the context (1024 for tiny-llama): 3 prompt tokens + 1021.
  const std::string model = (test::fixtures_dir() / "models" / "tiny-llama").string();
  RunResult r = run_arbor("generate --model " + model +
                          " -p hi -n 2147483647 --ignore-eos --temperature 0 -t 2");
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.err, Catch::Contains("generated: 1021 tokens") && Catch::Contains("finish: length"));
}

TEST_CASE("generate rejects an empty prompt from either flag", "[cli]") {
  test::TempDir dir;
  test::write_file(dir.path() / "empty.txt", "");
  RunResult file = run_arbor("generate --prompt-file " + (dir.path() / "empty.txt").string());
  CHECK(file.exit_code == 1);
  CHECK_THAT(file.err, Catch::Contains("arbor: error: the prompt file") &&
                           Catch::Contains("empty.txt is empty"));
  RunResult text = run_arbor("generate --prompt ''");
  CHECK(text.exit_code == 1);
  CHECK_THAT(text.err, Catch::StartsWith("arbor: error: --prompt is empty"));
}

TEST_CASE("generate bounds --threads", "[cli]") {
  for (const char* t : {"50000", "100000", "-1", "abc"}) {
    RunResult r = run_arbor(std::string("generate -p hi -n 1 -t ") + t);
    INFO(r.err);
    CHECK(r.exit_code == 1);
    CHECK(r.err ==
          std::string("arbor: error: --threads must be an integer in 0..1024, got ") + t + "\n");
  }
}

TEST_CASE("generate --device cuda without a visible GPU says so", "[cli]") {
  RunResult r = run_arbor("generate -p hi -n 1 --device cuda", "CUDA_VISIBLE_DEVICES=");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("no CUDA GPU is visible") ||
                        Catch::Contains("built without the CUDA backend"));
  CHECK_THAT(r.err, !Catch::Contains(".cu:"));
}

TEST_CASE("SIGINT during generate ends the line, prints the summary and exits 130", "[cli]") {
  const std::string prompt = "The jury said";
  test::Background run("exec " + test::arbor_binary() + " generate -p '" + prompt +
                       "' -n 2000 --ignore-eos --temperature 0 -t 2");
  // Some generated text first: the handler is in place once generation runs.
  REQUIRE(run.wait_until(
      [&](const test::Background& b) { return b.out().size() > prompt.size() + 8; }));
  CHECK(run.signal_and_wait(SIGINT) == 130);
  const std::string out = run.out(), err = run.err();
  INFO(err);
  CHECK(out.back() == '\n');
  CHECK_THAT(err,
             Catch::Matches(R"([\s\S]*\nprompt: \d+ tokens .* \| generated: [1-9]\d* tokens .* \| )"
                            R"(finish: interrupted\n)"));
}

}  // namespace arbor

namespace arbor {

TEST_CASE("serve reads the example configs and rejects unknown keys", "[cli]") {
  // A model folder that does not exist on the command line makes serve fail right after the
  // config is applied: an unknown key would fail earlier, with its own message.
  for (const char* cfg : {"cpu-demo.json", "one-gpu.json", "eight-gpu-long-context.json"}) {
    const auto path = test::fixtures_dir().parent_path().parent_path() / "configs" / cfg;
    RunResult r = run_arbor("serve --config " + path.string() + " --model /nonexistent/m");
    INFO(cfg << ": " << r.err);
    CHECK(r.exit_code != 0);
    CHECK_THAT(r.err, Catch::Contains("/nonexistent/m"));
    CHECK_THAT(r.err, !Catch::Contains("unknown key"));
  }
  test::TempDir dir;
  test::write_file(dir.path() / "bad.json", R"({"max-num-seqs": 4, "colour": "blue"})");
  RunResult r = run_arbor("serve --config " + (dir.path() / "bad.json").string());
  CHECK(r.exit_code != 0);
  CHECK_THAT(r.err, Catch::Contains("unknown key 'colour'"));
}

}  // namespace arbor
