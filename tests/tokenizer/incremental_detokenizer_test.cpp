// IncrementalDetokenizer: text increments are valid UTF-8 and add up to the full decode.
#include <catch2/catch.hpp>

#include <random>

#include "tests/tokenizer/tokenizer_fixtures.h"
#include "tokenizer/incremental_detokenizer.h"
#include "tokenizer/sentencepiece_tokenizer.h"

using namespace arbor;
using namespace arbor::test;

namespace {

struct Streamed {
  std::vector<std::string> increments;  // one per push, then flush
  std::string text;                     // their concatenation
};

Streamed stream(const Tokenizer& tok, std::span<const int32_t> prompt,
                std::span<const int32_t> output) {
  IncrementalDetokenizer detok(tok, prompt);
  Streamed s;
  for (const int32_t id : output) s.increments.push_back(detok.push(id));
  s.increments.push_back(detok.flush());
  for (const auto& inc : s.increments) s.text += inc;
  return s;
}

std::vector<int32_t> concat(std::span<const int32_t> a, std::span<const int32_t> b) {
  std::vector<int32_t> out(a.begin(), a.end());
  out.insert(out.end(), b.begin(), b.end());
  return out;
}

int32_t byte_id(int b) {
  return int32_t(3 + b);
}

}  // namespace

TEST_CASE("detokenizer: increments add up to the full decode", "[tokenizer]") {
  const std::vector<std::string> prompts = {"",
                                            "Question: what happened next?\nAnswer:", "The jury",
                                            "\xE4\xB8\xAD\xE6\x96\x87:", "ends with "};
  for (const int vocab : {512, 4096}) {
    SentencePieceTokenizer tok(brown_model(vocab), {});
    for (const auto& prompt_text : prompts) {
      const auto prompt = tok.encode(prompt_text, true);  // starts with BOS
      const std::string prompt_decoded = tok.decode(prompt, true);
      for (const auto& text : sample_texts()) {
        INFO("vocab " << vocab << " prompt '" << prompt_text << "' text '" << text << "'");
        const auto output = tok.encode(text, false);
        const auto s = stream(tok, prompt, output);
        for (const auto& inc : s.increments) CHECK(valid_utf8(inc));
        // Decoding prompt + output at once, minus the prompt's own text.
        const std::string full = tok.decode(concat(prompt, output), true);
        REQUIRE(full.compare(0, prompt_decoded.size(), prompt_decoded) == 0);
        CHECK(s.text == full.substr(prompt_decoded.size()));
        if (prompt_decoded.empty()) {
          // No context: exactly the generated ids decoded at once (leading space dropped).
          CHECK(s.text == tok.decode(output, true));
          CHECK(s.text == text);
        } else {
          // With context, the first word keeps its leading "▁" as a space.
          CHECK(s.text == " " + text);
        }
        // Nothing is left for flush() unless the text itself ends in U+FFFD.
        if (!text.ends_with("\xEF\xBF\xBD")) CHECK(s.increments.back().empty());
      }
    }
  }
}

TEST_CASE("detokenizer: a character split over byte pieces is sent once complete", "[tokenizer]") {
  SentencePieceTokenizer tok(brown_model(512), {});
  const auto prompt = tok.encode("Weather:", true);
  // " ☃ ok": "▁", <0xE2>, <0x98>, <0x83>, then a word.
  IncrementalDetokenizer detok(tok, prompt);
  CHECK(detok.push(tok.encode(" x", false).front()) == " ");
  CHECK(detok.push(byte_id(0xE2)).empty());
  CHECK(detok.push(byte_id(0x98)).empty());
  CHECK(detok.push(byte_id(0x83)) == "\xE2\x98\x83");
  std::string rest;
  for (const int32_t id : tok.encode("ok", false)) rest += detok.push(id);
  rest += detok.flush();
  CHECK(rest == " ok");

  // A 4-byte emoji.
  IncrementalDetokenizer emoji(tok, prompt);
  CHECK(emoji.push(byte_id(0xF0)).empty());
  CHECK(emoji.push(byte_id(0x9F)).empty());
  CHECK(emoji.push(byte_id(0x98)).empty());
  CHECK(emoji.push(byte_id(0x80)) == "\xF0\x9F\x98\x80");
  CHECK(emoji.flush().empty());
}

