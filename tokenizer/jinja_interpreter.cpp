#include "tokenizer/jinja_interpreter.h"

#include <cmath>
#include <unordered_map>

#include "tokenizer/chat_template.h"
#include "tokenizer/jinja_builtins.h"
#include "tokenizer/jinja_lexer.h"
#include "tokenizer/jinja_parser.h"

namespace arbor::jinja {

namespace {

constexpr size_t kMaxOutputBytes = size_t{64} << 20;  // a runaway template stops here

enum class Flow { kNormal, kBreak, kContinue };

class Evaluator {
 public:
  Evaluator(const std::string& source, const Map& context) : source_(source) {
    scopes_.emplace_back();
    for (const auto& [k, v] : builtin_globals().items) scopes_.back()[k] = v;
    for (const auto& [k, v] : context.items) scopes_.back()[k] = v;
  }

  Flow exec_body(const Body& body, std::string& out) {
    for (const auto& node : body) {
      Flow flow = exec(*node, out);
      if (flow != Flow::kNormal) return flow;
    }
    return Flow::kNormal;
  }

 private:
  [[noreturn]] void fail(const std::string& what, size_t pos) const {
    throw ChatTemplateError("chat template error at " + describe_position(source_, pos) + ": " +
                            what);
  }

  Value lookup(const std::string& name) const {
    for (auto it = scopes_.rbegin(); it != scopes_.rend(); ++it) {
      auto found = it->find(name);
      if (found != it->end()) return found->second;
    }
    return Value();
  }

  void append(std::string& out, const std::string& text, size_t pos) const {
    if (out.size() + text.size() > kMaxOutputBytes) fail("output too large", pos);
    out += text;
  }

  Flow exec(const Node& node, std::string& out) {
    switch (node.kind) {
      case Node::Kind::kText:
        append(out, node.text, node.pos);
        return Flow::kNormal;
      case Node::Kind::kOutput:
        append(out, eval(*node.expr).str(), node.pos);
        return Flow::kNormal;
      case Node::Kind::kIf:
        return exec_body(eval(*node.expr).truthy() ? node.body : node.else_body, out);
      case Node::Kind::kFor:
        return exec_for(node, out);
      case Node::Kind::kSet: {
        Value value = eval(*node.expr);
        if (node.attr.empty()) {
          scopes_.back()[node.targets[0]] = std::move(value);
        } else {
          Value target = lookup(node.targets[0]);
          if (!target.is_map()) fail("cannot set an attribute of " + node.targets[0], node.pos);
          target.map->set(node.attr, std::move(value));
        }
        return Flow::kNormal;
      }
      case Node::Kind::kSetBlock: {
        std::string captured;
        exec_body(node.body, captured);
        scopes_.back()[node.targets[0]] = Value::string(std::move(captured));
        return Flow::kNormal;
      }
      case Node::Kind::kBreak:
        return Flow::kBreak;
      case Node::Kind::kContinue:
        return Flow::kContinue;
    }
    return Flow::kNormal;
  }

  Flow exec_for(const Node& node, std::string& out) {
    Value iterable = eval(*node.expr);
    List items;
    if (iterable.is_list()) {
      items = *iterable.list;
    } else if (iterable.is_map() || iterable.is_string()) {
      items = *apply_filter("list", iterable, {}, {}).list;
    } else if (!iterable.is_undefined() && !iterable.is_none()) {
      fail(std::string("cannot iterate over ") + iterable.type_name(), node.expr->pos);
    } else if (iterable.is_none()) {
      fail("cannot iterate over none", node.expr->pos);
    }
    // The `if` filter of a loop is applied before loop.index and loop.length are computed.
    if (node.cond) {
      List kept;
      for (const Value& item : items) {
        ScopeGuard scope(*this);
        bind(node, item);
        if (eval(*node.cond).truthy()) kept.push_back(item);
      }
      items = std::move(kept);
    }
    if (items.empty()) return exec_body(node.else_body, out);
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      ScopeGuard scope(*this);
      Value loop = Value::make_map();
      loop.map->set("index", Value::integer(k + 1));
      loop.map->set("index0", Value::integer(k));
      loop.map->set("revindex", Value::integer(n - k));
      loop.map->set("revindex0", Value::integer(n - k - 1));
      loop.map->set("first", Value::boolean(k == 0));
      loop.map->set("last", Value::boolean(k == n - 1));
      loop.map->set("length", Value::integer(n));
      loop.map->set("previtem", k > 0 ? items[k - 1] : Value());
      loop.map->set("nextitem", k + 1 < n ? items[k + 1] : Value());
      scopes_.back()["loop"] = loop;
      bind(node, items[k]);
      if (exec_body(node.body, out) == Flow::kBreak) break;
    }
    return Flow::kNormal;
  }

