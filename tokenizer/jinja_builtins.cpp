#include "tokenizer/jinja_builtins.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <ctime>
#include <stdexcept>

#include "tokenizer/chat_template.h"

namespace arbor::jinja {

namespace {

[[noreturn]] void error(const std::string& what) {
  throw std::runtime_error(what);
}

// Byte offsets of each code point start, plus s.size() at the end.
std::vector<size_t> code_point_offsets(const std::string& s) {
  std::vector<size_t> offsets;
  for (size_t k = 0; k < s.size(); ++k) {
    if ((static_cast<unsigned char>(s[k]) & 0xC0) != 0x80) offsets.push_back(k);
  }
  offsets.push_back(s.size());
  return offsets;
}

uint32_t decode_at(const std::string& s, size_t k, size_t* len) {
  unsigned char c = static_cast<unsigned char>(s[k]);
  int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
  if (k + n > s.size()) n = 1;
  uint32_t cp = n == 1 ? c : n == 2 ? (c & 0x1F) : n == 3 ? (c & 0x0F) : (c & 0x07);
  for (int j = 1; j < n; ++j) cp = (cp << 6) | (static_cast<unsigned char>(s[k + j]) & 0x3F);
  *len = static_cast<size_t>(n);
  return cp;
}

bool is_space(uint32_t cp) {
  return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20) || cp == 0x85 || cp == 0xA0 ||
         cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 ||
         cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

const Value& arg(const List& args, const KwArgs& kwargs, size_t index, const char* name,
                 const Value& fallback) {
  if (index < args.size()) return args[index];
  for (const auto& [k, v] : kwargs) {
    if (k == name) return v;
  }
  return fallback;
}

const Value kUndefined;

std::string expect_string(const Value& v, const char* what) {
  if (!v.is_string()) error(std::string(what) + " expects a string, got " + v.type_name());
  return v.s;
}

List as_list(const Value& v, const char* what) {
  if (v.is_list()) return *v.list;
  if (v.is_map()) {
    List keys;
    for (const auto& [k, unused] : v.map->items) keys.push_back(Value::string(k));
    return keys;
  }
  if (v.is_string()) {
    List chars;
    auto offsets = code_point_offsets(v.s);
    for (size_t k = 0; k + 1 < offsets.size(); ++k) {
      chars.push_back(Value::string(v.s.substr(offsets[k], offsets[k + 1] - offsets[k])));
    }
    return chars;
  }
  error(std::string(what) + " expects a sequence, got " + v.type_name());
}

Value items_of(const Value& v) {
  if (!v.is_map()) error(std::string("items expects a mapping, got ") + v.type_name());
  List out;
  for (const auto& [k, value] : v.map->items) {
    out.push_back(Value::make_list({Value::string(k), value}));
  }
  return Value::make_list(std::move(out));
}

std::string replace_all(const std::string& s, const std::string& from, const std::string& to,
                        int64_t count) {
  if (from.empty()) return s;
  std::string out;
  size_t k = 0;
  for (int64_t n = 0; count < 0 || n < count; ++n) {
    size_t hit = s.find(from, k);
    if (hit == std::string::npos) break;
    out.append(s, k, hit - k);
    out += to;
    k = hit + from.size();
  }
  return out + s.substr(k);
}

std::string title_case(const std::string& s) {
  std::string out = s;
  bool start = true;
  for (char& c : out) {
    unsigned char u = static_cast<unsigned char>(c);
    if (std::isalpha(u)) {
      c = static_cast<char>(start ? std::toupper(u) : std::tolower(u));
      start = false;
    } else {
      start = !(u & 0x80) && !std::isdigit(u);
    }
  }
  return out;
}

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}
std::string upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

Value attribute_of(const Value& v, const std::string& attr) {
  if (!v.is_map()) return Value();
  const Value* found = v.map->find(attr);
  return found ? *found : Value();
}

}  // namespace

size_t utf8_length(const std::string& s) {
  return code_point_offsets(s).size() - 1;
}

