// End-to-end tests of `arbor generate`: the built executable, run as a user would.
#include <catch2/catch.hpp>

#include <sys/wait.h>
#include <array>
#include <cstdio>

#include "tests/test_util.h"

namespace arbor {
namespace {

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

RunResult run_arbor(const std::string& args) {
  test::TempDir tmp;
  const auto err_path = tmp.path() / "stderr";
  const std::string cmd =
      std::string(ARBOR_BINARY_DIR) + "/server/arbor " + args + " 2>" + err_path.string();
  RunResult r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = test::read_file(err_path);
  return r;
}

}  // namespace

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
