#include "tokenizer/jinja_parser.h"

#include <algorithm>
#include <cstdlib>
#include <set>

#include "tokenizer/chat_template.h"
#include "tokenizer/jinja_lexer.h"

namespace arbor::jinja {

namespace {

using T = Token::Type;

class Parser {
 public:
  Parser(std::string_view src, std::vector<Token> tokens) : src_(src), tokens_(std::move(tokens)) {}

  Body parse_template() {
    std::string end;
    Body body = parse_body({}, end);
    return body;
  }

 private:
  // Depth guard for recursive descent.
  struct Nest {
    explicit Nest(Parser& p) : p_(p) {
      if (++p_.depth_ > kMaxNesting) p_.fail("template nested too deeply", p_.peek().pos);
    }
    ~Nest() { --p_.depth_; }
    Nest(const Nest&) = delete;
    Nest& operator=(const Nest&) = delete;
    Parser& p_;
  };

  [[noreturn]] void fail(const std::string& what, size_t at) const {
    throw ChatTemplateError("chat template syntax error at " + describe_position(src_, at) + ": " +
                            what);
  }

  const Token& peek(size_t ahead = 0) const {
    size_t k = std::min(pos_ + ahead, tokens_.size() - 1);
    return tokens_[k];
  }
  const Token& next() {
    const Token& t = peek();
    if (pos_ < tokens_.size() - 1) ++pos_;
    return t;
  }
  bool is_op(const char* op, size_t ahead = 0) const {
    return peek(ahead).type == T::kOp && peek(ahead).value == op;
  }
  bool is_name(const char* name, size_t ahead = 0) const {
    return peek(ahead).type == T::kName && peek(ahead).value == name;
  }
  void expect_op(const char* op) {
    if (!is_op(op)) fail(std::string("expected '") + op + "'", peek().pos);
    next();
  }
  void expect_type(T type, const char* what) {
    if (peek().type != type) fail(std::string("expected ") + what, peek().pos);
    next();
  }
  std::string expect_name() {
    if (peek().type != T::kName) fail("expected a name", peek().pos);
    return next().value;
  }

  // Statements until one of `ends` opens a tag ({% end... %}); its keyword goes to `ended`,
  // with the tokens after the keyword still unread.
  Body parse_body(const std::vector<std::string>& ends, std::string& ended) {
    Nest nest(*this);
    Body body;
    while (true) {
      const Token& t = peek();
      if (t.type == T::kEnd) {
        if (!ends.empty()) fail("unexpected end of template, expected " + ends.back(), t.pos);
        return body;
      }
      if (t.type == T::kText) {
        auto node = std::make_unique<Node>();
        node->kind = Node::Kind::kText;
        node->pos = t.pos;
        node->text = t.value;
        body.push_back(std::move(node));
        next();
      } else if (t.type == T::kExprOpen) {
        next();
        auto node = std::make_unique<Node>();
        node->kind = Node::Kind::kOutput;
        node->pos = t.pos;
        node->expr = parse_expr();
        expect_type(T::kExprClose, "'}}'");
        body.push_back(std::move(node));
      } else if (t.type == T::kStmtOpen) {
        size_t open = t.pos;
        if (peek(1).type != T::kName) fail("expected a statement name", peek(1).pos);
        std::string keyword = peek(1).value;
        if (std::find(ends.begin(), ends.end(), keyword) != ends.end()) {
          next();
          next();
          ended = keyword;
          return body;
        }
        next();
        next();
        auto node = parse_statement(keyword, open);
        if (node) body.push_back(std::move(node));
      } else {
        fail("unexpected token", t.pos);
      }
    }
  }

