// SentencePieceTokenizer: encode/decode against the Brown-corpus fixture models.
#include <catch2/catch.hpp>

#include <sentencepiece_processor.h>

#include <algorithm>
#include <random>

#include "tests/tokenizer/tokenizer_fixtures.h"
#include "tokenizer/sentencepiece_tokenizer.h"

using namespace arbor;
using namespace arbor::test;

namespace {

std::vector<int32_t> without_bos(std::vector<int32_t> ids) {
  if (!ids.empty() && ids.front() == 1) ids.erase(ids.begin());
  return ids;
}

}  // namespace

TEST_CASE("sentencepiece: special ids and vocab of the fixtures", "[tokenizer]") {
  for (const int vocab : {512, 4096}) {
    SentencePieceTokenizer tok(brown_model(vocab), {});
    CHECK(tok.vocab_size() == vocab);
    CHECK(tok.bos_id() == std::optional<int32_t>(1));
    CHECK(tok.eos_id() == std::optional<int32_t>(2));
    CHECK(tok.is_special(0));  // <unk>
    CHECK(tok.is_special(1));
    CHECK(tok.is_special(2));
    CHECK_FALSE(tok.is_special(3));  // <0x00>, a byte piece
    CHECK_FALSE(tok.is_special(vocab - 1));
    CHECK_FALSE(tok.is_special(-1));
    CHECK_FALSE(tok.is_special(vocab));
    CHECK(tok.id_to_piece(0) == "<unk>");
    CHECK(tok.id_to_piece(1) == "<s>");
    CHECK(tok.id_to_piece(2) == "</s>");
    CHECK(tok.id_to_piece(3 + 0xE2) == "<0xE2>");
    CHECK_THROWS_AS(tok.id_to_piece(vocab), TokenizerError);
    CHECK_THROWS_AS(tok.id_to_piece(-5), TokenizerError);
  }
}

// Golden ids from the SentencePiece CLI (same library, independent code path):
//   printf '%s\n' "$TEXT" |
//     spm_encode --model=tests/fixtures/tokenizers/brownN.model --output_format=id
// Regenerate them when tools/train_tokenizer.sh retrains the fixtures.
TEST_CASE("sentencepiece: encode matches spm_encode golden ids", "[tokenizer]") {
  struct Golden {
    int vocab;
    std::string text;
    std::vector<int32_t> ids;
  };
  const std::vector<Golden> goldens = {
      {512, "The jury said it did not find any evidence.", {337, 428, 471, 331, 447, 266, 431, 318,
                                                            343, 293, 318, 379, 279, 262, 439, 349,
                                                            447, 305, 451, 318, 271, 322, 450}},
      {512, "Hello  world 1961", {352, 429, 306, 432, 428, 267, 280, 323, 428, 467, 486, 494, 467}},
      {512, "\xC3\xA9t\xC3\xA9 \xE2\x98\x83", {428, 198, 172, 430, 198, 172, 428, 229, 155, 134}},
      {4096,
       "The jury said it did not find any evidence.",
       {337, 505, 1143, 558, 343, 647, 379, 1102, 581, 2029, 4034}},
      {4096, "Hello  world 1961", {438, 306, 4016, 4012, 888, 4012, 4051, 4070, 4078, 4051}},
      {4096,
       "\xC3\xA9t\xC3\xA9 \xE2\x98\x83",
       {4012, 198, 172, 4014, 198, 172, 4012, 229, 155, 134}},
  };
  SentencePieceTokenizer tok512(brown_model(512), {});
  SentencePieceTokenizer tok4096(brown_model(4096), {});
  for (const auto& g : goldens) {
    INFO("vocab " << g.vocab << ": " << g.text);
    const auto& tok = g.vocab == 512 ? tok512 : tok4096;
    CHECK(tok.encode(g.text, false) == g.ids);
    std::vector<int32_t> with_bos = {1};
    with_bos.insert(with_bos.end(), g.ids.begin(), g.ids.end());
    CHECK(tok.encode(g.text, true) == with_bos);
    CHECK(tok.decode(g.ids, true) == g.text);
  }
}

TEST_CASE("sentencepiece: encode/decode round trip on varied text", "[tokenizer]") {
  for (const int vocab : {512, 4096}) {
    SentencePieceTokenizer tok(brown_model(vocab), {});
    for (const auto& text : sample_texts()) {
      INFO("vocab " << vocab << ": " << text);
      const auto ids = tok.encode(text, true);
      REQUIRE(!ids.empty());
      CHECK(ids.front() == 1);
      CHECK(tok.decode(ids, true) == text);
      for (size_t i = 1; i < ids.size(); ++i) {
        CHECK(ids[i] != 0);  // byte fallback: nothing is unknown
        CHECK_FALSE(tok.is_special(ids[i]));
      }
    }
  }
}

