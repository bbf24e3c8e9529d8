// SentencePieceBpe: a time- and memory-lean re-implementation of what SentencePiece 0.1.97's
// EncodeAsIds does for BPE models without a precompiled normalization map (Llama-1/2 style:
// the "identity" normalizer), used by SentencePieceTokenizer in place of the library's encoder.
//
// Why: the library builds a protobuf message per token (piece and surface strings, offsets), a
// heap-allocated pair per BPE candidate and an 8-byte offset per normalized byte: up to ~230
// bytes per input byte; 8 MiB of text took 5-10 s and 1-2 GB.
//
// What it does, step for step as the library (the tests compare the two on many texts):
//   - normalize: user-defined pieces copied as they are; each byte that does not start a valid
//     UTF-8 character becomes U+FFFD; spaces become "▁" (escape_whitespaces); extra spaces
//     removed (remove_extra_whitespaces); a "▁" put in front (add_dummy_prefix), or at the end
//     when treat_whitespace_as_suffix.
//   - BPE: characters (or whole user-defined pieces, which never merge) are merged pairwise,
//     always the pair whose concatenation is the highest-scoring normal/user-defined/unused
//     piece, leftmost on ties; merged unused pieces are split back the way SentencePiece does.
//   - ids: unknown pieces become their UTF-8 bytes' <0xXX> pieces (byte_fallback) or one <unk>
//     per run of unknown pieces.
//
// Memory: the normalized text, and per BPE run 8 bytes per byte of the run plus a 12-byte heap
// entry per candidate pair. Runs are split at each "▁" that follows another character when
// the vocabulary allows it (no piece that can be merged holds a "▁" after another character,
// so no merge can cross such a point and the pieces do not change); then memory beyond the
// text and the ids is that of the longest word.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace arbor {

class SentencePieceBpe {
 public:
  // Reads a serialized ModelProto. Returns nullptr when the model is something this class does
  // not implement (not BPE, a precompiled normalization map, a malformed proto); the caller
  // then uses the SentencePiece library.
  static std::unique_ptr<SentencePieceBpe> create(std::string_view serialized_model_proto);
  ~SentencePieceBpe();

  // Appends the ids of `text` (no BOS/EOS; special-token strings are text here) to `out`.
  // Throws TokenizerError where SentencePiece's encoder fails (a control piece that is also an
  // ordinary character of the text).
  void encode(std::string_view text, std::vector<int32_t>& out) const;

  int vocab_size() const;
  // The piece of an id in [0, vocab_size()).
  std::string_view piece(int32_t id) const;
  // Whether BPE runs are split at word starts (see above).
  bool splits_words() const;

 private:
  struct Model;
  explicit SentencePieceBpe(std::unique_ptr<Model> model);
  std::unique_ptr<Model> model_;
};

}  // namespace arbor