TEST_CASE("detokenizer: flush sends an incomplete sequence as U+FFFD", "[tokenizer]") {
  SentencePieceTokenizer tok(brown_model(512), {});
  IncrementalDetokenizer detok(tok, tok.encode("hi", true));
  CHECK(detok.push(byte_id(0xE2)).empty());
  CHECK(detok.push(byte_id(0x98)).empty());
  CHECK(detok.flush() == "\xEF\xBF\xBD\xEF\xBF\xBD");
  CHECK(detok.flush().empty());
  // Still usable after a flush.
  CHECK(detok.push(tok.encode("a", false).back()) == " a");
}

TEST_CASE("detokenizer: leading space of the first generated word", "[tokenizer]") {
  SentencePieceTokenizer tok(brown_model(4096), {});
  const auto word = tok.encode("the", false);  // "▁the"
  REQUIRE(word.size() == 1);
  // Text before: the space is kept.
  CHECK(stream(tok, tok.encode("Once upon a time", true), word).text == " the");
  // No text before (empty prompt, or only BOS): dropped, as in a full decode.
  CHECK(stream(tok, std::vector<int32_t>{}, word).text == "the");
  CHECK(stream(tok, tok.encode("", true), word).text == "the");
  // Specials at the end of the prompt do not hide the text before them.
  auto prompt = tok.encode("Once", true);
  prompt.push_back(2);
  prompt.push_back(1);
  CHECK(stream(tok, prompt, word).text == " the");
}

TEST_CASE("detokenizer: special ids produce no text", "[tokenizer]") {
  SentencePieceTokenizer tok(brown_model(512), {});
  const auto prompt = tok.encode("Say:", true);
  auto output = tok.encode("hello there", false);
  output.insert(output.begin() + 1, {2, 1, 0});
  output.push_back(2);
  const auto s = stream(tok, prompt, output);
  CHECK(s.text == " hello there");
  // A long run of specials does not hold text back or grow anything.
  IncrementalDetokenizer detok(tok, prompt);
  for (int i = 0; i < 1000; ++i) CHECK(detok.push(2).empty());
  CHECK(detok.push(tok.encode("x", false).back()) == "x");
}

TEST_CASE("detokenizer: out-of-range id throws", "[tokenizer]") {
  SentencePieceTokenizer tok(brown_model(512), {});
  IncrementalDetokenizer detok(tok, std::vector<int32_t>{1});
  CHECK_THROWS_AS(detok.push(512), TokenizerError);
  CHECK_THROWS_AS(detok.push(-1), TokenizerError);
  CHECK_THROWS_AS(IncrementalDetokenizer(tok, std::vector<int32_t>{1, 9999}), TokenizerError);
}

TEST_CASE("detokenizer: random ids never produce invalid UTF-8", "[tokenizer]") {
  for (const int vocab : {512, 4096}) {
    SentencePieceTokenizer tok(brown_model(vocab), {});
    std::mt19937 rng(77 + vocab);
    std::uniform_int_distribution<int32_t> any_id(0, vocab - 1);
    std::uniform_int_distribution<int32_t> any_byte(0, 255);
    std::uniform_int_distribution<int> len(0, 60);
    const auto prompt = tok.encode("Random:", true);
    const int trials = 400;
    for (int trial = 0; trial < trials; ++trial) {
      std::vector<int32_t> output(size_t(len(rng)));
      // Half the trials draw only byte pieces, which makes broken UTF-8 likely.
      for (auto& id : output) id = trial % 2 ? any_id(rng) : byte_id(any_byte(rng));
      INFO("vocab " << vocab << " trial " << trial);
      const auto s = stream(tok, prompt, output);
      for (const auto& inc : s.increments) REQUIRE(valid_utf8(inc));
      const std::string full = tok.decode(concat(prompt, output), true);
      const std::string prompt_text = tok.decode(prompt, true);
      CHECK(s.text == full.substr(prompt_text.size()));
    }
  }
}