TEST_CASE("sentencepiece: empty text and BOS/EOS options", "[tokenizer]") {
  const auto model = brown_model(512);
  SentencePieceTokenizer bos_only(model, {});
  CHECK(bos_only.encode("", true) == std::vector<int32_t>{1});
  CHECK(bos_only.encode("", false).empty());
  CHECK(bos_only.decode(std::vector<int32_t>{}, true).empty());

  SentencePieceTokenizer both(model, {.add_bos = true, .add_eos = true});
  const auto ids = both.encode("hi", true);
  CHECK(ids.front() == 1);
  CHECK(ids.back() == 2);
  CHECK(both.encode("hi", false) == without_bos(bos_only.encode("hi", true)));

  SentencePieceTokenizer neither(model, {.add_bos = false, .add_eos = false});
  CHECK(neither.encode("hi", true) == both.encode("hi", false));
  CHECK(neither.encode("", true).empty());
}

// Hugging Face's slow LlamaTokenizer (legacy=True, what vLLM uses) splits the special tokens
// out of the text first and runs SentencePiece on each stretch between them, so each stretch
// gets its own "▁" in front. The expected ids here are built that way from the library.
TEST_CASE("sentencepiece: special-token strings in text become special ids", "[tokenizer]") {
  sentencepiece::SentencePieceProcessor sp;
  REQUIRE(sp.Load(brown_model(512).string()).ok());
  const auto sp_ids = [&](const std::string& text) {
    std::vector<int> ids;
    REQUIRE(sp.Encode(text, &ids).ok());
    return std::vector<int32_t>(ids.begin(), ids.end());
  };
  const auto concat = [](std::initializer_list<std::vector<int32_t>> parts) {
    std::vector<int32_t> out;
    for (const auto& p : parts) out.insert(out.end(), p.begin(), p.end());
    return out;
  };
  SentencePieceTokenizer tok(brown_model(512), {});
  CHECK(tok.uses_fast_encoder());

  CHECK(tok.encode("<s>x</s><unk>", false) == concat({{1}, sp_ids("x"), {2, 0}}));
  CHECK(tok.encode("<s> hi", false) == concat({{1}, sp_ids(" hi")}));  // "▁▁hi"
  CHECK(tok.encode("<s> hi", true) == concat({{1, 1}, sp_ids(" hi")}));
  CHECK(tok.encode("<s>", false) == std::vector<int32_t>{1});
  CHECK(tok.encode("</s></s>", false) == std::vector<int32_t>{2, 2});
  // As in tests/fixtures/tokenizers/reference_ids.json (HF, Llama-2) for the same text.
  CHECK(tok.encode("specials as text: <s> </s> <unk> <0x41>", false) ==
        concat({sp_ids("specials as text: "),
                {1},
                sp_ids(" "),
                {2},
                sp_ids(" "),
                {0},
                sp_ids(" <0x41>")}));
  // A chat template's output ({{ bos_token }}[INST] ... [/INST] ... {{ eos_token }}).
  CHECK(
      tok.encode("<s>[INST] Hello there [/INST] Hi!</s><s>[INST] More [/INST]", false) ==
      concat(
          {{1}, sp_ids("[INST] Hello there [/INST] Hi!"), {2, 1}, sp_ids("[INST] More [/INST]")}));
  // Near misses stay text.
  for (const std::string text : {"<s", "s>", "< s>", "<S>", "</s", "<unk", "<0x41>", "<pad>"}) {
    INFO(text);
    CHECK(tok.encode(text, false) == sp_ids(text));
  }
  // Decoding them back.
  const auto ids = tok.encode("<s>x</s><unk>", false);
  CHECK(tok.decode(ids, false) == "<s> x</s><unk>");
  CHECK(tok.decode(ids, true) == "x");
}

TEST_CASE("sentencepiece: the demo model splits out BOS from a chat template", "[tokenizer]") {
  const auto tok = load_tokenizer(demo_model_dir());
  const auto ids = tok->encode("<s>[INST] What is the capital of France? [/INST]", false);
  REQUIRE(ids.size() > 2);
  CHECK(ids.front() == 1);
  CHECK(std::count(ids.begin(), ids.end(), 1) == 1);
  CHECK(ids == [&] {
    std::vector<int32_t> expected = {1};
    const auto rest = tok->encode("[INST] What is the capital of France? [/INST]", false);
    expected.insert(expected.end(), rest.begin(), rest.end());
    return expected;
  }());
}

TEST_CASE("sentencepiece: a literal U+2581 in text decodes as a space", "[tokenizer]") {
  // SentencePiece's (and HF's) known limitation: "▁" is its space symbol.
  SentencePieceTokenizer tok(brown_model(512), {});
  CHECK(tok.decode(tok.encode("a\xE2\x96\x81"
                              "b",
                              true),
                   true) == "a b");
}

