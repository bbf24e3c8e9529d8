// config.json / generation_config.json parsing: real Llama shapes, defaults, and every error.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "models/config.h"
#include "tests/test_util.h"

namespace arbor {
namespace {

using Catch::Contains;
using nlohmann::json;
using test::TempDir;
using test::write_file;

// As shipped with meta-llama/Llama-3.1-8B-Instruct.
json llama31_8b() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"],
    "attention_bias": false,
    "attention_dropout": 0.0,
    "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009],
    "hidden_act": "silu",
    "hidden_size": 4096,
    "initializer_range": 0.02,
    "intermediate_size": 14336,
    "max_position_embeddings": 131072,
    "mlp_bias": false,
    "model_type": "llama",
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "pretraining_tp": 1,
    "rms_norm_eps": 1e-05,
    "rope_scaling": {
      "factor": 8.0,
      "low_freq_factor": 1.0,
      "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192,
      "rope_type": "llama3"
    },
    "rope_theta": 500000.0,
    "tie_word_embeddings": false,
    "torch_dtype": "bfloat16",
    "transformers_version": "4.43.0.dev0",
    "use_cache": true,
    "vocab_size": 128256
  })");
}

// A small tied model in the style of the demo model / Llama-3.2-1B.
json tiny_tied() {
  return json::parse(R"({
    "architectures": ["LlamaForCausalLM"],
    "hidden_size": 64,
    "intermediate_size": 172,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 512,
    "vocab_size": 1000,
    "tie_word_embeddings": true,
    "rope_scaling": null,
    "bos_token_id": 1,
    "eos_token_id": 2
  })");
}

LlamaConfig parse(const json& j) {
  return parse_llama_config(j, "config.json");
}

TEST_CASE("config: Llama-3.1-8B with llama3 rope scaling", "[models][config]") {
  LlamaConfig c = parse(llama31_8b());
  CHECK(c.architecture == "LlamaForCausalLM");
  CHECK(c.hidden_size == 4096);
  CHECK(c.intermediate_size == 14336);
  CHECK(c.num_layers == 32);
  CHECK(c.num_heads == 32);
  CHECK(c.num_kv_heads == 8);
  CHECK(c.head_dim == 128);
  CHECK(c.vocab_size == 128256);
  CHECK(c.max_position_embeddings == 131072);
  CHECK(c.rms_norm_eps == 1e-5f);
  CHECK(c.rope_theta == 500000.0f);
  CHECK(c.rope_scaling.llama3);
  CHECK(c.rope_scaling.factor == 8.0f);
  CHECK(c.rope_scaling.low_freq_factor == 1.0f);
  CHECK(c.rope_scaling.high_freq_factor == 4.0f);
  CHECK(c.rope_scaling.original_max_position == 8192);
  CHECK_FALSE(c.tie_word_embeddings);
  CHECK(c.bos_token_id == 128000);
  CHECK(c.eos_token_ids == std::vector<int>{128001, 128008, 128009});
  CHECK(c.torch_dtype == "bfloat16");
  CHECK_FALSE(c.generation.temperature.has_value());
}

TEST_CASE("config: small tied model and defaults", "[models][config]") {
  LlamaConfig c = parse(tiny_tied());
  CHECK(c.tie_word_embeddings);
  CHECK(c.head_dim == 16);
  CHECK(c.num_kv_heads == 2);
  CHECK_FALSE(c.rope_scaling.llama3);
  CHECK(c.rope_theta == 10000.0f);
  CHECK(c.eos_token_ids == std::vector<int>{2});

  json j = tiny_tied();
  j.erase("num_key_value_heads");
  j.erase("max_position_embeddings");
  j.erase("rms_norm_eps");
  j.erase("tie_word_embeddings");
  j["bos_token_id"] = nullptr;
  j["eos_token_id"] = nullptr;
  j["head_dim"] = nullptr;
  j["rope_scaling"] = {{"rope_type", "default"}};
  LlamaConfig d = parse(j);
  CHECK(d.num_kv_heads == 4);
  CHECK(d.head_dim == 16);
  CHECK(d.max_position_embeddings == 2048);
  CHECK(d.rms_norm_eps == 1e-6f);
  CHECK_FALSE(d.tie_word_embeddings);
  CHECK_FALSE(d.bos_token_id.has_value());
  CHECK(d.eos_token_ids.empty());
  CHECK_FALSE(d.rope_scaling.llama3);
}

