// SentencePiece tokenizer (a Llama-1/2 style tokenizer.model), matching Hugging Face's slow
// LlamaTokenizer with legacy=True (and vLLM, which uses it): the special pieces' strings (the
// model's control pieces such as "<s>" and "</s>", and its unknown piece "<unk>") are split out
// of the text first, leftmost-longest, and become their ids; each stretch of text between them
// is encoded on its own with SentencePiece's EncodeAsIds, so it gets its own dummy-prefix "▁"
// ("<s>hi" → <s> "▁hi", as HfBpeTokenizer and HF do); then BOS (and EOS) are added as
// tokenizer_config.json says. A special-token string in client text therefore becomes the
// special id, as in HF and vLLM.
//
// BPE models without a normalization map (Llama's) are encoded by SentencePieceBpe, which gives
// the library's ids in a fraction of its time and memory; other models by the library.
#pragma once

#include <array>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace arbor {

class SentencePieceBpe;

struct SentencePieceOptions {
  bool add_bos = true;   // tokenizer_config.json "add_bos_token" (HF LlamaTokenizer default)
  bool add_eos = false;  // tokenizer_config.json "add_eos_token"
};

class SentencePieceTokenizer final : public Tokenizer {
 public:
  // Loads a serialized SentencePiece model; throws TokenizerError naming the file and
  // SentencePiece's status message when it is missing or unreadable.
  SentencePieceTokenizer(const std::filesystem::path& model_file, SentencePieceOptions options);
  ~SentencePieceTokenizer() override;

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  // Out-of-range ids throw TokenizerError. With skip_special, the special ids (see is_special)
  // are dropped and the rest decoded by SentencePiece, as HF's skip_special_tokens=True. Without
  // it, each special token is written as its piece ("<s>", "</s>", "<unk>") and the text around
  // it decoded as if the special token were not there, except that the leading space of a word
  // that follows other text is kept. Byte-fallback bytes that do not form valid UTF-8 become one
  // U+FFFD per byte (SentencePiece's own rule); the result is always valid UTF-8.
  std::string decode(std::span<const int32_t> ids, bool skip_special) const override;

  int vocab_size() const override { return vocab_size_; }
  std::optional<int32_t> bos_id() const override { return bos_id_; }
  std::optional<int32_t> eos_id() const override { return eos_id_; }
  // Control pieces (<s>, </s>, …) and the unknown piece (<unk>): the ids HF lists in
  // all_special_ids for Llama. False for out-of-range ids.
  bool is_special(int32_t id) const override;
  // The piece string, with "▁" for spaces and "<0xAB>" for byte-fallback pieces. Throws
  // TokenizerError for out-of-range ids.
  std::string id_to_piece(int32_t id) const override;
  // Whether encode() uses SentencePieceBpe rather than the SentencePiece library (for tests).
  bool uses_fast_encoder() const { return bpe_ != nullptr; }

 private:
  // Encodes text that holds no special piece (no BOS/EOS).
  void encode_plain(std::string_view text, std::vector<int32_t>& ids) const;
  void check_ids(std::span<const int32_t> ids) const;
  // Decodes ordinary (non-special) ids; keep_leading_space stops SentencePiece from dropping
  // the "▁" of the first piece (used when the ids continue earlier text).
  std::string decode_plain(std::span<const int32_t> ids, bool keep_leading_space) const;

  std::filesystem::path model_file_;
  std::unique_ptr<sentencepiece::SentencePieceProcessor> sp_;
  std::unique_ptr<SentencePieceBpe> bpe_;  // null: the model is encoded by sp_
  // Special pieces (text, id) by their first byte, longest first.
  std::array<std::vector<std::pair<std::string, int32_t>>, 256> specials_by_first_byte_;
  SentencePieceOptions options_;
  int vocab_size_ = 0;
  std::optional<int32_t> bos_id_;
  std::optional<int32_t> eos_id_;
  // An ordinary piece without "▁" put in front of ids to keep their leading space, and its text.
  std::optional<int> sentinel_id_;
  std::string sentinel_text_;
};

}  // namespace arbor