std::string utf8_slice(const std::string& s, int64_t start, int64_t stop, int64_t step) {
  auto offsets = code_point_offsets(s);
  std::string out;
  int64_t n = static_cast<int64_t>(offsets.size()) - 1;
  if (step > 0) {
    for (int64_t k = start; k < stop && k < n; k += step) {
      out.append(s, offsets[k], offsets[k + 1] - offsets[k]);
    }
  } else {
    for (int64_t k = start; k > stop && k >= 0; k += step) {
      if (k < n) out.append(s, offsets[k], offsets[k + 1] - offsets[k]);
    }
  }
  return out;
}

std::string strip(const std::string& s, bool left, bool right, const std::string& chars) {
  auto strippable = [&](uint32_t cp, size_t k, size_t len) {
    if (chars.empty()) return is_space(cp);
    return chars.find(s.substr(k, len)) != std::string::npos;
  };
  size_t begin = 0, end = s.size();
  if (left) {
    while (begin < end) {
      size_t len;
      uint32_t cp = decode_at(s, begin, &len);
      if (!strippable(cp, begin, len)) break;
      begin += len;
    }
  }
  if (right) {
    while (end > begin) {
      size_t k = end - 1;
      while (k > begin && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80) --k;
      size_t len;
      uint32_t cp = decode_at(s, k, &len);
      if (!strippable(cp, k, len)) break;
      end = k;
    }
  }
  return s.substr(begin, end - begin);
}

bool apply_test(const std::string& name, const Value& v, const List& args) {
  using K = Value::Kind;
  auto need = [&](size_t n) {
    if (args.size() < n) error("test '" + name + "' needs an argument");
  };
  if (name == "defined") return !v.is_undefined();
  if (name == "undefined") return v.is_undefined();
  if (name == "none") return v.is_none();
  if (name == "boolean") return v.kind == K::kBool;
  if (name == "true") return v.kind == K::kBool && v.b;
  if (name == "false") return v.kind == K::kBool && !v.b;
  if (name == "string") return v.is_string();
  if (name == "number") return v.is_number();
  if (name == "integer") return v.kind == K::kInt;
  if (name == "float") return v.kind == K::kFloat;
  if (name == "mapping") return v.is_map();
  if (name == "iterable" || name == "sequence") return v.is_list() || v.is_map() || v.is_string();
  if (name == "callable") return v.kind == K::kFunction;
  if (name == "lower") return v.is_string() && lower(v.s) == v.s;
  if (name == "upper") return v.is_string() && upper(v.s) == v.s;
  if (name == "odd" || name == "even") {
    if (v.kind != K::kInt) error("test '" + name + "' expects an integer");
    return (v.i % 2 != 0) == (name == "odd");
  }
  if (name == "divisibleby") {
    need(1);
    if (v.kind != K::kInt || args[0].kind != K::kInt || args[0].i == 0) {
      error("divisibleby expects non-zero integers");
    }
    return v.i % args[0].i == 0;
  }
  if (name == "equalto" || name == "eq" || name == "==") return need(1), equal(v, args[0]);
  if (name == "ne" || name == "!=") return need(1), !equal(v, args[0]);
  if (name == "sameas") {
    need(1);
    return v.kind == args[0].kind && (v.is_list()  ? v.list == args[0].list
                                      : v.is_map() ? v.map == args[0].map
                                                   : equal(v, args[0]));
  }
  if (name == "lt" || name == "<") return need(1), compare(v, args[0]) < 0;
  if (name == "le" || name == "<=") return need(1), compare(v, args[0]) <= 0;
  if (name == "gt" || name == ">") return need(1), compare(v, args[0]) > 0;
  if (name == "ge" || name == ">=") return need(1), compare(v, args[0]) >= 0;
  if (name == "in") {
    need(1);
    const Value& c = args[0];
    if (c.is_string() && v.is_string()) return c.s.find(v.s) != std::string::npos;
    if (c.is_map() && v.is_string()) return c.map->find(v.s) != nullptr;
    if (c.is_list()) {
      return std::any_of(c.list->begin(), c.list->end(),
                         [&](const Value& x) { return equal(x, v); });
    }
    return false;
  }
  error("unknown test '" + name + "'");
}

