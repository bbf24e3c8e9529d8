// Turns a stream of generated token ids into text increments that are safe to send to a
// client at once: every increment is valid UTF-8, and text is emitted only when later
// tokens can no longer change it (byte-fallback sequences split across tokens, SentencePiece's
// leading-space rule).
//
// Concatenating all increments plus flush() equals decode(prompt + generated) with the text
// of decode(prompt) cut off the front (special tokens skipped): the generated ids decoded at
// once, except that the first generated word keeps its leading space when the prompt has text.
// With an empty prompt it is exactly decode(generated). Only the last kContextTokens ordinary
// prompt ids are kept as context.
//
// The algorithm is the prefix/read-offset one of vLLM and TGI: decode the window
// ids[prefix:read] (text already sent) and ids[prefix:] and send the difference unless it
// ends in U+FFFD (an incomplete UTF-8 sequence). Each push costs O(window), not O(output).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace arbor {

class IncrementalDetokenizer {
 public:
  // Ordinary prompt ids kept as context for the first generated token.
  static constexpr size_t kContextTokens = 5;
  // Text ending in U+FFFD is held back whole for at most this many tokens; past it, all but
  // the text of the last kMaxUtf8Tail tokens is sent as soon as that is a stable prefix, so
  // that garbage output (invalid bytes in a row) cannot make the window grow without bound.
  static constexpr size_t kMaxHeldTokens = 8;
  // An incomplete UTF-8 character has at most 3 bytes, so it spans at most 3 tokens.
  static constexpr size_t kMaxUtf8Tail = 3;

  // prompt_ids give the context the first generated token is decoded against (so that a
  // leading space of the first generated word is kept, as in a full decode of prompt+output).
  // The tokenizer must outlive this object. Throws TokenizerError for an out-of-range id
  // among the prompt ids it looks at (the tail that gives the context).
  IncrementalDetokenizer(const Tokenizer& tokenizer, std::span<const int32_t> prompt_ids);

  // Adds one generated id; returns the newly stable text (possibly empty). Special ids
  // (tokenizer.is_special) produce no text. Throws TokenizerError for an out-of-range id.
  std::string push(int32_t id);
  // Returns whatever text is still held back (e.g. an incomplete UTF-8 sequence, as U+FFFD).
  std::string flush();

 private:
  // Sends the text of ids_[prefix_offset_:] past that of ids_[prefix_offset_:read_offset_]
  // when `force` or when it is stable (or the stable part of it), moves the window, and
  // returns what was sent.
  std::string advance(bool force);
  // Makes ids_[read_offset_:] the new context and new_read_offset (an index into the current
  // ids_) the new read offset; returns increment.
  std::string move_window(std::string increment, size_t new_read_offset);

  const Tokenizer& tokenizer_;
  // Window of ordinary ids: [0, prefix_offset_) is dropped as soon as the window moves.
  std::vector<int32_t> ids_;
  size_t prefix_offset_ = 0;  // start of the decoding context
  size_t read_offset_ = 0;    // end of the ids whose text has been sent
};

}  // namespace arbor
