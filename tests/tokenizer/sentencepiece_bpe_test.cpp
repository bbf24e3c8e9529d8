// SentencePieceBpe against the SentencePiece library it replaces: the same ids for the
// Brown-corpus models and for variants of them (user-defined and unused pieces, no byte
// fallback, other normalizer settings), on sample, random and long texts.
#include <catch2/catch.hpp>

#include <sentencepiece_processor.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "tests/tokenizer/tokenizer_fixtures.h"
#include "tokenizer/sentencepiece_bpe.h"
#include "tokenizer/sentencepiece_tokenizer.h"

using namespace arbor;
using namespace arbor::test;

namespace {

// --- a ModelProto writer (protobuf wire format) --------------------------------------------

struct PieceSpec {
  std::string piece;
  float score = 0;
  int type = 1;  // NORMAL=1 UNKNOWN=2 CONTROL=3 USER_DEFINED=4 UNUSED=5 BYTE=6
};

struct ModelSpec {
  std::vector<PieceSpec> pieces;
  int model_type = 2;  // BPE
  bool byte_fallback = true;
  bool treat_whitespace_as_suffix = false;
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = false;
  bool escape_whitespaces = true;
  std::string precompiled_charsmap;
};

void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out += char(0x80 | (v & 0x7F));
    v >>= 7;
  }
  out += char(v);
}
void put_int(std::string& out, int field, uint64_t v) {
  put_varint(out, uint64_t(field) << 3);
  put_varint(out, v);
}
void put_bytes(std::string& out, int field, std::string_view bytes) {
  put_varint(out, (uint64_t(field) << 3) | 2);
  put_varint(out, bytes.size());
  out += bytes;
}

std::string serialize(const ModelSpec& m) {
  std::string out;
  for (const auto& p : m.pieces) {
    std::string piece;
    put_bytes(piece, 1, p.piece);
    put_varint(piece, (2 << 3) | 5);
    uint32_t bits;
    std::memcpy(&bits, &p.score, 4);
    for (int i = 0; i < 4; ++i) piece += char((bits >> (8 * i)) & 0xFF);
    put_int(piece, 3, uint64_t(p.type));
    put_bytes(out, 1, piece);
  }
  std::string trainer;
  put_int(trainer, 3, uint64_t(m.model_type));
  put_int(trainer, 24, m.treat_whitespace_as_suffix);
  put_int(trainer, 35, m.byte_fallback);
  put_bytes(out, 2, trainer);
  std::string normalizer;
  put_bytes(normalizer, 1, "identity");
  if (!m.precompiled_charsmap.empty()) put_bytes(normalizer, 2, m.precompiled_charsmap);
  put_int(normalizer, 3, m.add_dummy_prefix);
  put_int(normalizer, 4, m.remove_extra_whitespaces);
  put_int(normalizer, 5, m.escape_whitespaces);
  put_bytes(out, 3, normalizer);
  return out;
}

ModelSpec spec_of(const sentencepiece::SentencePieceProcessor& sp) {
  ModelSpec m;
  for (int id = 0; id < sp.GetPieceSize(); ++id) {
    const int type = sp.IsUnknown(id)   ? 2
                     : sp.IsControl(id) ? 3
                     : sp.IsUnused(id)  ? 5
                     : sp.IsByte(id)    ? 6
                                        : 1;
    m.pieces.push_back({sp.IdToPiece(id), sp.GetScore(id), type});
  }
  return m;
}

std::unique_ptr<sentencepiece::SentencePieceProcessor> load_library(std::string_view proto) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  const auto status = sp->LoadFromSerializedProto(proto);
  INFO(status.ToString());
  REQUIRE(status.ok());
  return sp;
}

std::unique_ptr<sentencepiece::SentencePieceProcessor> load_library(int vocab) {
  auto sp = std::make_unique<sentencepiece::SentencePieceProcessor>();
  REQUIRE(sp->Load(brown_model(vocab).string()).ok());
  return sp;
}

std::vector<int32_t> library_ids(const sentencepiece::SentencePieceProcessor& sp,
                                 std::string_view text) {
  std::vector<int> ids;
  const auto status = sp.Encode(text, &ids);
  INFO(status.ToString());
  REQUIRE(status.ok());
  return {ids.begin(), ids.end()};
}

