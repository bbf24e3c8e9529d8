#include "tokenizer/jinja_value.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>

namespace arbor::jinja {

const Value* Map::find(const std::string& key) const {
  for (const auto& [k, v] : items) {
    if (k == key) return &v;
  }
  return nullptr;
}

void Map::set(const std::string& key, Value value) {
  for (auto& [k, v] : items) {
    if (k == key) {
      v = std::move(value);
      return;
    }
  }
  items.emplace_back(key, std::move(value));
}

Value Value::none() {
  Value v;
  v.kind = Kind::kNone;
  return v;
}
Value Value::boolean(bool x) {
  Value v;
  v.kind = Kind::kBool;
  v.b = x;
  return v;
}
Value Value::integer(int64_t x) {
  Value v;
  v.kind = Kind::kInt;
  v.i = x;
  return v;
}
Value Value::floating(double x) {
  Value v;
  v.kind = Kind::kFloat;
  v.f = x;
  return v;
}
Value Value::string(std::string x) {
  Value v;
  v.kind = Kind::kString;
  v.s = std::move(x);
  return v;
}
Value Value::make_list(List items) {
  Value v;
  v.kind = Kind::kList;
  v.list = std::make_shared<List>(std::move(items));
  return v;
}
Value Value::make_map() {
  Value v;
  v.kind = Kind::kMap;
  v.map = std::make_shared<Map>();
  return v;
}
Value Value::function(Function fn) {
  Value v;
  v.kind = Kind::kFunction;
  v.fn = std::make_shared<Function>(std::move(fn));
  return v;
}

bool Value::truthy() const {
  switch (kind) {
    case Kind::kUndefined:
    case Kind::kNone:
      return false;
    case Kind::kBool:
      return b;
    case Kind::kInt:
      return i != 0;
    case Kind::kFloat:
      return f != 0.0;
    case Kind::kString:
      return !s.empty();
    case Kind::kList:
      return !list->empty();
    case Kind::kMap:
      return !map->items.empty();
    case Kind::kFunction:
      return true;
  }
  return false;
}

namespace {

std::string float_text(double x) {
  if (std::isnan(x)) return "nan";
  if (std::isinf(x)) return x > 0 ? "inf" : "-inf";
  if (x == std::floor(x) && std::fabs(x) < 1e16) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.1f", x);
    return buf;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  // Shortest text that reads back the same value.
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, x);
    if (std::strtod(buf, nullptr) == x) break;
  }
  return buf;
}

std::string repr(const Value& v) {
  if (v.is_string()) {
    std::string out = "'";
    for (char c : v.s) {
      if (c == '\'' || c == '\\') out += '\\';
      out += c;
    }
    return out + "'";
  }
  return v.str();
}

void json_string(const std::string& s, std::string& out) {
  out += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      default:
        if (c < 0x20) {
          char buf[8];
          std::snprintf(buf, sizeof buf, "\\u%04x", c);
          out += buf;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  out += '"';
}

}  // namespace

std::string Value::str() const {
  switch (kind) {
    case Kind::kUndefined:
      return "";
    case Kind::kNone:
      return "None";
    case Kind::kBool:
      return b ? "True" : "False";
    case Kind::kInt:
      return std::to_string(i);
    case Kind::kFloat:
      return float_text(f);
    case Kind::kString:
      return s;
    case Kind::kList: {
      std::string out = "[";
      for (size_t k = 0; k < list->size(); ++k) {
        if (k) out += ", ";
        out += repr((*list)[k]);
      }
      return out + "]";
    }
    case Kind::kMap: {
      std::string out = "{";
      for (size_t k = 0; k < map->items.size(); ++k) {
        if (k) out += ", ";
        out += repr(Value::string(map->items[k].first)) + ": " + repr(map->items[k].second);
      }
      return out + "}";
    }
    case Kind::kFunction:
      return "<function>";
  }
  return "";
}

const char* Value::type_name() const {
  switch (kind) {
    case Kind::kUndefined:
      return "undefined";
    case Kind::kNone:
      return "none";
    case Kind::kBool:
      return "bool";
    case Kind::kInt:
      return "int";
    case Kind::kFloat:
      return "float";
    case Kind::kString:
      return "string";
    case Kind::kList:
      return "list";
    case Kind::kMap:
      return "map";
    case Kind::kFunction:
      return "function";
  }
  return "?";
}

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Value::Kind::kInt && b.kind == Value::Kind::kInt) return a.i == b.i;
    return a.as_double() == b.as_double();
  }
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return true;
    case Value::Kind::kBool:
      return a.b == b.b;
    case Value::Kind::kString:
      return a.s == b.s;
    case Value::Kind::kList:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k) {
        if (!equal((*a.list)[k], (*b.list)[k])) return false;
      }
      return true;
    case Value::Kind::kMap:
      if (a.map->items.size() != b.map->items.size()) return false;
      for (const auto& [key, value] : a.map->items) {
        const Value* other = b.map->find(key);
        if (!other || !equal(value, *other)) return false;
      }
      return true;
    case Value::Kind::kFunction:
      return a.fn == b.fn;
    default:
      return false;
  }
}

int compare(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) {
    if (a.kind == Value::Kind::kInt && b.kind == Value::Kind::kInt) {
      return a.i < b.i ? -1 : (a.i > b.i ? 1 : 0);
    }
    double x = a.as_double(), y = b.as_double();
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    int c = a.s.compare(b.s);
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  throw std::invalid_argument(std::string("cannot compare ") + a.type_name() + " with " +
                              b.type_name());
}

std::string to_json(const Value& v, int indent, int depth) {
  if (depth > 512) throw std::invalid_argument("tojson: value nested too deeply");
  std::string out;
  auto newline = [&](int level) {
    out += '\n';
    out.append(static_cast<size_t>(indent * level), ' ');
  };
  const char* item_sep = indent > 0 ? "," : ", ";
  switch (v.kind) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNone:
      return "null";
    case Value::Kind::kBool:
      return v.b ? "true" : "false";
    case Value::Kind::kInt:
      return std::to_string(v.i);
    case Value::Kind::kFloat:
      return float_text(v.f);
    case Value::Kind::kString:
      json_string(v.s, out);
      return out;
    case Value::Kind::kList:
      out += '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) out += item_sep;
        if (indent > 0) newline(depth + 1);
        out += to_json((*v.list)[k], indent, depth + 1);
      }
      if (indent > 0 && !v.list->empty()) newline(depth);
      return out + ']';
    case Value::Kind::kMap:
      out += '{';
      for (size_t k = 0; k < v.map->items.size(); ++k) {
        if (k) out += item_sep;
        if (indent > 0) newline(depth + 1);
        json_string(v.map->items[k].first, out);
        out += ": ";
        out += to_json(v.map->items[k].second, indent, depth + 1);
      }
      if (indent > 0 && !v.map->items.empty()) newline(depth);
      return out + '}';
    case Value::Kind::kFunction:
      throw std::invalid_argument("tojson: cannot serialize a function");
  }
  return out;
}

}  // namespace arbor::jinja
