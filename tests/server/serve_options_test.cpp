// How `serve` turns its options into settings, without starting a server: the model id,
// the CPU KV-cache default, the URL it logs, the multi-node rendezvous.
#include <catch2/catch.hpp>

#include <map>
#include <string>

#include "models/config.h"
#include "server/model_path.h"
#include "server/serve_command.h"
#include "tests/test_util.h"

namespace arbor {
namespace {

using namespace std::chrono_literals;

LlamaConfig shape(int layers, int kv_heads, int head_dim, int context) {
  LlamaConfig c;
  c.num_layers = layers;
  c.num_kv_heads = kv_heads;
  c.head_dim = head_dim;
  c.max_position_embeddings = context;
  return c;
}

}  // namespace

TEST_CASE("the served model id is the folder's name however the path is written", "[server]") {
  const auto demo = test::demo_model_dir();
  CHECK(default_served_model_name(demo) == "demo");
  CHECK(default_served_model_name(demo.string() + "/") == "demo");
  CHECK(default_served_model_name(demo.string() + "//") == "demo");
  CHECK(default_served_model_name(demo / ".." / "demo") == "demo");
  CHECK(default_served_model_name(demo / ".") == "demo");
  CHECK(default_served_model_name("/models/Llama-3.1-8B-Instruct/") == "Llama-3.1-8B-Instruct");
  CHECK(default_served_model_name(".") == std::filesystem::current_path().filename().string());
  CHECK(default_served_model_name("/") == "arbor");
}

TEST_CASE("the CPU KV cache defaults to 4 contexts, at most 4 GiB", "[server]") {
  // The demo model (6 layers, 2 KV heads of 64): 4 × 2048 tokens are 48 MiB.
  CHECK(default_cpu_kv_cache_tokens(shape(6, 2, 64, 2048), 16) == 4 * 2048);
  // Llama-3.1-8B: 256 KiB per fp32 token, so 4 GiB hold 16384 tokens, not 4 × 131072.
  CHECK(default_cpu_kv_cache_tokens(shape(32, 8, 128, 131072), 16) == 16384);
  // Rounded down to whole blocks, at least one.
  CHECK(default_cpu_kv_cache_tokens(shape(32, 8, 128, 131072), 48) == 16368);
  CHECK(default_cpu_kv_cache_tokens(shape(100000, 64, 256, 131072), 16) == 16);
}

TEST_CASE("the logged URL brackets IPv6 hosts", "[server]") {
  CHECK(http_url("127.0.0.1", 8000) == "http://127.0.0.1:8000");
  CHECK(http_url("localhost", 80) == "http://localhost:80");
  CHECK(http_url("::1", 18223) == "http://[::1]:18223");
  CHECK(http_url("::", 8000) == "http://[::]:8000");
  CHECK(http_url("[::1]", 8000) == "http://[::1]:8000");
}

}  // namespace arbor
