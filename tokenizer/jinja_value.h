// Values of the Jinja subset used by chat templates: undefined, none, bool, int, float,
// string, list, map (insertion-ordered, string keys) and native functions. Lists and maps
// are shared by reference, as in Python (a namespace() is a map).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace arbor::jinja {

struct Value;
using List = std::vector<Value>;
using KwArgs = std::vector<std::pair<std::string, Value>>;

struct Map {
  std::vector<std::pair<std::string, Value>> items;
  const Value* find(const std::string& key) const;
  void set(const std::string& key, Value value);
};

// A native callable: positional and keyword arguments.
using Function = std::function<Value(const List& args, const KwArgs& kwargs)>;

struct Value {
  enum class Kind { kUndefined, kNone, kBool, kInt, kFloat, kString, kList, kMap, kFunction };
  Kind kind = Kind::kUndefined;
  bool b = false;
  int64_t i = 0;
  double f = 0.0;
  std::string s;
  std::shared_ptr<List> list;
  std::shared_ptr<Map> map;
  std::shared_ptr<Function> fn;

  static Value none();
  static Value boolean(bool v);
  static Value integer(int64_t v);
  static Value floating(double v);
  static Value string(std::string v);
  static Value make_list(List items = {});
  static Value make_map();
  static Value function(Function fn);

  bool is_undefined() const { return kind == Kind::kUndefined; }
  bool is_none() const { return kind == Kind::kNone; }
  bool is_string() const { return kind == Kind::kString; }
  bool is_list() const { return kind == Kind::kList; }
  bool is_map() const { return kind == Kind::kMap; }
  bool is_number() const { return kind == Kind::kInt || kind == Kind::kFloat; }
  double as_double() const { return kind == Kind::kInt ? static_cast<double>(i) : f; }

  bool truthy() const;
  // The text `{{ value }}` writes: None, True/False, 1.0 for whole floats, Python-like
  // reprs for lists and maps, "" for undefined.
  std::string str() const;
  const char* type_name() const;
};

bool equal(const Value& a, const Value& b);
// Python-like ordering of numbers with numbers and strings with strings; throws
// std::invalid_argument for other pairs.
int compare(const Value& a, const Value& b);

// JSON as Python's json.dumps(ensure_ascii=False): ", " / ": " separators, or "," and
// newline + indent per level when indent > 0. Undefined becomes null.
std::string to_json(const Value& v, int indent, int depth = 0);

}  // namespace arbor::jinja