  void bind(const Node& node, const Value& item) {
    if (node.targets.size() == 1) {
      scopes_.back()[node.targets[0]] = item;
      return;
    }
    if (!item.is_list() || item.list->size() != node.targets.size()) {
      fail("cannot unpack loop item into " + std::to_string(node.targets.size()) + " names",
           node.pos);
    }
    for (size_t k = 0; k < node.targets.size(); ++k) {
      scopes_.back()[node.targets[k]] = (*item.list)[k];
    }
  }

  struct ScopeGuard {
    explicit ScopeGuard(Evaluator& e) : e_(e) { e_.scopes_.emplace_back(); }
    ~ScopeGuard() { e_.scopes_.pop_back(); }
    ScopeGuard(const ScopeGuard&) = delete;
    ScopeGuard& operator=(const ScopeGuard&) = delete;
    Evaluator& e_;
  };

  Value eval(const Expr& e) {
    try {
      return eval_inner(e);
    } catch (const ChatTemplateError&) {
      throw;
    } catch (const std::exception& ex) {
      fail(ex.what(), e.pos);
    }
  }

  void eval_args(const Expr& e, size_t first, List& args, KwArgs& kwargs) {
    for (size_t k = first; k < e.args.size(); ++k) args.push_back(eval(*e.args[k]));
    for (const auto& [name, value] : e.kwargs) kwargs.emplace_back(name, eval(*value));
  }

  Value eval_inner(const Expr& e) {
    using K = Expr::Kind;
    switch (e.kind) {
      case K::kLiteral:
        return e.literal;
      case K::kName:
        return lookup(e.name);
      case K::kList: {
        List items;
        for (const auto& a : e.args) items.push_back(eval(*a));
        return Value::make_list(std::move(items));
      }
      case K::kDict: {
        Value m = Value::make_map();
        for (size_t k = 0; k + 1 < e.args.size(); k += 2) {
          Value key = eval(*e.args[k]);
          m.map->set(key.str(), eval(*e.args[k + 1]));
        }
        return m;
      }
      case K::kAttr:
        return member(eval(*e.args[0]), Value::string(e.name), e);
      case K::kIndex:
        return member(eval(*e.args[0]), eval(*e.args[1]), e);
      case K::kSlice:
        return slice(e);
      case K::kCall:
        return call(e);
      case K::kFilter: {
        Value operand = eval(*e.args[0]);
        List args;
        KwArgs kwargs;
        eval_args(e, 1, args, kwargs);
        return apply_filter(e.name, operand, args, kwargs);
      }
      case K::kTest: {
        // `x is defined` must not fail on undefined attribute chains.
        Value operand = e.name == "defined" || e.name == "undefined" ? eval_or_undefined(*e.args[0])
                                                                     : eval(*e.args[0]);
        List args;
        KwArgs kwargs;
        eval_args(e, 1, args, kwargs);
        return Value::boolean(apply_test(e.name, operand, args) != e.negated);
      }
      case K::kUnary: {
        Value v = eval(*e.args[0]);
        if (e.name == "not") return Value::boolean(!v.truthy());
        if (v.kind == Value::Kind::kInt) return Value::integer(e.name == "-" ? -v.i : v.i);
        if (v.kind == Value::Kind::kFloat) return Value::floating(e.name == "-" ? -v.f : v.f);
        fail(std::string("bad operand for unary ") + e.name + ": " + v.type_name(), e.pos);
      }
      case K::kBinary:
        return binary(e);
      case K::kCond:
        if (eval(*e.args[1]).truthy()) return eval(*e.args[0]);
        return e.args[2] ? eval(*e.args[2]) : Value();
    }
    return Value();
  }