namespace {

// select / reject / selectattr / rejectattr.
Value filter_by_test(const Value& v, const List& args, bool keep, bool by_attr) {
  List items = as_list(v, "select");
  size_t k = 0;
  std::string attr;
  if (by_attr) {
    if (args.empty()) error("selectattr needs an attribute name");
    attr = expect_string(args[0], "selectattr");
    k = 1;
  }
  std::string test = k < args.size() ? expect_string(args[k], "select test") : "";
  List test_args(args.begin() + static_cast<std::ptrdiff_t>(std::min(k + 1, args.size())),
                 args.end());
  List out;
  for (const Value& item : items) {
    Value subject = by_attr ? attribute_of(item, attr) : item;
    bool pass = test.empty() ? subject.truthy() : apply_test(test, subject, test_args);
    if (pass == keep) out.push_back(item);
  }
  return Value::make_list(std::move(out));
}

}  // namespace

Value apply_filter(const std::string& name, const Value& v, const List& args,
                   const KwArgs& kwargs) {
  using K = Value::Kind;
  if (name == "trim") {
    const Value& chars = arg(args, kwargs, 0, "chars", kUndefined);
    return Value::string(
        strip(expect_string(v, "trim"), true, true, chars.is_string() ? chars.s : ""));
  }
  if (name == "upper") return Value::string(upper(expect_string(v, "upper")));
  if (name == "lower") return Value::string(lower(expect_string(v, "lower")));
  if (name == "title") return Value::string(title_case(expect_string(v, "title")));
  if (name == "capitalize") {
    std::string s = lower(expect_string(v, "capitalize"));
    if (!s.empty()) s[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(s[0])));
    return Value::string(s);
  }
  if (name == "length" || name == "count") {
    if (v.is_string()) return Value::integer(static_cast<int64_t>(utf8_length(v.s)));
    if (v.is_list()) return Value::integer(static_cast<int64_t>(v.list->size()));
    if (v.is_map()) return Value::integer(static_cast<int64_t>(v.map->items.size()));
    error(std::string("length of ") + v.type_name());
  }
  if (name == "first" || name == "last") {
    List items = as_list(v, name.c_str());
    if (items.empty()) return Value();
    return name == "first" ? items.front() : items.back();
  }
  if (name == "join") {
    std::string sep = arg(args, kwargs, 0, "d", Value::string("")).str();
    const Value& attr = arg(args, kwargs, 1, "attribute", kUndefined);
    std::string out;
    List items = as_list(v, "join");
    for (size_t k = 0; k < items.size(); ++k) {
      if (k) out += sep;
      out += attr.is_string() ? attribute_of(items[k], attr.s).str() : items[k].str();
    }
    return Value::string(out);
  }
  if (name == "default" || name == "d") {
    const Value& fallback = arg(args, kwargs, 0, "default_value", Value::string(""));
    bool boolean = arg(args, kwargs, 1, "boolean", Value::boolean(false)).truthy();
    return (v.is_undefined() || (boolean && !v.truthy())) ? fallback : v;
  }
  if (name == "tojson") {
    const Value& indent = arg(args, kwargs, 0, "indent", kUndefined);
    int width = indent.kind == K::kInt ? static_cast<int>(std::clamp<int64_t>(indent.i, 0, 64)) : 0;
    return Value::string(to_json(v, width));
  }
  if (name == "string") return Value::string(v.str());
  if (name == "int") {
    if (v.kind == K::kInt) return v;
    if (v.kind == K::kFloat) return Value::integer(static_cast<int64_t>(v.f));
    if (v.kind == K::kBool) return Value::integer(v.b ? 1 : 0);
    if (v.is_string()) {
      try {
        return Value::integer(std::stoll(strip(v.s, true, true)));
      } catch (const std::exception&) {
      }
    }
    return arg(args, kwargs, 0, "default", Value::integer(0));
  }
  if (name == "float") {
    if (v.is_number()) return Value::floating(v.as_double());
    if (v.is_string()) {
      try {
        return Value::floating(std::stod(strip(v.s, true, true)));
      } catch (const std::exception&) {
      }
    }
    return arg(args, kwargs, 0, "default", Value::floating(0.0));
  }
  if (name == "abs") {
    if (v.kind == K::kInt) return Value::integer(v.i < 0 ? -v.i : v.i);
    if (v.kind == K::kFloat) return Value::floating(std::fabs(v.f));
    error("abs expects a number");
  }
  if (name == "round") {
    if (!v.is_number()) error("round expects a number");
    int64_t digits = arg(args, kwargs, 0, "precision", Value::integer(0)).i;
    double scale = std::pow(10.0, static_cast<double>(digits));
    return Value::floating(std::round(v.as_double() * scale) / scale);
  }
  if (name == "list") return Value::make_list(as_list(v, "list"));
  if (name == "reverse") {
    if (v.is_string()) return Value::string(utf8_slice(v.s, utf8_length(v.s) - 1, -1, -1));
    List items = as_list(v, "reverse");
    std::reverse(items.begin(), items.end());
    return Value::make_list(std::move(items));
  }
  if (name == "items") return items_of(v);
  if (name == "dictsort") {
    Value pairs = items_of(v);
    std::stable_sort(pairs.list->begin(), pairs.list->end(), [](const Value& a, const Value& b) {
      return (*a.list)[0].s < (*b.list)[0].s;
    });
    return pairs;
  }
  if (name == "replace") {
    if (args.size() < 2) error("replace needs two arguments");
    int64_t count = args.size() > 2 && args[2].kind == K::kInt ? args[2].i : -1;
    return Value::string(
        replace_all(expect_string(v, "replace"), args[0].str(), args[1].str(), count));
  }
  if (name == "select") return filter_by_test(v, args, true, false);
  if (name == "reject") return filter_by_test(v, args, false, false);
  if (name == "selectattr") return filter_by_test(v, args, true, true);
  if (name == "rejectattr") return filter_by_test(v, args, false, true);
  if (name == "map") {
    const Value& attr = arg({}, kwargs, 0, "attribute", kUndefined);
    List out;
    for (const Value& item : as_list(v, "map")) {
      if (attr.is_string()) {
        out.push_back(attribute_of(item, attr.s));
      } else if (!args.empty() && args[0].is_string()) {
        out.push_back(apply_filter(args[0].s, item, List(args.begin() + 1, args.end()), {}));
      } else {
        error("map needs a filter name or attribute=");
      }
    }
    return Value::make_list(std::move(out));
  }
  if (name == "unique") {
    List out;
    for (const Value& item : as_list(v, "unique")) {
      if (std::none_of(out.begin(), out.end(), [&](const Value& x) { return equal(x, item); })) {
        out.push_back(item);
      }
    }
    return Value::make_list(std::move(out));
  }
  if (name == "sum") {
    Value total = Value::integer(0);
    for (const Value& item : as_list(v, "sum")) {
      if (!item.is_number()) error("sum expects numbers");
      if (total.kind == K::kInt && item.kind == K::kInt) {
        total.i += item.i;
      } else {
        total = Value::floating(total.as_double() + item.as_double());
      }
    }
    return total;
  }
  if (name == "min" || name == "max") {
    List items = as_list(v, name.c_str());
    if (items.empty()) return Value();
    Value best = items[0];
    for (const Value& item : items) {
      int c = compare(item, best);
      if (name == "min" ? c < 0 : c > 0) best = item;
    }
    return best;
  }
  if (name == "indent") {
    int64_t width = arg(args, kwargs, 0, "width", Value::integer(4)).i;
    bool first = arg(args, kwargs, 1, "first", Value::boolean(false)).truthy();
    std::string pad(static_cast<size_t>(std::clamp<int64_t>(width, 0, 256)), ' ');
    std::string s = expect_string(v, "indent"), out;
    for (size_t k = 0; k < s.size(); ++k) {
      out += s[k];
      if (s[k] == '\n' && k + 1 < s.size() && s[k + 1] != '\n') out += pad;
    }
    return Value::string(first && !s.empty() ? pad + out : out);
  }
  if (name == "safe") return v;
  error("unknown filter '" + name + "'");
}