  std::unique_ptr<Node> parse_statement(const std::string& keyword, size_t open) {
    auto node = std::make_unique<Node>();
    node->pos = open;
    if (keyword == "if") {
      parse_if_rest(*node);
      return node;
    }
    if (keyword == "for") {
      node->kind = Node::Kind::kFor;
      node->targets.push_back(expect_name());
      while (is_op(",")) {
        next();
        node->targets.push_back(expect_name());
      }
      if (!is_name("in")) fail("expected 'in'", peek().pos);
      next();
      node->expr = parse_or();  // no `a if b else c` here: `if` filters the loop
      if (is_name("if")) {
        next();
        node->cond = parse_expr();
      }
      expect_type(T::kStmtClose, "'%}'");
      std::string ended;
      node->body = parse_body({"else", "endfor"}, ended);
      if (ended == "else") {
        expect_type(T::kStmtClose, "'%}'");
        node->else_body = parse_body({"endfor"}, ended);
      }
      expect_type(T::kStmtClose, "'%}'");
      return node;
    }
    if (keyword == "set") {
      node->targets.push_back(expect_name());
      if (is_op(".")) {
        next();
        node->attr = expect_name();
      }
      if (is_op("=")) {
        next();
        node->kind = Node::Kind::kSet;
        node->expr = parse_expr();
        expect_type(T::kStmtClose, "'%}'");
        return node;
      }
      if (!node->attr.empty()) fail("expected '='", peek().pos);
      expect_type(T::kStmtClose, "'%}'");
      node->kind = Node::Kind::kSetBlock;
      std::string ended;
      node->body = parse_body({"endset"}, ended);
      expect_type(T::kStmtClose, "'%}'");
      return node;
    }
    if (keyword == "break" || keyword == "continue") {
      node->kind = keyword == "break" ? Node::Kind::kBreak : Node::Kind::kContinue;
      expect_type(T::kStmtClose, "'%}'");
      return node;
    }
    if (keyword == "generation" || keyword == "endgeneration") {
      expect_type(T::kStmtClose, "'%}'");
      return nullptr;
    }
    fail("unknown statement '" + keyword + "'", open);
  }

  // After `{% if` or `{% elif`: condition, body, then elif/else/endif.
  void parse_if_rest(Node& node) {
    node.kind = Node::Kind::kIf;
    node.expr = parse_expr();
    expect_type(T::kStmtClose, "'%}'");
    std::string ended;
    node.body = parse_body({"elif", "else", "endif"}, ended);
    if (ended == "elif") {
      auto elif = std::make_unique<Node>();
      elif->pos = peek().pos;
      Nest nest(*this);
      parse_if_rest(*elif);
      node.else_body.push_back(std::move(elif));
      return;  // the nested if consumed endif
    }
    if (ended == "else") {
      expect_type(T::kStmtClose, "'%}'");
      node.else_body = parse_body({"endif"}, ended);
    }
    expect_type(T::kStmtClose, "'%}'");
  }

  ExprPtr make(Expr::Kind kind, size_t pos, std::string name = {}) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->pos = pos;
    e->name = std::move(name);
    return e;
  }
  ExprPtr binary(std::string op, ExprPtr a, ExprPtr b) {
    auto e = make(Expr::Kind::kBinary, a->pos, std::move(op));
    e->args.push_back(std::move(a));
    e->args.push_back(std::move(b));
    return checked(std::move(e));
  }
  // Sets the height of a new composite node; long operator or filter chains build deep
  // trees without deep parser recursion, so the limit is enforced here too.
  ExprPtr checked(ExprPtr e) {
    int h = 0;
    for (const auto& a : e->args) {
      if (a) h = std::max(h, a->height);
    }
    for (const auto& [k, v] : e->kwargs) h = std::max(h, v->height);
    e->height = h + 1;
    if (e->height > 2 * kMaxNesting) fail("expression nested too deeply", e->pos);
    return e;
  }