  Value eval_or_undefined(const Expr& e) {
    if (e.kind == Expr::Kind::kAttr || e.kind == Expr::Kind::kIndex) {
      Value object = eval_or_undefined(*e.args[0]);
      if (object.is_undefined()) return Value();
    }
    return eval(e);
  }

  Value member(const Value& object, const Value& key, const Expr& e) {
    if (object.is_map()) {
      const Value* found = object.map->find(key.str());
      return found ? *found : Value();
    }
    if (object.is_list() || object.is_string()) {
      if (key.kind != Value::Kind::kInt) return Value();  // e.g. a method name
      int64_t n = object.is_list() ? static_cast<int64_t>(object.list->size())
                                   : static_cast<int64_t>(utf8_length(object.s));
      int64_t k = key.i < 0 ? key.i + n : key.i;
      if (k < 0 || k >= n) return Value();
      if (object.is_list()) return (*object.list)[static_cast<size_t>(k)];
      return Value::string(utf8_slice(object.s, k, k + 1, 1));
    }
    if (object.is_undefined()) fail("'" + key.str() + "' of an undefined value", e.pos);
    if (object.is_none()) fail("'" + key.str() + "' of none", e.pos);
    return Value();
  }

  Value slice(const Expr& e) {
    Value object = eval(*e.args[0]);
    int64_t n;
    if (object.is_list()) {
      n = static_cast<int64_t>(object.list->size());
    } else if (object.is_string()) {
      n = static_cast<int64_t>(utf8_length(object.s));
    } else {
      fail(std::string("cannot slice ") + object.type_name(), e.pos);
    }
    auto part = [&](size_t k) -> std::optional<int64_t> {
      if (!e.args[k]) return std::nullopt;
      Value v = eval(*e.args[k]);
      if (v.is_none()) return std::nullopt;
      if (v.kind != Value::Kind::kInt) fail("slice indices must be integers", e.pos);
      return v.i;
    };
    std::optional<int64_t> start = part(1), stop = part(2), step_opt = part(3);
    int64_t step = step_opt.value_or(1);
    if (step == 0) fail("slice step cannot be zero", e.pos);
    // Python's slice.indices().
    auto clampi = [&](std::optional<int64_t> v, int64_t fallback) {
      if (!v) return fallback;
      int64_t x = *v < 0 ? *v + n : *v;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1);
    };
    int64_t from = clampi(start, step > 0 ? 0 : n - 1);
    int64_t to = clampi(stop, step > 0 ? n : -1);
    if (object.is_string()) return Value::string(utf8_slice(object.s, from, to, step));
    List out;
    for (int64_t k = from; step > 0 ? k < to : k > to; k += step) {
      out.push_back((*object.list)[static_cast<size_t>(k)]);
    }
    return Value::make_list(std::move(out));
  }

  Value call(const Expr& e) {
    const Expr& callee = *e.args[0];
    List args;
    KwArgs kwargs;
    if (callee.kind == Expr::Kind::kAttr) {
      Value object = eval(*callee.args[0]);
      const Value* field = object.is_map() ? object.map->find(callee.name) : nullptr;
      if (!field || field->kind != Value::Kind::kFunction) {
        eval_args(e, 1, args, kwargs);
        return call_method(object, callee.name, args, kwargs);
      }
    }
    Value fn = eval(callee);
    if (fn.kind != Value::Kind::kFunction) {
      fail(std::string("cannot call ") + (callee.kind == Expr::Kind::kName
                                              ? "undefined '" + callee.name + "'"
                                              : std::string(fn.type_name())),
           e.pos);
    }
    eval_args(e, 1, args, kwargs);
    return (*fn.fn)(args, kwargs);
  }

