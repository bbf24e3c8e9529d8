// Text ↔ token ids. One interface for every tokenizer format; load_tokenizer() picks the
// implementation from the files in a model folder.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace arbor {

class TokenizerError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Encodes text; adds BOS (and EOS) when the model's tokenizer config says so, like
  // Hugging Face's tokenizer(text) with add_special_tokens=True.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special_tokens) const = 0;
  // Decodes ids to text. Special tokens (BOS/EOS/…) are skipped when skip_special is true.
  // Bytes that do not form valid UTF-8 become U+FFFD.
  virtual std::string decode(std::span<const int32_t> ids, bool skip_special) const = 0;

  virtual int vocab_size() const = 0;
  virtual std::optional<int32_t> bos_id() const = 0;
  virtual std::optional<int32_t> eos_id() const = 0;
  // True for the ids that decode(..., skip_special=true) drops (IncrementalDetokenizer relies on
  // this); false for out-of-range ids.
  virtual bool is_special(int32_t id) const = 0;
  virtual std::string id_to_piece(int32_t id) const = 0;
};

// Loads the tokenizer of a Hugging Face model folder: tokenizer.json (HfBpeTokenizer, what
// HF's fast tokenizer uses) when present, else tokenizer.model (SentencePiece); either with
// tokenizer_config.json's add_bos_token / add_eos_token (and, for tokenizer.json, bos_token /
// eos_token) if present. Throws TokenizerError naming the file when nothing usable is there:
// no folder, neither file, a tokenizer.json or tokenizer.model that cannot be loaded, or a
// malformed tokenizer_config.json.
std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir);

}  // namespace arbor
