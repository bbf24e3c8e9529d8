// Shared helpers for the tokenizer tests: model folders built from the Brown-corpus
// SentencePiece fixtures, sample texts, and an independent UTF-8 validator.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/test_util.h"
#include "tokenizer/tokenizer.h"

namespace arbor::test {

// brown512.model / brown4096.model: BPE, byte_fallback, unk=0 bos=1 eos=2, identity normalizer.
inline std::filesystem::path brown_model(int vocab) {
  return fixtures_dir() / "tokenizers" / ("brown" + std::to_string(vocab) + ".model");
}

// A model folder in a TempDir: the fixture copied as tokenizer.model, plus
// tokenizer_config.json when given.
struct ModelDir {
  TempDir dir;
  explicit ModelDir(int vocab, std::optional<std::string> config_json = std::nullopt) {
    std::filesystem::copy_file(brown_model(vocab), dir.path() / "tokenizer.model");
    if (config_json) write_file(dir.path() / "tokenizer_config.json", *config_json);
  }
  const std::filesystem::path& path() const { return dir.path(); }
};

// Written independently of tokenizer/utf8.h, so the two check each other.
inline bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    size_t n = 0;
    uint32_t cp = 0;
    if (c <= 0x7F) {
      ++i;
      continue;
    } else if (c >= 0xC2 && c <= 0xDF) {
      n = 1, cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
      n = 2, cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
      n = 3, cp = c & 0x07u;
    } else {
      return false;
    }
    if (s.size() - i < n + 1) return false;
    for (size_t k = 1; k <= n; ++k) {
      const auto b = static_cast<unsigned char>(s[i + k]);
      if ((b & 0xC0) != 0x80) return false;
      cp = (cp << 6) | (b & 0x3Fu);
    }
    if ((n == 2 && cp < 0x800) || (n == 3 && (cp < 0x10000 || cp > 0x10FFFF))) return false;
    if (cp >= 0xD800 && cp <= 0xDFFF) return false;
    i += n + 1;
  }
  return true;
}

// Texts that exercise the tokenizer: English, digits, whitespace runs, byte fallback, near
// misses of special-token strings (real ones decode differently: see the special-token tests).
inline const std::vector<std::string>& sample_texts() {
  static const std::vector<std::string> texts = {
      "The jury said it did not find any evidence.",
      "Hello world",
      " leading space",
      "trailing space ",
      "whitespace   runs\t\ttabs\n\nnewlines\r\n  ",
      "In 1961, 3,456 people paid $7.89 each (about 12% more).",
      "emoji \xF0\x9F\x98\x80\xF0\x9F\x91\x8D\xF0\x9F\x8F\xBD and a family "
      "\xF0\x9F\x91\xA8\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA7",
      "CJK \xE4\xB8\xAD\xE6\x96\x87\xE6\xB5\x8B\xE8\xAF\x95 \xE6\x97\xA5\xE6\x9C\xAC\xE8\xAA\x9E",
      "combining e\xCC\x81 a\xCC\x8A\xCC\x81 and precomposed \xC3\xA9",
      "Cyrillic \xD0\x9F\xD1\x80\xD0\xB8\xD0\xB2\xD0\xB5\xD1\x82, Greek "
      "\xCE\xB1\xCE\xB2\xCE\xB3",
      "near-specials as text: <s </ s> <unk <S> <0x41> <pad>",
      "U+FFFD itself: \xEF\xBF\xBD",
      "a",
      " ",
      "    ",
      "\n",
      "code: for (int i = 0; i < n; ++i) { x[i] = y[i] * 2; }",
  };
  return texts;
}

}  // namespace arbor::test
