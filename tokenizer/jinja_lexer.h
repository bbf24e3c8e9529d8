// Jinja lexer: splits template source into text runs and the tokens inside {{ }} / {% %}
// tags, dropping {# #} comments. Applies whitespace control the way HF transformers
// configures Jinja: `{%-` / `-%}` (and the {{ }} forms) strip whitespace on that side,
// trim_blocks drops the newline after a block tag, lstrip_blocks drops spaces and tabs
// before a block tag at the start of a line, and one trailing newline of the source is
// dropped.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace arbor::jinja {

struct Token {
  enum class Type {
    kText,       // literal output text
    kExprOpen,   // {{
    kExprClose,  // }}
    kStmtOpen,   // {%
    kStmtClose,  // %}
    kName,
    kString,  // value holds the unescaped text
    kInt,
    kFloat,
    kOp,  // punctuation and operators: ( ) [ ] { } . , : | ~ + - * / // % ** == != < > <= >= =
    kEnd,
  };
  Type type;
  std::string value;
  size_t pos;  // byte offset in the source
};

// Throws ChatTemplateError (with line and column) on unterminated tags, strings or comments.
std::vector<Token> tokenize(std::string_view source);

// "line L, column C" for a byte offset.
std::string describe_position(std::string_view source, size_t pos);

}  // namespace arbor::jinja
