// UTF-8 helpers shared by the tokenizers and the incremental detokenizer.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace arbor {

// U+FFFD REPLACEMENT CHARACTER, UTF-8 encoded.
inline constexpr std::string_view kReplacementChar = "\xEF\xBF\xBD";

// Length in bytes of the valid UTF-8 character at the start of s (shortest form, no
// surrogates, at most U+10FFFF), or 0 when s does not start with one (s empty, a stray
// continuation byte, an invalid or truncated sequence).
size_t utf8_char_length(std::string_view s);

bool is_valid_utf8(std::string_view s);

// Returns s with every byte that does not belong to a valid UTF-8 character replaced by
// U+FFFD, one replacement per byte (what SentencePiece does with byte-fallback pieces).
std::string sanitize_utf8(std::string_view s);

}  // namespace arbor