Value call_method(const Value& obj, const std::string& name, const List& args,
                  const KwArgs& kwargs) {
  if (obj.is_string()) {
    const std::string& s = obj.s;
    const Value& chars = arg(args, kwargs, 0, "chars", kUndefined);
    std::string set = chars.is_string() ? chars.s : "";
    if (name == "strip") return Value::string(strip(s, true, true, set));
    if (name == "lstrip") return Value::string(strip(s, true, false, set));
    if (name == "rstrip") return Value::string(strip(s, false, true, set));
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      return apply_filter(name, obj, {}, {});
    }
    if (name == "startswith" || name == "endswith") {
      std::string affix = expect_string(arg(args, kwargs, 0, "prefix", kUndefined), name.c_str());
      bool ok =
          s.size() >= affix.size() &&
          (name == "startswith" ? s.compare(0, affix.size(), affix) == 0
                                : s.compare(s.size() - affix.size(), affix.size(), affix) == 0);
      return Value::boolean(ok);
    }
    if (name == "replace") return apply_filter("replace", obj, args, kwargs);
    if (name == "split") {
      const Value& sep = arg(args, kwargs, 0, "sep", kUndefined);
      List parts;
      if (sep.is_string() && !sep.s.empty()) {
        size_t k = 0;
        while (true) {
          size_t hit = s.find(sep.s, k);
          parts.push_back(Value::string(s.substr(k, hit == std::string::npos ? hit : hit - k)));
          if (hit == std::string::npos) break;
          k = hit + sep.s.size();
        }
      } else {
        size_t k = 0;
        while (k < s.size()) {
          while (k < s.size() && std::isspace(static_cast<unsigned char>(s[k]))) ++k;
          size_t start = k;
          while (k < s.size() && !std::isspace(static_cast<unsigned char>(s[k]))) ++k;
          if (k > start) parts.push_back(Value::string(s.substr(start, k - start)));
        }
      }
      return Value::make_list(std::move(parts));
    }
    if (name == "find") {
      size_t hit = s.find(expect_string(arg(args, kwargs, 0, "sub", kUndefined), "find"));
      return Value::integer(hit == std::string::npos ? -1 : static_cast<int64_t>(hit));
    }
    if (name == "join") {
      std::string out;
      List items = as_list(arg(args, kwargs, 0, "iterable", kUndefined), "join");
      for (size_t k = 0; k < items.size(); ++k) out += (k ? s : "") + items[k].str();
      return Value::string(out);
    }
  }
  if (obj.is_map()) {
    if (name == "get") {
      const Value& key = arg(args, kwargs, 0, "key", kUndefined);
      const Value* found = key.is_string() ? obj.map->find(key.s) : nullptr;
      return found ? *found : arg(args, kwargs, 1, "default", Value::none());
    }
    if (name == "items") return items_of(obj);
    if (name == "keys") return Value::make_list(as_list(obj, "keys"));
    if (name == "values") {
      List out;
      for (const auto& [k, value] : obj.map->items) out.push_back(value);
      return Value::make_list(std::move(out));
    }
  }
  error(std::string(obj.type_name()) + " has no method '" + name + "'");
}

