// load_tokenizer(): model folder → tokenizer, tokenizer_config.json flags, errors.
#include <catch2/catch.hpp>

#include "tests/tokenizer/tokenizer_fixtures.h"

using namespace arbor;
using namespace arbor::test;

namespace {

// Runs f, expecting a TokenizerError whose message contains every one of `parts`.
template <typename F>
void check_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    FAIL("no TokenizerError");
  } catch (const TokenizerError& e) {
    for (const auto& part : parts) CHECK_THAT(e.what(), Catch::Contains(part));
  }
}

}  // namespace

TEST_CASE("load_tokenizer: tokenizer.model without config adds BOS only", "[tokenizer]") {
  ModelDir dir(512);
  const auto tok = load_tokenizer(dir.path());
  REQUIRE(tok);
  CHECK(tok->vocab_size() == 512);
  const auto ids = tok->encode("the end", true);
  CHECK(ids.front() == 1);
  CHECK(ids.back() != 2);
  CHECK(tok->encode("", true) == std::vector<int32_t>{1});
}

TEST_CASE("load_tokenizer: tokenizer_config.json add_bos_token / add_eos_token", "[tokenizer]") {
  const std::string text = "the end";
  const auto plain = load_tokenizer(ModelDir(512).path())->encode(text, false);

  SECTION("both on") {
    ModelDir dir(512,
                 R"({"add_bos_token": true, "add_eos_token": true, "model_max_length": 4096})");
    const auto ids = load_tokenizer(dir.path())->encode(text, true);
    REQUIRE(ids.size() == plain.size() + 2);
    CHECK(ids.front() == 1);
    CHECK(ids.back() == 2);
  }
  SECTION("both off") {
    ModelDir dir(512, R"({"add_bos_token": false, "add_eos_token": false})");
    CHECK(load_tokenizer(dir.path())->encode(text, true) == plain);
  }
  SECTION("null and absent keys keep the defaults") {
    ModelDir dir(512, R"({"add_bos_token": null, "chat_template": "{{ messages }}"})");
    const auto ids = load_tokenizer(dir.path())->encode(text, true);
    REQUIRE(ids.size() == plain.size() + 1);
    CHECK(ids.front() == 1);
  }
  SECTION("add_special_tokens=false adds nothing") {
    ModelDir dir(512, R"({"add_bos_token": true, "add_eos_token": true})");
    CHECK(load_tokenizer(dir.path())->encode(text, false) == plain);
  }
}

TEST_CASE("load_tokenizer: bad tokenizer_config.json names the file", "[tokenizer]") {
  for (const std::string bad : {"{\"add_bos_token\": tru", "", "[1, 2]", "{\"add_bos_token\": 1}",
                                "{\"add_eos_token\": \"yes\"}"}) {
    INFO(bad);
    ModelDir dir(512, bad);
    check_error([&] { load_tokenizer(dir.path()); },
                {(dir.path() / "tokenizer_config.json").string()});
  }
}

TEST_CASE("load_tokenizer: missing folder or files", "[tokenizer]") {
  TempDir dir;
  check_error([&] { load_tokenizer(dir.path() / "absent"); }, {"absent", "does not exist"});
  check_error([&] { load_tokenizer(dir.path()); }, {"tokenizer.model", dir.path().string()});

  write_file(dir.path() / "tokenizer.json", "{}");
  check_error([&] { load_tokenizer(dir.path()); },
              {(dir.path() / "tokenizer.json").string(), "\"model\""});
}

TEST_CASE("load_tokenizer: corrupt tokenizer.model names the file", "[tokenizer]") {
  const std::string good = read_file(brown_model(512));
  std::string garbage(4096, '\0');
  for (size_t i = 0; i < garbage.size(); ++i) garbage[i] = char((i * 2654435761u) >> 13);
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"empty", ""},
      {"text", "this is not a protobuf"},
      {"garbage", garbage},
      {"truncated", good.substr(0, good.size() / 2)},
      {"truncated header", good.substr(0, 7)},
  };
  for (const auto& [name, contents] : cases) {
    INFO(name);
    TempDir dir;
    const auto file = dir.path() / "tokenizer.model";
    write_file(file, contents);
    check_error([&] { load_tokenizer(dir.path()); }, {file.string(), "SentencePiece"});
  }

  // A folder where the file should be.
  TempDir dir;
  std::filesystem::create_directory(dir.path() / "tokenizer.model");
  check_error([&] { load_tokenizer(dir.path()); }, {(dir.path() / "tokenizer.model").string()});
}
