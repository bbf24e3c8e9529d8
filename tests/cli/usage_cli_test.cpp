// Usage errors of the `arbor` executable: one line "arbor: error: ...", exit code 1;
// --help and --version exit 0. And what `serve` prints when it starts.
#include <catch2/catch.hpp>

#include <string>

#include "tests/cli/run_arbor.h"
#include "tests/test_util.h"

namespace arbor {

using test::run_arbor;
using test::RunResult;

namespace {

// One line, exit code 1, the given text after "arbor: error: ".
void check_usage_error(const RunResult& r, const std::string& message) {
  INFO(r.err);
  CHECK(r.exit_code == 1);
  CHECK(r.err == "arbor: error: " + message + "\n");
}

}  // namespace

TEST_CASE("usage errors are one line and exit 1", "[cli]") {
  check_usage_error(run_arbor(""), "give a command: generate or serve (see arbor --help)");
  check_usage_error(run_arbor("foo"), "unknown command 'foo' (commands: generate, serve)");
  check_usage_error(run_arbor("generate --bogus -p hi"),
                    "unknown option --bogus (see arbor generate --help)");
  check_usage_error(run_arbor("serve --bogus"), "unknown option --bogus (see arbor serve --help)");
  check_usage_error(run_arbor("generate -p hi -p ho"), "--prompt is given more than once");
  check_usage_error(run_arbor("generate -p"), "--prompt needs a value");
  check_usage_error(run_arbor("generate -p hi --max-tokens -1"),
                    "--max-tokens must be a non-negative integer, got -1");
  check_usage_error(run_arbor("generate -p hi --temperature warm"),
                    "--temperature must be a number, got warm");
  check_usage_error(run_arbor("generate -p hi --seed -5"),
                    "--seed must be an integer in 0..18446744073709551615, got -5");
  check_usage_error(run_arbor("serve --max-num-seqs 0"),
                    "--max-num-seqs must be a positive integer, got 0");
  check_usage_error(run_arbor("serve --port 70000"),
                    "--port must be an integer in 0..65535, got 70000");
  check_usage_error(run_arbor("serve --gpu-memory-utilization 2"),
                    "--gpu-memory-utilization must be a number in [0.05, 1], got 2");
  check_usage_error(run_arbor("serve --http-threads 65536"),
                    "--http-threads must be an integer in 1..4096, got 65536");
  check_usage_error(run_arbor("serve", "ARBOR_MAX_NUM_SEQS=abc"),
                    "ARBOR_MAX_NUM_SEQS: --max-num-seqs must be a positive integer, got abc");
}

TEST_CASE("--help and --version exit 0", "[cli]") {
  for (const char* args : {"--help", "--version", "generate --help", "serve --help"}) {
    RunResult r = run_arbor(args);
    INFO(args);
    CHECK(r.exit_code == 0);
    CHECK(!r.out.empty());
  }
  // generate runs on the GPU as well.
  CHECK_THAT(run_arbor("--help").out,
             Catch::Contains("generate") && !Catch::Contains("(CPU backend)"));
}

TEST_CASE("serve --config checks its values and keys", "[cli]") {
  test::TempDir dir;
  const auto config = [&](const std::string& json) {
    test::write_file(dir.path() / "c.json", json);
    return run_arbor("serve --config " + (dir.path() / "c.json").string());
  };
  const std::string file = (dir.path() / "c.json").string();
  check_usage_error(config(R"({"port": 18203.7})"),
                    file + ": port must be an integer in 0..65535, got 18203.7");
  check_usage_error(config(R"({"max_num_seqs": 0})"),
                    file + ": max_num_seqs must be a positive integer, got 0");
  check_usage_error(config(R"({"help": true})"), file + ": unknown key 'help'");
  check_usage_error(config(R"({"version": "1"})"), file + ": unknown key 'version'");
  check_usage_error(config(R"({"config": "other.json"})"), file + ": unknown key 'config'");
}

TEST_CASE("serve names the model after its folder however the path is written", "[cli]") {
  const std::string demo = test::demo_model_dir().string();
  for (const std::string& where :
       {"--model " + demo + "/", "--model " + demo + "/../demo", std::string("--model .")}) {
    test::Background serve("cd " + demo + " && exec " + test::arbor_binary() + " serve " + where +
                           " --port 0");
    const bool started = serve.wait_until(
        [](const test::Background& b) { return b.err().find("serving ") != std::string::npos; });
    INFO(where << ": " << serve.err());
    REQUIRE(started);
    CHECK(serve.signal_and_wait(SIGINT) == 0);
    CHECK_THAT(serve.err(), Catch::Contains(" as 'demo' on http://127.0.0.1:"));
  }
}

TEST_CASE("a second SIGINT while serve drains stops it at once", "[cli]") {
  // The first signal drains in-flight requests (up to --shutdown-timeout); a second one, as
  // with uvicorn, stops without waiting (exit code 130; a finished drain exits 0).
  test::Background serve("exec " + test::arbor_binary() +
                         " serve --port 0 --shutdown-timeout 120 --kv-cache-tokens 40000");
  REQUIRE(serve.wait_until(
      [](const test::Background& b) { return b.err().find("serving ") != std::string::npos; }));
  const std::string log = serve.err();
  const size_t at = log.find("http://127.0.0.1:");
  REQUIRE(at != std::string::npos);
  const int port = std::atoi(log.c_str() + at + 17);
  // Four long samples keep the drain busy for seconds.
  test::Background client(
      "exec curl -s -N localhost:" + std::to_string(port) +
      "/v1/completions -H 'Content-Type: application/json' -d "
      "'{\"prompt\": \"The jury\", \"max_tokens\": 2000, \"n\": 4, \"ignore_eos\": true, "
      "\"stream\": true}'");
  REQUIRE(client.wait_until(
      [](const test::Background& b) { return b.out().find("data: ") != std::string::npos; }));
  serve.signal(SIGINT);
  REQUIRE(serve.wait_until(
      [](const test::Background& b) { return b.err().find("draining") != std::string::npos; }));
  CHECK(serve.signal_and_wait(SIGINT) == 130);
  CHECK_THAT(serve.err(), Catch::Contains("stopping without draining"));
}

TEST_CASE("serve --device cuda without a visible GPU says so", "[cli]") {
  RunResult r = run_arbor("serve --device cuda --port 0", "CUDA_VISIBLE_DEVICES=");
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.err, Catch::Contains("no CUDA GPU is visible") ||
                        Catch::Contains("built without the CUDA backend"));
  CHECK_THAT(r.err, !Catch::Contains(".cu:"));
}

}  // namespace arbor
