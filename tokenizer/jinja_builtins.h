// Jinja builtins over Values: filters (`x | trim`), tests (`x is defined`), methods of
// strings and maps (`s.strip()`, `m.get(k)`) and global functions (range, namespace, dict,
// raise_exception, strftime_now). They throw std::runtime_error (or ChatTemplateError for
// raise_exception); the evaluator adds the template position.
#pragma once

#include <string>

#include "tokenizer/jinja_value.h"

namespace arbor::jinja {

Value apply_filter(const std::string& name, const Value& v, const List& args, const KwArgs& kwargs);
bool apply_test(const std::string& name, const Value& v, const List& args);
// obj.name(args): string and map methods. Throws for an unknown method.
Value call_method(const Value& obj, const std::string& name, const List& args,
                  const KwArgs& kwargs);
// The global functions, as a map of name → function.
Map builtin_globals();

// UTF-8 helpers shared with the evaluator (Python counts and slices code points).
size_t utf8_length(const std::string& s);
std::string utf8_slice(const std::string& s, int64_t start, int64_t stop, int64_t step);
// Python's str.strip() whitespace (ASCII and Unicode spaces) when chars is empty.
std::string strip(const std::string& s, bool left, bool right, const std::string& chars = {});

}  // namespace arbor::jinja
