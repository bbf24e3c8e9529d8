// Syntax tree of a parsed Jinja template: expressions and statements. Every node keeps the
// byte offset it came from so runtime errors can name a line and column.
#pragma once

#include <cstddef>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja_value.h"

namespace arbor::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

struct Expr {
  enum class Kind {
    kLiteral,  // literal
    kName,     // name
    kList,     // args: items
    kDict,     // args: key0, value0, key1, value1, ...
    kAttr,     // args[0].name
    kIndex,    // args[0][args[1]]
    kSlice,    // args[0][args[1]:args[2]:args[3]], missing parts are null
    kCall,     // args[0](args[1..], kwargs)
    kFilter,   // args[0] | name(args[1..], kwargs)
    kTest,     // args[0] is [not] name(args[1..])
    kUnary,    // name ("not", "-", "+") args[0]
    kBinary,   // args[0] name args[1]; name is an operator, "and", "or", "in", "not in"
    kCond,     // args[0] if args[1] else args[2] (args[2] may be null)
  };
  Kind kind;
  size_t pos = 0;
  Value literal;
  std::string name;
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  bool negated = false;  // kTest: `is not`
  int height = 1;        // longest path to a leaf, bounded by the parser
};

struct Node;
using Body = std::vector<std::unique_ptr<Node>>;

struct Node {
  enum class Kind {
    kText,      // text
    kOutput,    // {{ expr }}
    kIf,        // if expr: body else else_body (elif chains nest in else_body)
    kFor,       // for targets in expr [if cond]: body else else_body
    kSet,       // set targets[0] = expr, or set targets[0].attr = expr
    kSetBlock,  // set targets[0] %}body{% endset
    kBreak,
    kContinue,
  };
  Kind kind;
  size_t pos = 0;
  std::string text;
  ExprPtr expr;
  ExprPtr cond;
  std::vector<std::string> targets;
  std::string attr;  // kSet on a namespace attribute
  Body body;
  Body else_body;
};

}  // namespace arbor::jinja