TEST_CASE("detokenizer: a prompt ending inside a character", "[tokenizer]") {
  SentencePieceTokenizer tok(brown_model(512), {});
  // The prompt ends with the first byte of "☃"; the output completes it.
  std::vector<int32_t> prompt = tok.encode("snow", true);
  prompt.push_back(byte_id(0xE2));
  const std::vector<int32_t> output = {byte_id(0x98), byte_id(0x83)};
  const auto s = stream(tok, prompt, output);
  for (const auto& inc : s.increments) CHECK(valid_utf8(inc));
  CHECK(s.text == "\xE2\x98\x83");
}

TEST_CASE("detokenizer: work per token does not grow with the output", "[tokenizer]") {
  // Counts the ids decoded per push through a wrapper.
  struct Counting : Tokenizer {
    const Tokenizer& inner;
    mutable size_t decoded = 0;
    explicit Counting(const Tokenizer& t) : inner(t) {}
    std::vector<int32_t> encode(std::string_view text, bool add) const override {
      return inner.encode(text, add);
    }
    std::string decode(std::span<const int32_t> ids, bool skip) const override {
      decoded += ids.size();
      return inner.decode(ids, skip);
    }
    int vocab_size() const override { return inner.vocab_size(); }
    std::optional<int32_t> bos_id() const override { return inner.bos_id(); }
    std::optional<int32_t> eos_id() const override { return inner.eos_id(); }
    bool is_special(int32_t id) const override { return inner.is_special(id); }
    std::string id_to_piece(int32_t id) const override { return inner.id_to_piece(id); }
  };
  SentencePieceTokenizer sp(brown_model(512), {});
  Counting tok(sp);
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "the jury said it did not find any evidence. ";
  const auto output = tok.encode(long_text, false);
  IncrementalDetokenizer detok(tok, tok.encode("Go:", true));
  size_t max_per_push = 0;
  for (const int32_t id : output) {
    tok.decoded = 0;
    detok.push(id);
    max_per_push = std::max(max_per_push, tok.decoded);
  }
  CHECK(output.size() > 2000);
  CHECK(max_per_push <= 2 * (IncrementalDetokenizer::kContextTokens + 2));
}

TEST_CASE("detokenizer: a run of invalid bytes is sent with a bounded delay", "[tokenizer]") {
  SentencePieceTokenizer tok(brown_model(512), {});
  const auto prompt = tok.encode("Noise:", true);
  std::vector<int32_t> output(200, byte_id(0x80));  // stray continuation bytes: U+FFFD each
  output[100] = byte_id(0xE2);                      // and a complete character in the middle
  output[101] = byte_id(0x98);
  output[102] = byte_id(0x83);
  IncrementalDetokenizer detok(tok, prompt);
  std::string streamed;
  for (size_t i = 0; i < output.size(); ++i) {
    const std::string inc = detok.push(output[i]);
    CHECK(valid_utf8(inc));
    streamed += inc;
    // Everything but the text of the last few tokens (3 bytes each) has been sent.
    const size_t max_lag =
        IncrementalDetokenizer::kMaxHeldTokens + IncrementalDetokenizer::kMaxUtf8Tail;
    if (i >= max_lag) CHECK(streamed.size() + 3 * max_lag >= 3 * (i + 1));
  }
  streamed += detok.flush();
  CHECK(streamed == tok.decode(output, true));
  CHECK(streamed.find("\xE2\x98\x83") != std::string::npos);
}