TEST_CASE("config: explicit head_dim, model_type fallback, newer transformers fields",
          "[models][config]") {
  json j = tiny_tied();
  j["hidden_size"] = 96;
  j["num_attention_heads"] = 4;
  j["head_dim"] = 32;  // not hidden / heads
  CHECK(parse(j).head_dim == 32);

  j["hidden_size"] = 100;  // not divisible by heads: fine when head_dim is explicit
  CHECK(parse(j).head_dim == 32);

  json m = tiny_tied();
  m.erase("architectures");
  m["model_type"] = "llama";
  CHECK(parse(m).architecture == "LlamaForCausalLM");
  m["architectures"] = nullptr;
  CHECK(parse(m).architecture == "LlamaForCausalLM");

  // "type" instead of "rope_type" (older transformers)
  json t = llama31_8b();
  t["rope_scaling"].erase("rope_type");
  t["rope_scaling"]["type"] = "llama3";
  CHECK(parse(t).rope_scaling.llama3);

  // transformers v5: "dtype" and "rope_parameters"
  json v5 = llama31_8b();
  v5.erase("torch_dtype");
  v5["dtype"] = "bfloat16";
  v5["rope_parameters"] = v5["rope_scaling"];
  v5["rope_parameters"]["rope_theta"] = 500000.0;
  v5.erase("rope_scaling");
  v5.erase("rope_theta");
  LlamaConfig c = parse(v5);
  CHECK(c.torch_dtype == "bfloat16");
  CHECK(c.rope_theta == 500000.0f);
  CHECK(c.rope_scaling.llama3);
  CHECK(c.rope_scaling.factor == 8.0f);
}

