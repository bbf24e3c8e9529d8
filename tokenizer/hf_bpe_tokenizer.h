// Hugging Face tokenizer.json BPE tokenizer, matching the fast (Rust `tokenizers`) tokenizer
// for both styles Llama uses:
//   - Llama-2 style: normalizer Prepend("▁") + Replace(" " → "▁"), no pre-tokenizer, BPE with
//     byte_fallback; decoder Replace/ByteFallback/Fuse/Strip.
//   - Llama-3 style: Split(regex, Isolated) + ByteLevel pre-tokenizers (regex run by PCRE2 in
//     UTF + Unicode-property mode, JIT-compiled), byte-level BPE with ignore_merges; decoder
//     ByteLevel.
//
// encode(text): added tokens (special or not) found in the raw text first, leftmost-longest,
// as HF does by default, and the text between them normalized, pre-tokenized and run through
// BPE; then the post_processor's TemplateProcessing prefix/suffix (e.g. <s> / BOS) when
// add_special_tokens, unless tokenizer_config.json's add_bos_token / add_eos_token say
// otherwise (as transformers' LlamaTokenizerFast does). Unlike SentencePieceTokenizer, a
// special-token string in the text ("<|eot_id|>") therefore becomes the special id, as in HF.
// Text that is not valid UTF-8 is first sanitized (one U+FFFD per invalid byte), which is what
// HF sees after Python's bytes.decode(errors="replace") for single stray bytes.
//
// BPE: merge ranks in a hash map keyed by the pair of token ids; each pre-token is merged
// with a min-heap over (rank, position) (HF's order); results of pre-tokens shorter than
// kMaxCachedWordBytes are cached (thread-safe), so repeated words cost one hash lookup.
//
// decode(ids): the token strings (added tokens as their content) through the decoder chain;
// bytes that do not form valid UTF-8 become U+FFFD (ByteLevel: one per byte, like
// sanitize_utf8; ByteFallback: one per byte of the invalid run, like HF).
//
// Supported components (anything else is a TokenizerError naming the file): normalizers
// Sequence/Prepend/Replace(String); pre-tokenizers Sequence/Split(Isolated|Removed)/ByteLevel/
// Metaspace; model BPE (no continuing_subword_prefix / end_of_word_suffix; dropout ignored);
// post-processors TemplateProcessing/ByteLevel/Sequence; decoders Sequence/Replace(String)/
// ByteFallback/Fuse/Strip/ByteLevel/Metaspace. Added tokens with normalized=true are matched
// on the raw text like the others (exact for Llama, whose added tokens are all unnormalized).
// tokenizer_config.json's clean_up_tokenization_spaces (a transformers decode option) is not
// applied.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "tokenizer/tokenizer.h"

namespace arbor {

// What tokenizer_config.json may add to tokenizer.json. Unset fields keep tokenizer.json's.
struct HfBpeOptions {
  std::optional<bool> add_bos;           // "add_bos_token": BOS in front (or not)
  std::optional<bool> add_eos;           // "add_eos_token": EOS at the end (or not)
  std::optional<std::string> bos_token;  // "bos_token": the BOS token's text
  std::optional<std::string> eos_token;  // "eos_token": the EOS token's text
};

class HfBpeTokenizer final : public Tokenizer {
 public:
  static constexpr size_t kMaxCachedWordBytes = 128;

  // Loads tokenizer.json; throws TokenizerError naming the file when it is missing, not JSON,
  // malformed, or uses a component this class does not implement.
  HfBpeTokenizer(const std::filesystem::path& tokenizer_json, HfBpeOptions options);
  // The same from tokenizer.json's text in memory; `name` stands for the file in errors.
  HfBpeTokenizer(std::string_view json_text, const std::string& name, HfBpeOptions options);
  ~HfBpeTokenizer() override;

  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const override;
  // Out-of-range ids throw TokenizerError. With skip_special, the special added tokens are
  // dropped before decoding, as HF's skip_special_tokens=True.
  std::string decode(std::span<const int32_t> ids, bool skip_special) const override;

  int vocab_size() const override;
  std::optional<int32_t> bos_id() const override;
  std::optional<int32_t> eos_id() const override;
  // Added tokens marked "special": true. False for out-of-range ids.
  bool is_special(int32_t id) const override;
  // The token as tokenizer.json spells it ("▁the", "Ġthe", "<0x0A>", "<|eot_id|>"). Throws
  // TokenizerError for out-of-range ids.
  std::string id_to_piece(int32_t id) const override;

 private:
  struct Impl;
  void load(std::string_view json_text, const std::filesystem::path& file, HfBpeOptions options);
  std::unique_ptr<Impl> impl_;
};

}  // namespace arbor
