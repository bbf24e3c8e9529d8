// Jinja template: parse once, render many times against a context of global variables.
#pragma once

#include <string>

#include "tokenizer/jinja_ast.h"
#include "tokenizer/jinja_value.h"

namespace arbor::jinja {

class Template {
 public:
  // Throws ChatTemplateError (with line and column) when the source does not parse.
  explicit Template(std::string source);

  // Renders with the builtin globals (range, namespace, dict, raise_exception,
  // strftime_now) overlaid by `context`. Runtime errors throw ChatTemplateError: the
  // template's own message for raise_exception, otherwise the message with a position.
  std::string render(const Map& context) const;

 private:
  std::string source_;
  Body body_;
};

}  // namespace arbor::jinja