TEST_CASE("config: errors name the file and the field", "[models][config]") {
  SECTION("wrong architecture") {
    json j = tiny_tied();
    j["architectures"] = {"MistralForCausalLM"};
    REQUIRE_THROWS_AS(parse(j), ModelError);
    REQUIRE_THROWS_WITH(parse(j), Contains("unsupported architecture MistralForCausalLM in "
                                           "config.json (arbor serves Llama-architecture models)"));
    j.erase("architectures");
    j["model_type"] = "qwen2";
    REQUIRE_THROWS_WITH(parse(j), Contains("unsupported architecture") && Contains("qwen2"));
    j.erase("model_type");
    REQUIRE_THROWS_WITH(parse(j), Contains("unsupported architecture") && Contains("config.json"));
    j["architectures"] = "LlamaForCausalLM";
    REQUIRE_THROWS_WITH(parse(j), Contains("'architectures' must be a list of strings"));
  }
  SECTION("missing field") {
    for (const char* key : {"hidden_size", "intermediate_size", "num_hidden_layers",
                            "num_attention_heads", "vocab_size"}) {
      json j = tiny_tied();
      j.erase(key);
      REQUIRE_THROWS_AS(parse(j), ModelError);
      REQUIRE_THROWS_WITH(parse(j),
                          Contains("config.json") && Contains(std::string("'") + key + "'"));
    }
    json j = tiny_tied();
    j["hidden_size"] = nullptr;
    REQUIRE_THROWS_WITH(parse(j), Contains("config.json: missing field 'hidden_size'"));
  }
  SECTION("wrong JSON types") {
    json j = tiny_tied();
    j["hidden_size"] = "abc";
    REQUIRE_THROWS_WITH(
        parse(j),
        Contains("config.json: field 'hidden_size' must be a positive integer, found \"abc\""));
    j["hidden_size"] = 64.5;
    REQUIRE_THROWS_WITH(parse(j), Contains("'hidden_size' must be a positive integer"));
    j["hidden_size"] = -64;
    REQUIRE_THROWS_WITH(parse(j), Contains("found -64"));
    j["hidden_size"] = 0;
    REQUIRE_THROWS_WITH(parse(j), Contains("found 0"));
    j["hidden_size"] = 1ll << 40;
    REQUIRE_THROWS_WITH(parse(j), Contains("'hidden_size' must be a positive integer"));

    json k = tiny_tied();
    k["rms_norm_eps"] = "1e-5";
    REQUIRE_THROWS_WITH(parse(k), Contains("'rms_norm_eps' must be a number"));
    k = tiny_tied();
    k["tie_word_embeddings"] = 1;
    REQUIRE_THROWS_WITH(parse(k), Contains("'tie_word_embeddings' must be true or false"));
    k = tiny_tied();
    k["eos_token_id"] = {1, "2"};
    REQUIRE_THROWS_WITH(parse(k), Contains("'eos_token_id' must be a token id or a list"));
    k = tiny_tied();
    k["bos_token_id"] = -1;
    REQUIRE_THROWS_WITH(parse(k), Contains("'bos_token_id' must be a token id"));
    k = tiny_tied();
    k["rope_theta"] = 0;
    REQUIRE_THROWS_WITH(parse(k), Contains("'rope_theta' must be a positive number"));
    k = tiny_tied();
    k["torch_dtype"] = 16;
    REQUIRE_THROWS_WITH(parse(k), Contains("'torch_dtype' must be a string"));
    REQUIRE_THROWS_WITH(parse_llama_config(json::array(), "config.json"),
                        Contains("config.json: expected a JSON object"));
  }
  SECTION("head counts") {
    json j = tiny_tied();
    j["num_key_value_heads"] = 3;
    REQUIRE_THROWS_WITH(parse(j), Contains("num_attention_heads (4) must be divisible by "
                                           "num_key_value_heads (3)"));
    j = tiny_tied();
    j["hidden_size"] = 66;
    REQUIRE_THROWS_WITH(parse(j), Contains("hidden_size (66) must be divisible by "
                                           "num_attention_heads (4)"));
    j = tiny_tied();
    j["head_dim"] = 15;
    REQUIRE_THROWS_WITH(parse(j), Contains("head_dim (15) must be even"));
  }
  SECTION("unsupported rope scaling") {
    for (const char* type : {"linear", "dynamic", "yarn", "longrope"}) {
      json j = llama31_8b();
      j["rope_scaling"] = {{"type", type}, {"factor", 2.0}};
      REQUIRE_THROWS_AS(parse(j), ModelError);
      REQUIRE_THROWS_WITH(parse(j), Contains("config.json") &&
                                        Contains(std::string("type '") + type + "'") &&
                                        Contains("not supported"));
    }
    json j = llama31_8b();
    j["rope_scaling"].erase("factor");
    REQUIRE_THROWS_WITH(parse(j), Contains("rope_scaling: missing field 'factor'"));
    j = llama31_8b();
    j["rope_scaling"]["high_freq_factor"] = 1.0;
    REQUIRE_THROWS_WITH(parse(j), Contains("must be greater than low_freq_factor"));
    j = llama31_8b();
    j["rope_scaling"] = "llama3";
    REQUIRE_THROWS_WITH(parse(j), Contains("'rope_scaling' must be an object or null"));
  }
  SECTION("biases and activations") {
    json j = tiny_tied();
    j["attention_bias"] = true;
    REQUIRE_THROWS_WITH(parse(j), Contains("config.json: attention_bias = true is not supported"));
    j = tiny_tied();
    j["mlp_bias"] = true;
    REQUIRE_THROWS_WITH(parse(j), Contains("mlp_bias = true is not supported"));
    j = tiny_tied();
    j["hidden_act"] = "gelu";
    REQUIRE_THROWS_WITH(parse(j), Contains("hidden_act 'gelu' is not supported"));
  }
}

