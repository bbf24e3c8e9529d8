#include "tokenizer/jinja_lexer.h"

#include <cctype>

#include "tokenizer/chat_template.h"

namespace arbor::jinja {

std::string describe_position(std::string_view source, size_t pos) {
  size_t line = 1, col = 1;
  for (size_t k = 0; k < pos && k < source.size(); ++k) {
    if (source[k] == '\n') {
      ++line;
      col = 1;
    } else {
      ++col;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(col);
}

namespace {

class Lexer {
 public:
  explicit Lexer(std::string_view src) : src_(src) {}

  std::vector<Token> run() {
    bool strip_next = false;    // the previous tag ended with '-'
    bool trim_newline = false;  // the previous tag was a block or comment (trim_blocks)
    while (pos_ < src_.size()) {
      size_t tag = find_tag(pos_);
      std::string text(src_.substr(pos_, tag - pos_));
      size_t text_pos = pos_;
      if (strip_next) {
        size_t k = 0;
        while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
        text.erase(0, k);
      } else if (trim_newline && !text.empty() && text[0] == '\n') {
        text.erase(0, 1);
      }
      strip_next = trim_newline = false;
      if (tag == src_.size()) {
        add_text(std::move(text), text_pos);
        break;
      }
      char kind = src_[tag + 1];
      bool strip_before = tag + 2 < src_.size() && src_[tag + 2] == '-';
      if (strip_before) {
        size_t end = text.size();
        while (end > 0 && std::isspace(static_cast<unsigned char>(text[end - 1]))) --end;
        text.resize(end);
      } else if (kind == '%' || kind == '#') {
        lstrip_block(text, tag);
      }
      add_text(std::move(text), text_pos);
      pos_ = tag + 2 + (strip_before ? 1 : 0);
      if (kind == '#') {
        size_t close = src_.find("#}", pos_);
        if (close == std::string_view::npos) fail("unterminated comment", tag);
        strip_next = close > pos_ && src_[close - 1] == '-';
        trim_newline = !strip_next;
        pos_ = close + 2;
        continue;
      }
      bool is_expr = kind == '{';
      tokens_.push_back({is_expr ? Token::Type::kExprOpen : Token::Type::kStmtOpen, "", tag});
      lex_tag(is_expr, tag, strip_next);
      trim_newline = !is_expr && !strip_next;
    }
    tokens_.push_back({Token::Type::kEnd, "", src_.size()});
    return std::move(tokens_);
  }

 private:
  [[noreturn]] void fail(const std::string& what, size_t at) const {
    throw ChatTemplateError("chat template syntax error at " + describe_position(src_, at) + ": " +
                            what);
  }

  size_t find_tag(size_t from) const {
    for (size_t k = from; k + 1 < src_.size(); ++k) {
      if (src_[k] == '{' && (src_[k + 1] == '{' || src_[k + 1] == '%' || src_[k + 1] == '#')) {
        return k;
      }
    }
    return src_.size();
  }

  // lstrip_blocks: spaces/tabs between the start of the line and a block tag go.
  void lstrip_block(std::string& text, size_t tag) const {
    size_t end = text.size();
    while (end > 0 && (text[end - 1] == ' ' || text[end - 1] == '\t')) --end;
    size_t removed = text.size() - end;
    size_t line_start = tag - removed;  // source offset of the first removed char
    if (line_start == 0 || src_[line_start - 1] == '\n') text.resize(end);
  }

  void add_text(std::string text, size_t at) {
    if (!text.empty()) tokens_.push_back({Token::Type::kText, std::move(text), at});
  }

  // Tokens up to the closing }} or %}; sets strip_after when it was -}} or -%}.
  void lex_tag(bool is_expr, size_t open, bool& strip_after) {
    int depth = 0;  // open ( [ { inside the tag
    const char close_char = is_expr ? '}' : '%';
    while (true) {
      while (pos_ < src_.size() && std::isspace(static_cast<unsigned char>(src_[pos_]))) ++pos_;
      if (pos_ >= src_.size()) fail(is_expr ? "unterminated {{" : "unterminated {%", open);
      char c = src_[pos_];
      auto at = [&](size_t k) { return pos_ + k < src_.size() ? src_[pos_ + k] : '\0'; };
      if (depth == 0) {
        if (c == '-' && at(1) == close_char && at(2) == '}') {
          tokens_.push_back(
              {is_expr ? Token::Type::kExprClose : Token::Type::kStmtClose, "", pos_});
          pos_ += 3;
          strip_after = true;
          return;
        }
        if (c == close_char && at(1) == '}') {
          tokens_.push_back(
              {is_expr ? Token::Type::kExprClose : Token::Type::kStmtClose, "", pos_});
          pos_ += 2;
          strip_after = false;
          return;
        }
      }
      size_t start = pos_;
      if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        while (pos_ < src_.size() &&
               (std::isalnum(static_cast<unsigned char>(src_[pos_])) || src_[pos_] == '_')) {
          ++pos_;
        }
        tokens_.push_back(
            {Token::Type::kName, std::string(src_.substr(start, pos_ - start)), start});
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        while (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) ++pos_;
        bool is_float = false;
        if (pos_ + 1 < src_.size() && src_[pos_] == '.' &&
            std::isdigit(static_cast<unsigned char>(src_[pos_ + 1]))) {
          is_float = true;
          ++pos_;
          while (pos_ < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos_]))) {
            ++pos_;
          }
        }
        tokens_.push_back({is_float ? Token::Type::kFloat : Token::Type::kInt,
                           std::string(src_.substr(start, pos_ - start)), start});
      } else if (c == '\'' || c == '"') {
        tokens_.push_back({Token::Type::kString, lex_string(c), start});
      } else {
        static const char* const kOps[] = {"//", "**", "==", "!=", "<=", ">="};
        std::string op(1, c);
        for (const char* two : kOps) {
          if (c == two[0] && at(1) == two[1]) op = two;
        }
        if (std::string_view("()[]{}.,:|~+-*/%<>=!").find(c) == std::string_view::npos) {
          fail(std::string("unexpected character '") + c + "'", pos_);
        }
        if (c == '(' || c == '[' || c == '{') ++depth;
        if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
        pos_ += op.size();
        tokens_.push_back({Token::Type::kOp, op, start});
      }
    }
  }

  std::string lex_string(char quote) {
    size_t start = pos_++;
    std::string out;
    while (pos_ < src_.size() && src_[pos_] != quote) {
      char c = src_[pos_++];
      if (c == '\\' && pos_ < src_.size()) {
        char e = src_[pos_++];
        switch (e) {
          case 'n':
            out += '\n';
            break;
          case 't':
            out += '\t';
            break;
          case 'r':
            out += '\r';
            break;
          case 'b':
            out += '\b';
            break;
          case 'f':
            out += '\f';
            break;
          case '\\':
          case '\'':
          case '"':
            out += e;
            break;
          default:
            out += '\\';
            out += e;
        }
      } else {
        out += c;
      }
    }
    if (pos_ >= src_.size()) fail("unterminated string", start);
    ++pos_;
    return out;
  }

  std::string_view src_;
  size_t pos_ = 0;
  std::vector<Token> tokens_;
};

}  // namespace

std::vector<Token> tokenize(std::string_view source) {
  if (!source.empty() && source.back() == '\n') source.remove_suffix(1);
  return Lexer(source).run();
}

}  // namespace arbor::jinja