std::vector<int32_t> fast_ids(const SentencePieceBpe& bpe, std::string_view text) {
  std::vector<int32_t> ids;
  bpe.encode(text, ids);
  return ids;
}

// The piece with each "▁" written as a space.
std::string spaces_for_marks(std::string_view piece) {
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    if (piece.substr(i, 3) == "\xE2\x96\x81") {
      out += ' ';
      i += 3;
    } else {
      out += piece[i++];
    }
  }
  return out;
}

// Random text from vocabulary pieces (with "▁" as a space or as itself), characters the
// models do not know, whitespace runs, bytes that are not UTF-8, and `extra` strings.
std::string random_text(const sentencepiece::SentencePieceProcessor& sp, std::mt19937& rng,
                        const std::vector<std::string>& extra) {
  static const std::vector<std::string> odd = {" ",
                                               "  ",
                                               "   ",
                                               "\t",
                                               "\n",
                                               "\r\n",
                                               "\xE2\x96\x81",
                                               "\xE2\x96\x81\xE2\x96\x81",
                                               "\xFF",
                                               "\xC3",
                                               "\xE2\x96",
                                               "\x80\x80",
                                               "\xEF\xBF\xBD",
                                               std::string(1, '\0'),
                                               "\xE2\x98\x83",
                                               "\xF0\x9F\x98\x80",
                                               "\xE4\xB8\xAD\xE6\x96\x87",
                                               "e\xCC\x81",
                                               "a",
                                               "b",
                                               "\xC3\xA9",
                                               "<s>",
                                               "</s>",
                                               "<unk>",
                                               "<0x41>",
                                               "."};
  std::uniform_int_distribution<int> len(0, 40), kind(0, 9);
  std::uniform_int_distribution<int> any_piece(0, sp.GetPieceSize() - 1);
  std::string text;
  for (int n = len(rng); n > 0; --n) {
    const int k = kind(rng);
    if (k < 5) {
      std::string piece = sp.IdToPiece(any_piece(rng));
      if (k < 4) piece = spaces_for_marks(piece);
      text += piece;
    } else if (k < 8 || extra.empty()) {
      text += odd[std::uniform_int_distribution<size_t>(0, odd.size() - 1)(rng)];
    } else {
      text += extra[std::uniform_int_distribution<size_t>(0, extra.size() - 1)(rng)];
    }
  }
  return text;
}

// Compares the two encoders on the sample texts and `trials` random texts.
void check_same_ids(std::string_view proto, int trials, uint32_t seed,
                    const std::vector<std::string>& extra = {}) {
  const auto sp = load_library(proto);
  const auto bpe = SentencePieceBpe::create(proto);
  REQUIRE(bpe != nullptr);
  for (const auto& text : sample_texts()) {
    INFO(text);
    CHECK(fast_ids(*bpe, text) == library_ids(*sp, text));
  }
  std::mt19937 rng(seed);
  for (int trial = 0; trial < trials; ++trial) {
    const std::string text = random_text(*sp, rng, extra);
    INFO("trial " << trial << ": " << text);
    REQUIRE(fast_ids(*bpe, text) == library_ids(*sp, text));
  }
}

// English-like text: words of the vocabulary and punctuation, with spaces and newlines.
std::string long_words(const sentencepiece::SentencePieceProcessor& sp, size_t bytes) {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> any_piece(0, sp.GetPieceSize() - 1), sep(0, 19);
  std::string text;
  while (text.size() < bytes) {
    const int id = any_piece(rng);
    if (sp.IsControl(id) || sp.IsUnknown(id) || sp.IsByte(id)) continue;
    const std::string& piece = sp.IdToPiece(id);
    text += spaces_for_marks(piece);
    const int s = sep(rng);
    if (s == 0) text += ".\n";
    if (s == 1) text += ", ";
  }
  return text;
}

}  // namespace

TEST_CASE("sentencepiece bpe: same ids as the SentencePiece library", "[tokenizer]") {
  for (const int vocab : {512, 4096}) {
    INFO("vocab " << vocab);
    const auto sp = load_library(vocab);
    const auto bpe = SentencePieceBpe::create(sp->serialized_model_proto());
    REQUIRE(bpe != nullptr);
    CHECK(bpe->vocab_size() == vocab);
    CHECK(bpe->splits_words());  // Brown models: no piece has "▁" after another character
    check_same_ids(sp->serialized_model_proto(), 400, 7 + uint32_t(vocab));
  }
}