TEST_CASE("config: loading a folder merges generation_config.json", "[models][config]") {
  TempDir dir;
  write_file(dir.path() / "config.json", llama31_8b().dump(2));
  write_file(dir.path() / "generation_config.json", R"({
    "bos_token_id": 128000,
    "do_sample": true,
    "eos_token_id": [128001, 128009, 128010],
    "temperature": 0.6,
    "top_p": 0.9,
    "top_k": 50,
    "repetition_penalty": 1.1,
    "transformers_version": "4.43.0.dev0"
  })");
  LlamaConfig c = load_llama_config(dir.path());
  CHECK(c.num_kv_heads == 8);
  CHECK(c.eos_token_ids == std::vector<int>{128001, 128008, 128009, 128010});
  CHECK(c.bos_token_id == 128000);
  CHECK(c.generation.temperature == 0.6f);
  CHECK(c.generation.top_p == 0.9f);
  CHECK(c.generation.top_k == 50);
  CHECK(c.generation.repetition_penalty == 1.1f);

  // bos and eos come from generation_config.json when config.json has none.
  json j = tiny_tied();
  j.erase("bos_token_id");
  j.erase("eos_token_id");
  write_file(dir.path() / "config.json", j.dump());
  write_file(dir.path() / "generation_config.json", R"({"bos_token_id": 5, "eos_token_id": 6})");
  LlamaConfig t = load_llama_config(dir.path());
  CHECK(t.bos_token_id == 5);
  CHECK(t.eos_token_ids == std::vector<int>{6});
  CHECK_FALSE(t.generation.temperature.has_value());

  // No generation_config.json at all.
  std::filesystem::remove(dir.path() / "generation_config.json");
  LlamaConfig n = load_llama_config(dir.path());
  CHECK_FALSE(n.bos_token_id.has_value());
  CHECK(n.eos_token_ids.empty());
}

TEST_CASE("config: folder errors", "[models][config]") {
  TempDir dir;
  SECTION("missing config.json") {
    REQUIRE_THROWS_AS(load_llama_config(dir.path()), ModelError);
    REQUIRE_THROWS_WITH(load_llama_config(dir.path()),
                        Contains("no config.json in " + dir.path().string()));
    REQUIRE_THROWS_WITH(load_llama_config(dir.path() / "nowhere"),
                        Contains("no config.json in") && Contains("does not exist"));
  }
  SECTION("invalid JSON") {
    write_file(dir.path() / "config.json", "{\"hidden_size\": 64,, }");
    REQUIRE_THROWS_AS(load_llama_config(dir.path()), ModelError);
    REQUIRE_THROWS_WITH(load_llama_config(dir.path()),
                        Contains("config.json: invalid JSON") && Contains("parse error"));
    write_file(dir.path() / "config.json", "");
    REQUIRE_THROWS_WITH(load_llama_config(dir.path()), Contains("config.json: invalid JSON"));
  }
  SECTION("errors from a file carry its path") {
    json j = tiny_tied();
    j["num_key_value_heads"] = "2";
    write_file(dir.path() / "config.json", j.dump());
    REQUIRE_THROWS_WITH(load_llama_config(dir.path()),
                        Contains((dir.path() / "config.json").string() +
                                 ": field 'num_key_value_heads' must be a positive integer, "
                                 "found \"2\""));
  }
  SECTION("bad generation_config.json") {
    write_file(dir.path() / "config.json", tiny_tied().dump());
    write_file(dir.path() / "generation_config.json", "{\"temperature\": }");
    REQUIRE_THROWS_WITH(load_llama_config(dir.path()),
                        Contains("generation_config.json: invalid JSON"));
    write_file(dir.path() / "generation_config.json", R"({"eos_token_id": "x"})");
    REQUIRE_THROWS_WITH(load_llama_config(dir.path()),
                        Contains("generation_config.json: field 'eos_token_id'"));
    write_file(dir.path() / "generation_config.json", R"({"top_p": 1.5})");
    REQUIRE_THROWS_WITH(load_llama_config(dir.path()), Contains("'top_p' must be a number in"));
    write_file(dir.path() / "generation_config.json", R"({"top_k": 2.5})");
    REQUIRE_THROWS_WITH(load_llama_config(dir.path()), Contains("'top_k' must be"));
    write_file(dir.path() / "generation_config.json", "[]");
    REQUIRE_THROWS_WITH(load_llama_config(dir.path()),
                        Contains("generation_config.json: expected a JSON object"));
  }
}

}  // namespace
}  // namespace arbor
