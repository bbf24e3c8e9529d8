// Jinja parser: tokens → syntax tree. Supports if/elif/else, for (with else, an `if`
// filter, tuple unpacking), set (names, namespace attributes, block form), break/continue,
// and generation/endgeneration markers (ignored, as HF does). Expressions: literals, lists,
// dicts, attribute and index access, slices, calls with keyword arguments, filters, tests,
// `not`/`and`/`or`, comparisons, `in`/`not in`, + - * / // % ** ~, and `a if b else c`.
#pragma once

#include <string_view>

#include "tokenizer/jinja_ast.h"

namespace arbor::jinja {

// Nesting deeper than this (expressions or blocks) is a syntax error, so a hostile template
// cannot exhaust the stack of the parser or the evaluator.
inline constexpr int kMaxNesting = 200;

// Throws ChatTemplateError with line and column on any syntax error.
Body parse(std::string_view source);

}  // namespace arbor::jinja