TEST_CASE("sentencepiece bpe: same ids as the library on long texts", "[tokenizer]") {
  // Runs of hundreds of kilobytes with and without spaces: what the per-word splitting, the
  // lazily invalidated merge heap and the compact symbols must not change.
  const auto sp = load_library(4096);
  const auto bpe = SentencePieceBpe::create(sp->serialized_model_proto());
  REQUIRE(bpe != nullptr);
  const std::string words = long_words(*sp, 256 * 1024);
  std::string no_spaces = words;
  std::erase(no_spaces, ' ');
  std::erase(no_spaces, '\n');
  for (const std::string* text : {&words, static_cast<const std::string*>(&no_spaces)}) {
    const auto expected = library_ids(*sp, *text);
    const auto got = fast_ids(*bpe, *text);
    REQUIRE(got.size() == expected.size());
    CHECK(got == expected);
  }
  const std::string a(64 * 1024, 'a');
  CHECK(fast_ids(*bpe, a) == library_ids(*sp, a));
}

TEST_CASE("sentencepiece bpe: user-defined and unused pieces", "[tokenizer]") {
  const auto base = spec_of(*load_library(512));
  ModelSpec m = base;
  // User-defined pieces are matched whole (longest first) and never merged; unused pieces are
  // merged and then split back into the halves they were made of.
  // (A piece the model already has becomes user-defined.)
  for (const char* u : {"<tool>", "<tool_call>", "ab", "\xE2\x98\x83\xE2\x98\x83", "x y"}) {
    const auto it = std::find_if(m.pieces.begin(), m.pieces.end(),
                                 [&](const PieceSpec& p) { return p.piece == u; });
    if (it != m.pieces.end()) {
      it->type = 4;
    } else {
      m.pieces.push_back({u, 0, 4});
    }
  }
  int unused = 0;
  for (auto& p : m.pieces) {
    if (p.type == 1 && p.piece.size() > 2 && ++unused % 5 == 0) p.type = 5;
  }
  const std::vector<std::string> extra = {"<tool>", "<tool_call>",  "<tool_", "ab",
                                          "abab",   "\xE2\x98\x83", "x y",    "x  y"};
  check_same_ids(serialize(m), 400, 11, extra);

  // A user-defined piece with "▁" after another character: no per-word splitting.
  m.pieces.push_back({"p\xE2\x96\x81q", 0, 4});
  const auto proto = serialize(m);
  REQUIRE(SentencePieceBpe::create(proto) != nullptr);
  CHECK_FALSE(SentencePieceBpe::create(proto)->splits_words());
  check_same_ids(proto, 300, 12, {"p q", "p\xE2\x96\x81q", "pp q"});
}

TEST_CASE("sentencepiece bpe: whitespace-only pieces", "[tokenizer]") {
  // Llama's vocabulary has "▁▁", "▁▁▁▁", ... (allow_whitespace_only_pieces): a run of spaces
  // and the word after it are one BPE run.
  ModelSpec m = spec_of(*load_library(512));
  for (const char* piece : {"\xE2\x96\x81\xE2\x96\x81", "\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81",
                            "\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81\xE2\x96\x81",
                            "\xE2\x96\x81\xE2\x96\x81t", "\xE2\x96\x81\xE2\x96\x81th"}) {
    m.pieces.push_back({piece, 0, 1});
  }
  const auto proto = serialize(m);
  CHECK(SentencePieceBpe::create(proto)->splits_words());
  check_same_ids(proto, 400, 41, {"  ", "   t", "  th", "    the", "\t  t"});
}