  Value binary(const Expr& e) {
    const std::string& op = e.name;
    if (op == "and") {
      Value left = eval(*e.args[0]);
      return left.truthy() ? eval(*e.args[1]) : left;
    }
    if (op == "or") {
      Value left = eval(*e.args[0]);
      return left.truthy() ? left : eval(*e.args[1]);
    }
    Value a = eval(*e.args[0]);
    Value b = eval(*e.args[1]);
    using K = Value::Kind;
    if (op == "==") return Value::boolean(equal(a, b));
    if (op == "!=") return Value::boolean(!equal(a, b));
    if (op == "<") return Value::boolean(compare(a, b) < 0);
    if (op == ">") return Value::boolean(compare(a, b) > 0);
    if (op == "<=") return Value::boolean(compare(a, b) <= 0);
    if (op == ">=") return Value::boolean(compare(a, b) >= 0);
    if (op == "in" || op == "not in") {
      if (!b.is_list() && !b.is_map() && !b.is_string()) {
        fail(std::string("'in' needs a container, got ") + b.type_name(), e.pos);
      }
      return Value::boolean(apply_test("in", a, {b}) == (op == "in"));
    }
    if (op == "~") {
      std::string s = a.str() + b.str();
      if (s.size() > kMaxOutputBytes) fail("string too large", e.pos);
      return Value::string(std::move(s));
    }
    if (op == "+") {
      if (a.is_list() && b.is_list()) {
        List items = *a.list;
        items.insert(items.end(), b.list->begin(), b.list->end());
        return Value::make_list(std::move(items));
      }
      if (a.is_string() && b.is_string()) {
        if (a.s.size() + b.s.size() > kMaxOutputBytes) fail("string too large", e.pos);
        return Value::string(a.s + b.s);
      }
    }
    if (op == "*" &&
        ((a.is_string() && b.kind == K::kInt) || (b.is_string() && a.kind == K::kInt))) {
      const std::string& s = a.is_string() ? a.s : b.s;
      int64_t times = a.is_string() ? b.i : a.i;
      if (times > 0 && s.size() * static_cast<size_t>(times) > kMaxOutputBytes) {
        fail("string too large", e.pos);
      }
      std::string out;
      for (int64_t k = 0; k < times; ++k) out += s;
      return Value::string(out);
    }
    if (!a.is_number() || !b.is_number()) {
      fail(std::string("unsupported operands for ") + op + ": " + a.type_name() + " and " +
               b.type_name(),
           e.pos);
    }
    bool ints = a.kind == K::kInt && b.kind == K::kInt;
    double x = a.as_double(), y = b.as_double();
    if (op == "+") return ints ? Value::integer(a.i + b.i) : Value::floating(x + y);
    if (op == "-") return ints ? Value::integer(a.i - b.i) : Value::floating(x - y);
    if (op == "*") return ints ? Value::integer(a.i * b.i) : Value::floating(x * y);
    if (op == "**") {
      if (ints && b.i >= 0)
        return Value::floating(std::pow(x, y)).f < 9.2e18
                   ? Value::integer(static_cast<int64_t>(std::pow(x, y)))
                   : Value::floating(std::pow(x, y));
      return Value::floating(std::pow(x, y));
    }
    if (y == 0) fail("division by zero", e.pos);
    if (op == "/") return Value::floating(x / y);
    if (op == "//") {
      if (ints) {
        int64_t q = a.i / b.i;
        if ((a.i % b.i != 0) && ((a.i < 0) != (b.i < 0))) --q;
        return Value::integer(q);
      }
      return Value::floating(std::floor(x / y));
    }
    if (op == "%") {
      if (ints) {
        int64_t r = a.i % b.i;
        if (r != 0 && ((r < 0) != (b.i < 0))) r += b.i;
        return Value::integer(r);
      }
      return Value::floating(x - y * std::floor(x / y));
    }
    fail("unknown operator " + op, e.pos);
  }

  const std::string& source_;
  std::vector<std::unordered_map<std::string, Value>> scopes_;
};

}  // namespace

Template::Template(std::string source) : source_(std::move(source)), body_(parse(source_)) {}

std::string Template::render(const Map& context) const {
  Evaluator evaluator(source_, context);
  std::string out;
  evaluator.exec_body(body_, out);
  return out;
}

}  // namespace arbor::jinja