Map builtin_globals() {
  Map g;
  g.set("range", Value::function([](const List& args, const KwArgs&) {
          int64_t start = 0, stop = 0, step = 1;
          for (const Value& a : args) {
            if (a.kind != Value::Kind::kInt) error("range expects integers");
          }
          if (args.size() == 1) {
            stop = args[0].i;
          } else if (args.size() >= 2) {
            start = args[0].i;
            stop = args[1].i;
            if (args.size() > 2) step = args[2].i;
          }
          if (step == 0) error("range step must not be zero");
          List out;
          for (int64_t k = start; step > 0 ? k < stop : k > stop; k += step) {
            if (out.size() >= 1000000) error("range too long");
            out.push_back(Value::integer(k));
          }
          return Value::make_list(std::move(out));
        }));
  auto make_map = [](const List& args, const KwArgs& kwargs) {
    Value m = Value::make_map();
    if (!args.empty() && args[0].is_map()) *m.map = *args[0].map;
    for (const auto& [k, v] : kwargs) m.map->set(k, v);
    return m;
  };
  g.set("namespace", Value::function(make_map));
  g.set("dict", Value::function(make_map));
  g.set("raise_exception", Value::function([](const List& args, const KwArgs&) -> Value {
          throw ChatTemplateError(args.empty() ? std::string("raise_exception") : args[0].str());
        }));
  g.set("strftime_now", Value::function([](const List& args, const KwArgs&) {
          std::string format = args.empty() ? "%Y-%m-%d" : args[0].str();
          std::time_t now = std::time(nullptr);
          std::tm local{};
          localtime_r(&now, &local);
          char buf[256];
          size_t n = std::strftime(buf, sizeof buf, format.c_str(), &local);
          return Value::string(std::string(buf, n));
        }));
  return g;
}

}  // namespace arbor::jinja