TEST_CASE("sentencepiece bpe: random small models", "[tokenizer]") {
  // Tiny alphabets, many score ties and many unused pieces: merge order, tie-breaking and the
  // splitting back of unused pieces (by their last-seen halves in the whole text) all show.
  std::mt19937 rng(2024);
  const std::vector<std::string> chars = {"a", "b", "c", "\xE2\x96\x81"};
  std::vector<std::string> strings = {""};
  for (int len = 1; len <= 4; ++len) {
    const size_t first = strings.size();
    for (size_t i = first - (len == 1 ? 1 : size_t(std::pow(4, len - 1))); i < first; ++i) {
      for (const auto& c : chars) strings.push_back(strings[i] + c);
    }
  }
  strings.erase(strings.begin());
  for (int model = 0; model < 60; ++model) {
    INFO("model " << model);
    ModelSpec m;
    m.byte_fallback = false;
    m.pieces = {{"<unk>", 0, 2}, {"<s>", 0, 3}, {"</s>", 0, 3}};
    std::uniform_int_distribution<int> score(-3, 0), percent(0, 99);
    for (const auto& piece : strings) {
      if (percent(rng) >= (piece.size() <= 3 ? 90 : 40)) continue;
      // Even models: "▁" only at the start of pieces, so runs are split at word starts.
      const size_t mark = piece.rfind("\xE2\x96\x81");
      if (model % 2 == 0 && mark != std::string::npos && mark > 0 &&
          piece.substr(0, mark).find_first_not_of("\xE2\x96\x81") != std::string::npos) {
        continue;
      }
      const int p = percent(rng);
      const int type = piece.size() > 1 && p < 35 ? 5 : p < 38 ? 4 : 1;
      m.pieces.push_back({piece, float(score(rng)), type});
    }
    const auto proto = serialize(m);
    const auto sp = load_library(proto);
    const auto bpe = SentencePieceBpe::create(proto);
    REQUIRE(bpe != nullptr);
    if (model % 2 == 0) CHECK(bpe->splits_words());
    std::uniform_int_distribution<int> len(0, 30), which(0, 5);
    for (int trial = 0; trial < 60; ++trial) {
      std::string text;
      for (int n = len(rng); n > 0; --n) {
        const int w = which(rng);
        text += w < 3 ? std::string(1, char('a' + w)) : w == 3 ? " " : w == 4 ? "  " : "d";
      }
      INFO("text '" << text << "'");
      REQUIRE(fast_ids(*bpe, text) == library_ids(*sp, text));
    }
  }
}

TEST_CASE("sentencepiece bpe: no byte fallback, other normalizer settings", "[tokenizer]") {
  const auto base = spec_of(*load_library(512));
  {
    // Unknown characters become <unk>, one per run.
    ModelSpec m = base;
    m.byte_fallback = false;
    for (auto& p : m.pieces) {
      if (p.type == 6) p.type = 5;
    }
    check_same_ids(serialize(m), 300, 21);
  }
  for (int variant = 0; variant < 4; ++variant) {
    INFO("variant " << variant);
    ModelSpec m = base;
    m.add_dummy_prefix = variant != 0;
    m.remove_extra_whitespaces = variant == 1 || variant == 3;
    m.escape_whitespaces = variant != 2;
    m.treat_whitespace_as_suffix = variant == 3;
    check_same_ids(serialize(m), 300, 30 + uint32_t(variant));
  }
}

TEST_CASE("sentencepiece bpe: models it does not implement are left to the library",
          "[tokenizer]") {
  ModelSpec m = spec_of(*load_library(512));
  m.model_type = 1;  // UNIGRAM
  CHECK(SentencePieceBpe::create(serialize(m)) == nullptr);
  m.model_type = 2;
  m.precompiled_charsmap = std::string(8, '\0');  // a trie size, an empty trie
  m.precompiled_charsmap[0] = 4;
  CHECK(SentencePieceBpe::create(serialize(m)) == nullptr);
  CHECK(SentencePieceBpe::create("\xFF\xFF\xFF") == nullptr);  // not a proto
  CHECK(SentencePieceBpe::create("") == nullptr);

  // The tokenizer then encodes through the library, special pieces still split out.
  TempDir dir;
  m.model_type = 1;
  m.precompiled_charsmap.clear();
  write_file(dir.path() / "unigram.model", serialize(m));
  SentencePieceTokenizer tok(dir.path() / "unigram.model", {});
  CHECK_FALSE(tok.uses_fast_encoder());
  const auto ids = tok.encode("<s>hi</s>", false);
  REQUIRE(ids.size() >= 3);
  CHECK(ids.front() == 1);
  CHECK(ids.back() == 2);
}