  ExprPtr parse_expr() {
    Nest nest(*this);
    ExprPtr value = parse_or();
    if (is_name("if")) {
      next();
      auto e = make(Expr::Kind::kCond, value->pos);
      ExprPtr cond = parse_or();
      ExprPtr otherwise;
      if (is_name("else")) {
        next();
        otherwise = parse_expr();
      }
      e->args.push_back(std::move(value));
      e->args.push_back(std::move(cond));
      e->args.push_back(std::move(otherwise));
      return checked(std::move(e));
    }
    return value;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      next();
      left = binary("or", std::move(left), parse_and());
    }
    return left;
  }
  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      next();
      left = binary("and", std::move(left), parse_not());
    }
    return left;
  }
  ExprPtr parse_not() {
    if (is_name("not")) {
      Nest nest(*this);
      auto e = make(Expr::Kind::kUnary, next().pos, "not");
      e->args.push_back(parse_not());
      return checked(std::move(e));
    }
    return parse_compare();
  }
  ExprPtr parse_compare() {
    ExprPtr left = parse_math1();
    while (true) {
      std::string op;
      if (peek().type == T::kOp &&
          (peek().value == "==" || peek().value == "!=" || peek().value == "<" ||
           peek().value == ">" || peek().value == "<=" || peek().value == ">=")) {
        op = next().value;
      } else if (is_name("in")) {
        next();
        op = "in";
      } else if (is_name("not") && is_name("in", 1)) {
        next();
        next();
        op = "not in";
      } else {
        return left;
      }
      left = binary(op, std::move(left), parse_math1());
    }
  }
  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      std::string op = next().value;
      left = binary(op, std::move(left), parse_concat());
    }
    return left;
  }
  ExprPtr parse_concat() {
    ExprPtr left = parse_math2();
    while (is_op("~")) {
      next();
      left = binary("~", std::move(left), parse_math2());
    }
    return left;
  }
  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      std::string op = next().value;
      left = binary(op, std::move(left), parse_pow());
    }
    return left;
  }
  ExprPtr parse_pow() {
    ExprPtr left = parse_unary();
    while (is_op("**")) {
      next();
      left = binary("**", std::move(left), parse_unary());
    }
    return left;
  }
  ExprPtr parse_unary() {
    Nest nest(*this);
    if (is_op("-") || is_op("+")) {
      const Token& t = next();
      auto e = make(Expr::Kind::kUnary, t.pos, t.value);
      e->args.push_back(parse_unary());
      return checked(std::move(e));
    }
    return parse_postfix(parse_primary());
  }

  ExprPtr parse_primary() {
    const Token& t = peek();
    switch (t.type) {
      case T::kString: {
        auto e = make(Expr::Kind::kLiteral, t.pos);
        std::string s = next().value;
        while (peek().type == T::kString) s += next().value;  // adjacent literals join
        e->literal = Value::string(std::move(s));
        return e;
      }
      case T::kInt: {
        auto e = make(Expr::Kind::kLiteral, t.pos);
        e->literal = Value::integer(std::strtoll(next().value.c_str(), nullptr, 10));
        return e;
      }
      case T::kFloat: {
        auto e = make(Expr::Kind::kLiteral, t.pos);
        e->literal = Value::floating(std::strtod(next().value.c_str(), nullptr));
        return e;
      }
      case T::kName: {
        const std::string& n = t.value;
        auto e = make(Expr::Kind::kLiteral, t.pos);
        if (n == "true" || n == "True") {
          e->literal = Value::boolean(true);
        } else if (n == "false" || n == "False") {
          e->literal = Value::boolean(false);
        } else if (n == "none" || n == "None") {
          e->literal = Value::none();
        } else {
          e = make(Expr::Kind::kName, t.pos, n);
        }
        next();
        return e;
      }
      case T::kOp:
        if (t.value == "(") {
          next();
          ExprPtr first = parse_expr();
          if (is_op(",")) {  // a tuple: treated as a list
            auto e = make(Expr::Kind::kList, t.pos);
            e->args.push_back(std::move(first));
            while (is_op(",")) {
              next();
              if (is_op(")")) break;
              e->args.push_back(parse_expr());
            }
            expect_op(")");
            return checked(std::move(e));
          }
          expect_op(")");
          return first;
        }
        if (t.value == "[") {
          auto e = make(Expr::Kind::kList, next().pos);
          while (!is_op("]")) {
            e->args.push_back(parse_expr());
            if (!is_op(",")) break;
            next();
          }
          expect_op("]");
          return checked(std::move(e));
        }
        if (t.value == "{") {
          auto e = make(Expr::Kind::kDict, next().pos);
          while (!is_op("}")) {
            e->args.push_back(parse_expr());
            expect_op(":");
            e->args.push_back(parse_expr());
            if (!is_op(",")) break;
            next();
          }
          expect_op("}");
          return checked(std::move(e));
        }
        break;
      default:
        break;
    }
    fail("expected an expression", t.pos);
  }

  void parse_call_args(Expr& e) {
    expect_op("(");
    while (!is_op(")")) {
      if (peek().type == T::kName && is_op("=", 1)) {
        std::string key = next().value;
        next();
        e.kwargs.emplace_back(key, parse_expr());
      } else {
        e.args.push_back(parse_expr());
      }
      if (!is_op(",")) break;
      next();
    }
    expect_op(")");
  }

  ExprPtr parse_postfix(ExprPtr e) {
    while (true) {
      if (is_op(".")) {
        next();
        auto a = make(Expr::Kind::kAttr, e->pos, expect_name());
        a->args.push_back(std::move(e));
        e = checked(std::move(a));
      } else if (is_op("[")) {
        next();
        ExprPtr parts[3];
        bool slice = false;
        for (int k = 0; k < 3; ++k) {
          if (!is_op(":") && !is_op("]")) parts[k] = parse_expr();
          if (k < 2 && is_op(":")) {
            slice = true;
            next();
          } else {
            break;
          }
        }
        expect_op("]");
        if (!slice && !parts[0]) fail("expected an index", e->pos);
        auto s = make(slice ? Expr::Kind::kSlice : Expr::Kind::kIndex, e->pos);
        s->args.push_back(std::move(e));
        s->args.push_back(std::move(parts[0]));
        if (slice) {
          s->args.push_back(std::move(parts[1]));
          s->args.push_back(std::move(parts[2]));
        }
        e = checked(std::move(s));
      } else if (is_op("(")) {
        auto c = make(Expr::Kind::kCall, e->pos);
        c->args.push_back(std::move(e));
        parse_call_args(*c);
        e = checked(std::move(c));
      } else if (is_op("|")) {
        next();
        auto f = make(Expr::Kind::kFilter, peek().pos, expect_name());
        f->args.push_back(std::move(e));
        if (is_op("(")) parse_call_args(*f);
        e = checked(std::move(f));
      } else if (is_name("is")) {
        next();
        auto t = make(Expr::Kind::kTest, peek().pos);
        if (is_name("not")) {
          next();
          t->negated = true;
        }
        t->name = expect_name();
        t->args.push_back(std::move(e));
        if (is_op("(")) {
          parse_call_args(*t);
        } else if (takes_bare_test_argument()) {
          t->args.push_back(parse_unary());
        }
        e = checked(std::move(t));
      } else {
        return e;
      }
    }
  }

  // `x is equalto 3`, `x is sameas none`: a test may take one argument without parentheses.
  bool takes_bare_test_argument() const {
    const Token& t = peek();
    if (t.type == T::kString || t.type == T::kInt || t.type == T::kFloat) return true;
    if (t.type != T::kName) return false;
    static const std::set<std::string> kStop = {"and", "or", "else", "if", "not", "in", "is"};
    return !kStop.count(t.value);
  }

  std::string_view src_;
  std::vector<Token> tokens_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

Body parse(std::string_view source) {
  Parser parser(source, tokenize(source));
  return parser.parse_template();
}

}  // namespace arbor::jinja
