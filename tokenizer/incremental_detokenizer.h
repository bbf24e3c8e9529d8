// Turns a stream of generated token ids into text increments that are safe to send to a
// client at once: every increment is valid UTF-8, and text is emitted only when later
// tokens can no longer change it (byte-fallback sequences split across tokens, SentencePiece's
// leading-space rule). Concatenating all increments plus flush() equals decoding all the
// generated ids at once (skipping special tokens).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace arbor {

class IncrementalDetokenizer {
 public:
  // prompt_ids give the context the first generated token is decoded against (so that a
  // leading space of the first generated word is kept, as in a full decode of prompt+output).
  IncrementalDetokenizer(const Tokenizer& tokenizer, std::span<const int32_t> prompt_ids);

  // Adds one generated id; returns the newly stable text (possibly empty).
  std::string push(int32_t id);
  // Returns whatever text is still held back (e.g. an incomplete UTF-8 sequence, as U+FFFD).
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;
  size_t read_offset_ = 0;
};

}  // namespace arbor