TEST_CASE("sentencepiece: decode with and without special tokens", "[tokenizer]") {
  SentencePieceTokenizer tok(brown_model(512), {});
  const auto hello = tok.encode("Hello world", false);
  std::vector<int32_t> ids = {1};
  ids.insert(ids.end(), hello.begin(), hello.end());
  ids.push_back(2);
  CHECK(tok.decode(ids, true) == "Hello world");
  CHECK(tok.decode(ids, false) == "<s> Hello world</s>");  // as HF's fast tokenizer

  // Specials between words: skipping them decodes the rest as one text; keeping them keeps
  // the space of the word that follows.
  const auto more = tok.encode("again", false);
  std::vector<int32_t> mixed = hello;
  mixed.push_back(2);
  mixed.push_back(0);
  mixed.insert(mixed.end(), more.begin(), more.end());
  CHECK(tok.decode(mixed, true) == "Hello world again");
  CHECK(tok.decode(mixed, false) == "Hello world</s><unk> again");

  // Only specials.
  CHECK(tok.decode(std::vector<int32_t>{1, 2, 0}, true).empty());
  CHECK(tok.decode(std::vector<int32_t>{1, 2, 0}, false) == "<s></s><unk>");
}

TEST_CASE("sentencepiece: out-of-range ids throw TokenizerError", "[tokenizer]") {
  SentencePieceTokenizer tok(brown_model(512), {});
  for (const int32_t bad : {512, 4096, -1, INT32_MIN, INT32_MAX}) {
    INFO(bad);
    const std::vector<int32_t> ids = {1, 300, bad, 301};
    CHECK_THROWS_AS(tok.decode(ids, true), TokenizerError);
    CHECK_THROWS_AS(tok.decode(ids, false), TokenizerError);
  }
  try {
    tok.decode(std::vector<int32_t>{512}, true);
    FAIL("no exception");
  } catch (const TokenizerError& e) {
    CHECK_THAT(e.what(), Catch::Contains("512") && Catch::Contains("out of range"));
  }
}

// SentencePiece 0.1.97 decodes every byte of an incomplete or invalid UTF-8 sequence to its
// own U+FFFD; a complete sequence split over byte pieces decodes to the character.
TEST_CASE("sentencepiece: partial byte-fallback sequences decode to U+FFFD", "[tokenizer]") {
  SentencePieceTokenizer tok(brown_model(512), {});
  const auto byte = [](int b) { return int32_t(3 + b); };
  const std::string fffd = "\xEF\xBF\xBD";
  CHECK(tok.decode(std::vector<int32_t>{byte(0xE2), byte(0x98)}, true) == fffd + fffd);
  CHECK(tok.decode(std::vector<int32_t>{byte(0xE2)}, true) == fffd);
  CHECK(tok.decode(std::vector<int32_t>{byte(0xE2), byte(0x98), byte(0x83)}, true) ==
        "\xE2\x98\x83");
  CHECK(tok.decode(std::vector<int32_t>{byte(0x98)}, true) == fffd);  // stray continuation
  CHECK(tok.decode(std::vector<int32_t>{byte(0xC0), byte(0x80)}, true) == fffd + fffd);  // overlong
  CHECK(tok.decode(std::vector<int32_t>{byte(0xED), byte(0xA0), byte(0x80)}, true) ==
        fffd + fffd + fffd);  // surrogate
  CHECK(tok.decode(std::vector<int32_t>{byte(0xFF)}, true) == fffd);
  // An incomplete sequence followed by a word, and by the start of another character.
  const auto hi = tok.encode("hi", false);
  std::vector<int32_t> ids = {byte(0xE2), byte(0x98)};
  ids.insert(ids.end(), hi.begin(), hi.end());
  CHECK(tok.decode(ids, true) == fffd + fffd + " hi");
  CHECK(tok.decode(std::vector<int32_t>{byte(0xE2), byte(0xC3), byte(0xA9)}, true) ==
        fffd + "\xC3\xA9");
}

TEST_CASE("sentencepiece: random ids always decode to valid UTF-8", "[tokenizer]") {
  for (const int vocab : {512, 4096}) {
    SentencePieceTokenizer tok(brown_model(vocab), {});
    std::mt19937 rng(1234 + vocab);
    std::uniform_int_distribution<int32_t> any_id(0, vocab - 1);
    std::uniform_int_distribution<int32_t> byte_id(3, 3 + 255);
    std::uniform_int_distribution<int> len(0, 40);
    for (int trial = 0; trial < 300; ++trial) {
      std::vector<int32_t> ids(size_t(len(rng)));
      for (auto& id : ids) id = trial % 2 ? any_id(rng) : byte_id(rng);
      INFO("vocab " << vocab << " trial " << trial);
      CHECK(valid_utf8(tok.decode(ids, true)));
      CHECK(valid_utf8(tok.decode(ids, false)));
    }
  }
}

TEST_CASE("sentencepiece: missing and corrupt model files", "[tokenizer]") {
  TempDir dir;
  const auto missing = dir.path() / "nope.model";
  try {
    SentencePieceTokenizer tok(missing, {});
    FAIL("no exception");
  } catch (const TokenizerError& e) {
    CHECK_THAT(e.what(), Catch::Contains(missing.string()));
  }
}
