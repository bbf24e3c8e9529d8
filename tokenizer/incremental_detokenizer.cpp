#include "tokenizer/incremental_detokenizer.h"

#include <algorithm>

#include "tokenizer/utf8.h"

namespace arbor {
namespace {

// The part of `text` after `sent`. Normally `sent` is a prefix of `text`; if it is not (the
// prompt ended in an incomplete UTF-8 sequence that the output completed, or flush() sent an
// incomplete one that later tokens completed), the result starts after their common prefix,
// cut back to a character boundary so that it stays valid UTF-8.
std::string text_after(const std::string& sent, const std::string& text) {
  if (text.size() >= sent.size() && text.compare(0, sent.size(), sent) == 0) {
    return text.substr(sent.size());
  }
  size_t common = 0;
  const size_t limit = std::min(sent.size(), text.size());
  while (common < limit && sent[common] == text[common]) ++common;
  while (common > 0 && (static_cast<unsigned char>(text[common]) & 0xC0) == 0x80) --common;
  return text.substr(common);
}

bool ends_with_replacement(const std::string& text) {
  return text.size() >= kReplacementChar.size() &&
         std::string_view(text).substr(text.size() - kReplacementChar.size()) == kReplacementChar;
}

}  // namespace

IncrementalDetokenizer::IncrementalDetokenizer(const Tokenizer& tokenizer,
                                               std::span<const int32_t> prompt_ids)
    : tokenizer_(tokenizer) {
  // Special ids decode to nothing here (skip_special), so only ordinary ones give context.
  for (auto it = prompt_ids.rbegin(); it != prompt_ids.rend() && ids_.size() < kContextTokens;
       ++it) {
    if (*it < 0 || *it >= tokenizer_.vocab_size()) {
      throw TokenizerError("prompt token id " + std::to_string(*it) + " is out of range [0, " +
                           std::to_string(tokenizer_.vocab_size()) + ")");
    }
    if (!tokenizer_.is_special(*it)) ids_.push_back(*it);
  }
  std::reverse(ids_.begin(), ids_.end());
  prefix_offset_ = 0;
  read_offset_ = ids_.size();
}

std::string IncrementalDetokenizer::push(int32_t id) {
  if (id < 0 || id >= tokenizer_.vocab_size()) {
    throw TokenizerError("token id " + std::to_string(id) + " is out of range [0, " +
                         std::to_string(tokenizer_.vocab_size()) + ")");
  }
  // Skipping specials here is the same as decoding them with skip_special, and keeps a run
  // of them from growing the window.
  if (tokenizer_.is_special(id)) return {};
  ids_.push_back(id);
  return advance(/*force=*/false);
}

std::string IncrementalDetokenizer::flush() {
  return advance(/*force=*/true);
}

std::string IncrementalDetokenizer::advance(bool force) {
  const std::span<const int32_t> window(ids_);
  const std::string sent =
      tokenizer_.decode(window.subspan(prefix_offset_, read_offset_ - prefix_offset_), true);
  const std::string text = tokenizer_.decode(window.subspan(prefix_offset_), true);
  // Nothing new: the text is (a prefix of) what was sent.
  if (text.size() <= sent.size() && sent.compare(0, text.size(), text) == 0) return {};
  if (force || !ends_with_replacement(text))
    return move_window(text_after(sent, text), ids_.size());

  // The text ends in U+FFFD: maybe an incomplete character that later tokens complete. Such a
  // character started at most kMaxUtf8Tail tokens back, so after holding for long enough, send
  // the text of all but the last kMaxUtf8Tail tokens, if it is a prefix of the whole text (the
  // cut is not inside a character): later tokens cannot change it.
  const size_t held = ids_.size() - read_offset_;
  if (held <= kMaxHeldTokens) return {};
  const size_t cut = ids_.size() - kMaxUtf8Tail;
  const std::string stable =
      tokenizer_.decode(window.subspan(prefix_offset_, cut - prefix_offset_), true);
  const bool extends_sent =
      stable.size() > sent.size() && stable.compare(0, sent.size(), sent) == 0;
  if (!extends_sent || text.compare(0, stable.size(), stable) != 0) return {};
  return move_window(stable.substr(sent.size()), cut);
}

std::string IncrementalDetokenizer::move_window(std::string increment, size_t new_read_offset) {
  // What was read becomes the new context; the ids before it are dropped.
  ids_.erase(ids_.begin(), ids_.begin() + std::ptrdiff_t(read_offset_));
  new_read_offset -= read_offset_;
  prefix_offset_ = 0;
  read_offset_ = new_read_offset;
  return increment;
}

}  // namespace arbor
