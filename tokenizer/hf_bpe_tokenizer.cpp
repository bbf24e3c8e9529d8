#include "tokenizer/hf_bpe_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <fstream>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <vector>

#include <nlohmann/json.hpp>

#include "tokenizer/utf8.h"

namespace arbor {
namespace {

using json = nlohmann::json;

// A component of tokenizer.json that is malformed or not implemented; turned into a
// TokenizerError naming the file by the constructor.
struct FormatError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void append_utf8(std::string& out, uint32_t cp) {
  if (cp < 0x80) {
    out += char(cp);
  } else if (cp < 0x800) {
    out += char(0xC0 | (cp >> 6));
    out += char(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += char(0xE0 | (cp >> 12));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  } else {
    out += char(0xF0 | (cp >> 18));
    out += char(0x80 | ((cp >> 12) & 0x3F));
    out += char(0x80 | ((cp >> 6) & 0x3F));
    out += char(0x80 | (cp & 0x3F));
  }
}

// Decodes the valid UTF-8 character at s[i] (len bytes).
uint32_t code_point(std::string_view s, size_t i, size_t len) {
  const auto b = [&](size_t k) { return uint32_t(uint8_t(s[i + k])); };
  switch (len) {
    case 1:
      return b(0);
    case 2:
      return ((b(0) & 0x1F) << 6) | (b(1) & 0x3F);
    case 3:
      return ((b(0) & 0x0F) << 12) | ((b(1) & 0x3F) << 6) | (b(2) & 0x3F);
    default:
      return ((b(0) & 0x07) << 18) | ((b(1) & 0x3F) << 12) | ((b(2) & 0x3F) << 6) | (b(3) & 0x3F);
  }
}

// GPT-2's byte ↔ printable character table used by the ByteLevel components.
struct ByteLevelTable {
  std::array<std::string, 256> byte_to_char;
  std::unordered_map<uint32_t, uint8_t> char_to_byte;
  ByteLevelTable() {
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      const uint32_t cp = printable ? b : next++;
      append_utf8(byte_to_char[b], cp);
      char_to_byte[cp] = uint8_t(b);
    }
  }
};

const ByteLevelTable& byte_level_table() {
  static const ByteLevelTable table;
  return table;
}

std::string byte_level_encode(std::string_view raw) {
  const auto& table = byte_level_table();
  std::string out;
  out.reserve(raw.size() * 2);
  for (const char c : raw) out += table.byte_to_char[uint8_t(c)];
  return out;
}

// Linear time: builds a new string (replacing in place would move the tail each time).
void replace_all(std::string& s, std::string_view from, std::string_view to) {
  if (from.empty()) return;
  size_t pos = s.find(from);
  if (pos == std::string::npos) return;
  std::string out;
  out.reserve(s.size() + (to.size() > from.size() ? s.size() / 2 : 0));
  size_t last = 0;
  for (; pos != std::string::npos; pos = s.find(from, last)) {
    out.append(s, last, pos - last);
    out.append(to);
    last = pos + from.size();
  }
  out.append(s, last, std::string::npos);
  s = std::move(out);
}

const json& member(const json& j, const char* key, const char* what) {
  const auto it = j.find(key);
  if (it == j.end()) throw FormatError(std::string(what) + " has no \"" + key + "\"");
  return *it;
}

// A token id in tokenizer.json: an integer in [0, kMaxTokenId]. Anything else (a float such
// as 1e96, a string, an id that would make the token table absurdly large) is a FormatError:
// converting it with get<int32_t>() would be undefined behaviour or a huge allocation.
constexpr int64_t kMaxTokenId = (int64_t(1) << 24) - 1;  // real vocabularies: < 300k

int32_t json_token_id(const json& v, const std::string& what) {
  if (!v.is_number_integer()) throw FormatError(what + " is not an integer id: " + v.dump());
  if (!v.is_number_unsigned() && v.get<int64_t>() < 0)
    throw FormatError(what + " has a negative id " + v.dump());
  if (v.get<uint64_t>() > uint64_t(kMaxTokenId))
    throw FormatError(what + " has the id " + v.dump() + ", beyond the supported " +
                      std::to_string(kMaxTokenId));
  return int32_t(v.get<int64_t>());
}

// A non-negative integer count (Strip decoder start/stop).
size_t json_count(const json& v, const std::string& what) {
  if (!v.is_number_integer() || (!v.is_number_unsigned() && v.get<int64_t>() < 0))
    throw FormatError(what + " is not a non-negative integer: " + v.dump());
  return size_t(v.get<uint64_t>());
}

std::string type_of(const json& j, const char* what) {
  if (!j.is_object()) throw FormatError(std::string(what) + " is not an object");
  const auto& t = member(j, "type", what);
  if (!t.is_string()) throw FormatError(std::string(what) + " \"type\" is not a string");
  return t.get<std::string>();
}

// A Replace/Split "pattern": {"String": s} or {"Regex": r}; returns {text, is_regex}.
std::pair<std::string, bool> pattern_of(const json& j, const char* what) {
  const auto& p = member(j, "pattern", what);
  if (p.is_object() && p.contains("String")) return {p.at("String").get<std::string>(), false};
  if (p.is_object() && p.contains("Regex")) return {p.at("Regex").get<std::string>(), true};
  throw FormatError(std::string(what) + " has an unknown pattern " + p.dump());
}

bool is_whitespace_byte(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

// A compiled PCRE2 pattern (UTF, Unicode properties, JIT when available).
class Regex {
 public:
  Regex(const std::string& pattern, bool literal) {
    int error = 0;
    PCRE2_SIZE offset = 0;
    const uint32_t flags = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    code_ = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(), flags,
                          &error, &offset, nullptr);
    if (!code_) {
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(error, message, sizeof(message));
      throw FormatError("cannot compile regex " + json(pattern).dump() + " at offset " +
                        std::to_string(offset) + ": " + reinterpret_cast<const char*>(message));
    }
    pcre2_jit_compile(code_, PCRE2_JIT_COMPLETE);  // falls back to the interpreter on failure
  }
  Regex(const Regex&) = delete;
  Regex& operator=(const Regex&) = delete;
  ~Regex() { pcre2_code_free(code_); }

  // Calls f(begin, end) for every match in s (valid UTF-8), left to right.
  template <typename F>
  void for_each_match(std::string_view s, F&& f) const {
    pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_, nullptr);
    if (!md) throw std::bad_alloc();
    size_t start = 0;
    while (start <= s.size()) {
      const int rc = pcre2_match(code_, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), start,
                                 PCRE2_NO_UTF_CHECK, md, nullptr);
      if (rc < 0) break;  // PCRE2_ERROR_NOMATCH or a resource limit: the rest is one gap
      const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
      size_t b = ov[0], e = ov[1];
      if (e == b) {  // an empty match: step over one character
        if (b >= s.size()) break;
        start = b + std::max<size_t>(1, utf8_char_length(s.substr(b)));
        continue;
      }
      f(b, e);
      start = e;
    }
    pcre2_match_data_free(md);
  }

 private:
  pcre2_code* code_ = nullptr;
};

struct NormalizerStep {
  enum Kind { kPrepend, kReplace } kind;
  std::string a, b;  // Prepend: a = prefix; Replace: a → b
};

struct PreTokenizerStep {
  enum Kind { kSplit, kByteLevel, kMetaspace } kind;
  std::shared_ptr<Regex> regex;   // kSplit; kByteLevel with use_regex
  bool remove = false;            // kSplit: behavior "Removed" (else "Isolated")
  bool add_prefix_space = false;  // kByteLevel
  std::string replacement;        // kMetaspace
  std::string prepend_scheme;     // kMetaspace: always / first / never
  bool split = false;             // kMetaspace
};

struct DecoderStep {
  enum Kind { kReplace, kByteFallback, kFuse, kStrip, kByteLevel, kMetaspace } kind;
  std::string a, b;  // kReplace: a → b; kStrip: a = content; kMetaspace: a = replacement
  size_t start = 0, stop = 0;
  bool prepend = true;  // kMetaspace: strip the leading space of the first token
};

struct AddedToken {
  int32_t id;
  std::string content;
  bool special, lstrip, rstrip, single_word;
};

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // "▁"

constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

bool is_word_byte(unsigned char c) {
  return c >= 0x80 || std::isalnum(c) || c == '_';
}

}  // namespace

struct HfBpeTokenizer::Impl {
  std::filesystem::path file;
  HfBpeOptions options;

  // Vocabulary: id → token string (tokenizer.json spelling), and the model's string → id.
  std::vector<std::string> pieces;
  std::vector<uint8_t> special;  // id → special added token
  std::vector<uint8_t> added;    // id → added token
  std::unordered_map<std::string, int32_t> vocab;
  // (left id << 32 | right id) → (rank, merged id)
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges;
  std::optional<int32_t> unk_id;
  bool byte_fallback = false;
  bool fuse_unk = false;
  bool ignore_merges = false;
  bool byte_level = false;  // a ByteLevel pre-tokenizer: the model sees bytes as characters
  // No pre-tokenizer and no token has "▁" after another character (SentencePiece-style
  // vocabularies): no merge can cross the start of a "▁" run, so BPE runs word by word there
  // (same result, cacheable words) instead of on the whole text at once.
  bool split_at_spaces = false;
  std::array<int32_t, 256> byte_fallback_ids{};  // <0xXX> ids (byte_fallback)
  std::array<int32_t, 256> byte_char_ids{};      // id of each byte's character (byte_level)

  std::vector<NormalizerStep> normalizer;
  std::vector<PreTokenizerStep> pre_tokenizer;
  std::vector<DecoderStep> decoder;

  std::vector<AddedToken> added_tokens;
  std::array<std::vector<size_t>, 256> added_by_first_byte;  // indices, longest first

  std::vector<int32_t> prefix, suffix;  // TemplateProcessing "single" around $A
  std::optional<int32_t> bos, eos;

  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>> cache;
  static constexpr size_t kMaxCacheEntries = 1 << 18;

  std::optional<int32_t> token_id(const std::string& s) const {
    for (const auto& t : added_tokens) {
      if (t.content == s) return t.id;
    }
    if (const auto it = vocab.find(s); it != vocab.end()) return it->second;
    return std::nullopt;
  }

  void load(const json& j);
  void load_model(const json& m);
  void load_normalizer(const json& n);
  void load_pre_tokenizer(const json& p);
  void load_post_processor(const json& p);
  void load_decoder(const json& d);

  void encode_segment(std::string_view text, bool first, std::vector<int32_t>& out) const;
  void encode_word(std::string_view word, std::vector<int32_t>& out) const;
  void bpe(std::string_view word, std::vector<int32_t>& out) const;
};

void HfBpeTokenizer::Impl::load(const json& j) {
  if (!j.is_object()) throw FormatError("not a JSON object");
  load_model(member(j, "model", "tokenizer.json"));

  // Added tokens.
  if (const auto it = j.find("added_tokens"); it != j.end() && !it->is_null()) {
    if (!it->is_array()) throw FormatError("\"added_tokens\" is not an array");
    for (const auto& t : *it) {
      if (!t.is_object()) throw FormatError("an added token is not an object");
      const json& content = member(t, "content", "added token");
      if (!content.is_string()) throw FormatError("an added token's content is not a string");
      AddedToken a{json_token_id(member(t, "id", "added token"),
                                 "added token " + content.get<std::string>()),
                   content.get<std::string>(),
                   t.value("special", false),
                   t.value("lstrip", false),
                   t.value("rstrip", false),
                   t.value("single_word", false)};
      if (a.content.empty()) throw FormatError("an added token is empty");
      added_tokens.push_back(std::move(a));
    }
  }
  int32_t size = int32_t(pieces.size());
  for (const auto& t : added_tokens) size = std::max(size, t.id + 1);
  pieces.resize(size_t(size));
  special.assign(size_t(size), 0);
  added.assign(size_t(size), 0);
  for (const auto& t : added_tokens) {
    pieces[size_t(t.id)] = t.content;
    special[size_t(t.id)] = t.special;
    added[size_t(t.id)] = 1;
  }
  for (size_t i = 0; i < added_tokens.size(); ++i) {
    added_by_first_byte[uint8_t(added_tokens[i].content[0])].push_back(i);
  }
  for (auto& list : added_by_first_byte) {
    std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
      return added_tokens[a].content.size() > added_tokens[b].content.size();
    });
  }

  if (const auto it = j.find("normalizer"); it != j.end() && !it->is_null()) load_normalizer(*it);
  if (const auto it = j.find("pre_tokenizer"); it != j.end() && !it->is_null()) {
    load_pre_tokenizer(*it);
  }
  if (const auto it = j.find("post_processor"); it != j.end() && !it->is_null()) {
    load_post_processor(*it);
  }
  for (const auto* ids : {&prefix, &suffix})
    for (int32_t id : *ids)
      if (size_t(id) >= pieces.size())
        throw FormatError("TemplateProcessing id " + std::to_string(id) +
                          " is not in the vocabulary");
  if (const auto it = j.find("decoder"); it != j.end() && !it->is_null()) load_decoder(*it);

  if (!byte_level && pre_tokenizer.empty()) {
    split_at_spaces = std::none_of(vocab.begin(), vocab.end(), [](const auto& entry) {
      const std::string& t = entry.first;
      for (size_t pos = t.find(kSpaceSymbol); pos != std::string::npos;
           pos = t.find(kSpaceSymbol, pos + 1)) {
        if (pos > 0 &&
            (pos < kSpaceSymbol.size() ||
             t.compare(pos - kSpaceSymbol.size(), kSpaceSymbol.size(), kSpaceSymbol) != 0)) {
          return true;
        }
      }
      return false;
    });
  }
  if (byte_level) {
    const auto& table = byte_level_table();
    for (int b = 0; b < 256; ++b) {
      const auto it = vocab.find(table.byte_to_char[size_t(b)]);
      if (it == vocab.end()) {
        throw FormatError("byte-level vocabulary lacks the token for byte " + std::to_string(b));
      }
      byte_char_ids[size_t(b)] = it->second;
    }
  }

  // BOS/EOS: tokenizer_config.json names them; else the template's first/last special token.
  const auto resolve = [&](const std::optional<std::string>& name, const char* what) {
    std::optional<int32_t> id;
    if (name) {
      id = token_id(*name);
      if (!id) throw FormatError(std::string(what) + " " + *name + " is not in the vocabulary");
    }
    return id;
  };
  bos = resolve(options.bos_token, "bos_token");
  eos = resolve(options.eos_token, "eos_token");
  if (!bos && !prefix.empty()) bos = prefix.front();
  if (!eos && !suffix.empty()) eos = suffix.back();
  if (options.add_bos) {
    if (*options.add_bos && !bos) throw FormatError("add_bos_token is set but there is no BOS");
    prefix.clear();
    if (*options.add_bos) prefix.push_back(*bos);
  }
  if (options.add_eos) {
    if (*options.add_eos && !eos) throw FormatError("add_eos_token is set but there is no EOS");
    suffix.clear();
    if (*options.add_eos) suffix.push_back(*eos);
  }
}

void HfBpeTokenizer::Impl::load_model(const json& m) {
  if (const auto type = type_of(m, "model"); type != "BPE") {
    throw FormatError("model type " + type + " is not supported (only BPE)");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (const auto it = m.find(key);
        it != m.end() && !it->is_null() && !it->get<std::string>().empty()) {
      throw FormatError(std::string("BPE ") + key + " is not supported");
    }
  }
  const auto& v = member(m, "vocab", "model");
  if (!v.is_object() || v.empty()) throw FormatError("model \"vocab\" is not a non-empty object");
  vocab.reserve(v.size());
  int32_t max_id = -1;
  for (const auto& [token, id_json] : v.items()) {
    const int32_t id = json_token_id(id_json, "vocab token " + token);
    vocab.emplace(token, id);
    max_id = std::max(max_id, id);
  }
  pieces.resize(size_t(max_id) + 1);
  for (const auto& [token, id] : vocab) pieces[size_t(id)] = token;

  const auto& ms = member(m, "merges", "model");
  if (!ms.is_array()) throw FormatError("model \"merges\" is not an array");
  merges.reserve(ms.size());
  int32_t rank = 0;
  for (const auto& merge : ms) {
    std::string left, right;
    if (merge.is_string()) {
      const auto& s = merge.get_ref<const std::string&>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        throw FormatError("merge \"" + s + "\" is not two tokens separated by one space");
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      throw FormatError("merge " + merge.dump() + " is not a pair");
    }
    const auto l = vocab.find(left), r = vocab.find(right), n = vocab.find(left + right);
    if (l == vocab.end() || r == vocab.end() || n == vocab.end()) {
      throw FormatError("merge " + merge.dump() + " uses a token not in the vocabulary");
    }
    const uint64_t key = (uint64_t(uint32_t(l->second)) << 32) | uint32_t(r->second);
    merges.emplace(key, std::make_pair(rank++, n->second));  // the first (best) rank wins
  }

  if (const auto it = m.find("unk_token"); it != m.end() && !it->is_null()) {
    const auto u = vocab.find(it->get<std::string>());
    if (u == vocab.end()) throw FormatError("unk_token is not in the vocabulary");
    unk_id = u->second;
  }
  byte_fallback = m.value("byte_fallback", false);
  fuse_unk = m.value("fuse_unk", false);
  ignore_merges = m.value("ignore_merges", false);
  if (byte_fallback) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof(name), "<0x%02X>", b);
      const auto f = vocab.find(name);
      byte_fallback_ids[size_t(b)] = f == vocab.end() ? -1 : f->second;
    }
  }
}

void HfBpeTokenizer::Impl::load_normalizer(const json& n) {
  const auto type = type_of(n, "normalizer");
  if (type == "Sequence") {
    for (const auto& s : member(n, "normalizers", "normalizer")) load_normalizer(s);
  } else if (type == "Prepend") {
    normalizer.push_back({NormalizerStep::kPrepend, member(n, "prepend", "Prepend"), ""});
  } else if (type == "Replace") {
    const auto [pattern, regex] = pattern_of(n, "Replace normalizer");
    if (regex) throw FormatError("Replace normalizer with a Regex pattern is not supported");
    normalizer.push_back({NormalizerStep::kReplace, pattern, member(n, "content", "Replace")});
  } else {
    throw FormatError("normalizer " + type + " is not supported");
  }
}

void HfBpeTokenizer::Impl::load_pre_tokenizer(const json& p) {
  const auto type = type_of(p, "pre_tokenizer");
  if (type == "Sequence") {
    for (const auto& s : member(p, "pretokenizers", "pre_tokenizer")) load_pre_tokenizer(s);
    return;
  }
  PreTokenizerStep step{};
  if (type == "Split") {
    const auto [pattern, regex] = pattern_of(p, "Split pre_tokenizer");
    const auto behavior = member(p, "behavior", "Split").get<std::string>();
    if (behavior != "Isolated" && behavior != "Removed") {
      throw FormatError("Split behavior " + behavior + " is not supported");
    }
    if (p.value("invert", false)) throw FormatError("Split with invert=true is not supported");
    step.kind = PreTokenizerStep::kSplit;
    step.regex = std::make_shared<Regex>(pattern, !regex);
    step.remove = behavior == "Removed";
  } else if (type == "ByteLevel") {
    step.kind = PreTokenizerStep::kByteLevel;
    step.add_prefix_space = p.value("add_prefix_space", true);
    if (p.value("use_regex", true)) step.regex = std::make_shared<Regex>(kGpt2Pattern, false);
    byte_level = true;
  } else if (type == "Metaspace") {
    step.kind = PreTokenizerStep::kMetaspace;
    step.replacement = p.value("replacement", std::string("\xE2\x96\x81"));
    step.prepend_scheme = p.value("prepend_scheme", std::string());
    if (step.prepend_scheme.empty()) {
      step.prepend_scheme = p.value("add_prefix_space", true) ? "always" : "never";
    }
    step.split = p.value("split", true);
  } else {
    throw FormatError("pre_tokenizer " + type + " is not supported");
  }
  pre_tokenizer.push_back(std::move(step));
}

void HfBpeTokenizer::Impl::load_post_processor(const json& p) {
  const auto type = type_of(p, "post_processor");
  if (type == "Sequence") {
    for (const auto& s : member(p, "processors", "post_processor")) load_post_processor(s);
  } else if (type == "ByteLevel") {
    // Only adjusts offsets.
  } else if (type == "TemplateProcessing") {
    const auto& specials = member(p, "special_tokens", "TemplateProcessing");
    bool seen_a = false;
    for (const auto& item : member(p, "single", "TemplateProcessing")) {
      if (item.contains("Sequence")) {
        seen_a = true;
      } else if (item.contains("SpecialToken")) {
        const auto name = item.at("SpecialToken").at("id").get<std::string>();
        const auto it = specials.find(name);
        if (it == specials.end()) {
          throw FormatError("TemplateProcessing special token " + name + " is not defined");
        }
        for (const auto& id : member(*it, "ids", "TemplateProcessing special token")) {
          (seen_a ? suffix : prefix).push_back(json_token_id(id, "TemplateProcessing " + name));
        }
      } else {
        throw FormatError("TemplateProcessing item " + item.dump() + " is not understood");
      }
    }
  } else {
    throw FormatError("post_processor " + type + " is not supported");
  }
}

void HfBpeTokenizer::Impl::load_decoder(const json& d) {
  const auto type = type_of(d, "decoder");
  DecoderStep step{};
  if (type == "Sequence") {
    for (const auto& s : member(d, "decoders", "decoder")) load_decoder(s);
    return;
  } else if (type == "Replace") {
    const auto [pattern, regex] = pattern_of(d, "Replace decoder");
    if (regex) throw FormatError("Replace decoder with a Regex pattern is not supported");
    step = {DecoderStep::kReplace, pattern, member(d, "content", "Replace decoder")};
  } else if (type == "ByteFallback") {
    step.kind = DecoderStep::kByteFallback;
  } else if (type == "Fuse") {
    step.kind = DecoderStep::kFuse;
  } else if (type == "Strip") {
    step.kind = DecoderStep::kStrip;
    step.a = member(d, "content", "Strip decoder").get<std::string>();
    step.start = json_count(member(d, "start", "Strip decoder"), "Strip decoder start");
    step.stop = json_count(member(d, "stop", "Strip decoder"), "Strip decoder stop");
  } else if (type == "ByteLevel") {
    step.kind = DecoderStep::kByteLevel;
  } else if (type == "Metaspace") {
    step.kind = DecoderStep::kMetaspace;
    step.a = d.value("replacement", std::string("\xE2\x96\x81"));
    const auto scheme = d.value("prepend_scheme", std::string());
    step.prepend = scheme.empty() ? d.value("add_prefix_space", true) : scheme != "never";
  } else {
    throw FormatError("decoder " + type + " is not supported");
  }
  decoder.push_back(std::move(step));
}

// Normalizes and pre-tokenizes one stretch of text between added tokens, then runs BPE on
// each pre-token. `first`: the stretch starts the input (Metaspace prepend_scheme "first").
void HfBpeTokenizer::Impl::encode_segment(std::string_view text, bool first,
                                          std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::string normalized;
  const bool normalize = !normalizer.empty();
  if (normalize) {
    normalized.assign(text);
    for (const auto& step : normalizer) {
      if (step.kind == NormalizerStep::kPrepend) {
        if (!normalized.empty()) normalized.insert(0, step.a);
      } else {
        replace_all(normalized, step.a, step.b);
      }
    }
    text = normalized;
  }
  if (pre_tokenizer.empty()) {
    if (!split_at_spaces) {
      encode_word(text, out);
      return;
    }
    size_t begin = 0;
    for (size_t pos = text.find(kSpaceSymbol); pos != std::string_view::npos;
         pos = text.find(kSpaceSymbol, pos + kSpaceSymbol.size())) {
      if (pos == begin ||
          (pos >= kSpaceSymbol.size() &&
           text.compare(pos - kSpaceSymbol.size(), kSpaceSymbol.size(), kSpaceSymbol) == 0)) {
        continue;  // inside a run of "▁" (or at the start)
      }
      encode_word(text.substr(begin, pos - begin), out);
      begin = pos;
    }
    encode_word(text.substr(begin), out);
    return;
  }
  // Pre-tokens as views into `text` or into owned strings when a step rewrites them.
  std::vector<std::string_view> words{text};
  std::deque<std::string> owned;  // stable addresses: `words` views into it
  std::vector<std::string_view> next;
  for (const auto& step : pre_tokenizer) {
    next.clear();
    for (size_t w = 0; w < words.size(); ++w) {
      std::string_view word = words[w];
      if (step.kind == PreTokenizerStep::kMetaspace) {
        std::string s(word);
        replace_all(s, " ", step.replacement);
        const bool prepend =
            step.prepend_scheme == "always" || (step.prepend_scheme == "first" && first && w == 0);
        if (prepend && s.compare(0, step.replacement.size(), step.replacement) != 0) {
          s.insert(0, step.replacement);
        }
        owned.push_back(std::move(s));
        word = owned.back();
        if (!step.split) {
          next.push_back(word);
          continue;
        }
        size_t begin = 0;  // split before each replacement char (MergedWithNext)
        for (size_t pos = word.find(step.replacement, 1); pos != std::string_view::npos;
             pos = word.find(step.replacement, pos + 1)) {
          next.push_back(word.substr(begin, pos - begin));
          begin = pos;
        }
        next.push_back(word.substr(begin));
        continue;
      }
      if (step.kind == PreTokenizerStep::kByteLevel && step.add_prefix_space && w == 0 &&
          !word.empty() && word[0] != ' ') {
        owned.push_back(" " + std::string(word));
        word = owned.back();
      }
      if (!step.regex) {
        next.push_back(word);
        continue;
      }
      size_t last = 0;
      const bool remove = step.kind == PreTokenizerStep::kSplit && step.remove;
      step.regex->for_each_match(word, [&](size_t b, size_t e) {
        if (b > last) next.push_back(word.substr(last, b - last));
        if (!remove) next.push_back(word.substr(b, e - b));
        last = e;
      });
      if (last < word.size()) next.push_back(word.substr(last));
    }
    std::swap(words, next);
  }
  for (const auto word : words) {
    if (!word.empty()) encode_word(word, out);
  }
}

void HfBpeTokenizer::Impl::encode_word(std::string_view word, std::vector<int32_t>& out) const {
  if (word.size() > kMaxCachedWordBytes) {
    bpe(word, out);
    return;
  }
  thread_local std::string key;
  key.assign(word);
  {
    std::lock_guard lock(cache_mutex);
    if (const auto it = cache.find(key); it != cache.end()) {
      out.insert(out.end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t begin = out.size();
  bpe(word, out);
  std::vector<int32_t> ids(out.begin() + std::ptrdiff_t(begin), out.end());
  std::lock_guard lock(cache_mutex);
  if (cache.size() >= kMaxCacheEntries) cache.clear();
  cache.emplace(key, std::move(ids));
}

// BPE on one pre-token, HF's order: repeatedly merge the adjacent pair of lowest rank, the
// leftmost one among equals.
void HfBpeTokenizer::Impl::bpe(std::string_view word, std::vector<int32_t>& out) const {
  if (ignore_merges) {
    const auto it = vocab.find(byte_level ? byte_level_encode(word) : std::string(word));
    if (it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // -1: none
    bool alive;
  };
  thread_local std::vector<Symbol> symbols;
  symbols.clear();
  const auto push = [&](int32_t id) {
    const auto n = int32_t(symbols.size());
    symbols.push_back({id, n - 1, n + 1, true});
  };
  if (byte_level) {
    for (const char c : word) push(byte_char_ids[uint8_t(c)]);
  } else {
    bool last_unk = false;
    for (size_t i = 0; i < word.size();) {
      const size_t len = std::max<size_t>(1, utf8_char_length(word.substr(i)));
      const auto it = vocab.find(std::string(word.substr(i, len)));
      if (it != vocab.end()) {
        push(it->second);
        last_unk = false;
      } else {
        bool done = false;
        if (byte_fallback) {
          done = true;
          for (size_t k = 0; k < len; ++k)
            done = done && byte_fallback_ids[uint8_t(word[i + k])] >= 0;
          if (done) {
            for (size_t k = 0; k < len; ++k) push(byte_fallback_ids[uint8_t(word[i + k])]);
            last_unk = false;
          }
        }
        if (!done) {
          if (!unk_id) {
            throw TokenizerError("tokenizer.json " + file.string() + ": no unk_token for text " +
                                 std::string(word.substr(i, len)));
          }
          if (!(fuse_unk && last_unk)) push(*unk_id);
          last_unk = true;
        }
      }
      i += len;
    }
  }
  if (symbols.empty()) return;
  symbols.back().next = -1;

  struct Candidate {
    int32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  thread_local std::vector<Candidate> heap;
  heap.clear();
  const auto consider = [&](int32_t pos) {
    const int32_t next = symbols[size_t(pos)].next;
    if (next < 0) return;
    const int32_t l = symbols[size_t(pos)].id, r = symbols[size_t(next)].id;
    const auto it = merges.find((uint64_t(uint32_t(l)) << 32) | uint32_t(r));
    if (it == merges.end()) return;
    heap.push_back({it->second.first, pos, l, r});
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int32_t i = 0; i + 1 < int32_t(symbols.size()); ++i) consider(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate c = heap.back();
    heap.pop_back();
    Symbol& left = symbols[size_t(c.pos)];
    if (!left.alive || left.id != c.left || left.next < 0) continue;
    Symbol& right = symbols[size_t(left.next)];
    if (right.id != c.right) continue;  // stale: a neighbour changed since
    left.id = merges.find((uint64_t(uint32_t(c.left)) << 32) | uint32_t(c.right))->second.second;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[size_t(right.next)].prev = c.pos;
    if (left.prev >= 0) consider(left.prev);
    consider(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = symbols[size_t(i)].next) out.push_back(symbols[size_t(i)].id);
}

HfBpeTokenizer::HfBpeTokenizer(const std::filesystem::path& tokenizer_json, HfBpeOptions options)
    : impl_(std::make_unique<Impl>()) {
  const std::string name = tokenizer_json.string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(tokenizer_json, ec)) {
    throw TokenizerError("cannot read " + name + ": not a file");
  }
  std::ifstream in(tokenizer_json, std::ios::binary);
  if (!in) throw TokenizerError("cannot read " + name);
  std::ostringstream text;
  text << in.rdbuf();
  load(text.str(), tokenizer_json, std::move(options));
}

HfBpeTokenizer::HfBpeTokenizer(std::string_view json_text, const std::string& name,
                               HfBpeOptions options)
    : impl_(std::make_unique<Impl>()) {
  load(json_text, name, std::move(options));
}

void HfBpeTokenizer::load(std::string_view json_text, const std::filesystem::path& file,
                          HfBpeOptions options) {
  impl_->file = file;
  impl_->options = std::move(options);
  const std::string name = file.string();
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::exception& e) {
    throw TokenizerError(name + " is not valid JSON: " + e.what());
  }
  try {
    impl_->load(j);
  } catch (const FormatError& e) {
    throw TokenizerError(name + ": " + e.what());
  } catch (const json::exception& e) {
    throw TokenizerError(name + ": unexpected structure: " + e.what());
  }
}

HfBpeTokenizer::~HfBpeTokenizer() = default;

std::vector<int32_t> HfBpeTokenizer::encode(std::string_view text, bool add_special_tokens) const {
  const Impl& m = *impl_;
  std::string sanitized;
  if (!is_valid_utf8(text)) {
    sanitized = sanitize_utf8(text);
    text = sanitized;
  }
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 4);
  if (add_special_tokens) out.insert(out.end(), m.prefix.begin(), m.prefix.end());

  // Added tokens, leftmost-longest, split out of the raw text first.
  size_t segment = 0;  // start of the text not yet encoded
  bool first = true;
  for (size_t i = 0; i < text.size(); ++i) {
    const auto& candidates = m.added_by_first_byte[uint8_t(text[i])];
    if (candidates.empty()) continue;
    const AddedToken* match = nullptr;
    for (const size_t k : candidates) {
      const auto& t = m.added_tokens[k];
      if (text.compare(i, t.content.size(), t.content) != 0) continue;
      if (t.single_word) {
        const size_t end = i + t.content.size();
        if ((i > 0 && is_word_byte(uint8_t(text[i - 1]))) ||
            (end < text.size() && is_word_byte(uint8_t(text[end])))) {
          continue;
        }
      }
      match = &t;
      break;
    }
    if (!match) continue;
    size_t before_end = i, after = i + match->content.size();
    if (match->lstrip) {
      while (before_end > segment && is_whitespace_byte(text[before_end - 1])) --before_end;
    }
    if (match->rstrip) {
      while (after < text.size() && is_whitespace_byte(text[after])) ++after;
    }
    m.encode_segment(text.substr(segment, before_end - segment), first, out);
    out.push_back(match->id);
    first = false;
    segment = after;
    i = after - 1;
  }
  m.encode_segment(text.substr(segment), first, out);

  if (add_special_tokens) out.insert(out.end(), m.suffix.begin(), m.suffix.end());
  return out;
}

std::string HfBpeTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  const Impl& m = *impl_;
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (const int32_t id : ids) {
    if (id < 0 || size_t(id) >= m.pieces.size()) {
      throw TokenizerError("token id " + std::to_string(id) + " is out of range [0, " +
                           std::to_string(m.pieces.size()) + ")");
    }
    if (skip_special && m.special[size_t(id)]) continue;
    tokens.push_back(m.pieces[size_t(id)]);
  }
  for (const auto& step : m.decoder) {
    switch (step.kind) {
      case DecoderStep::kReplace:
        for (auto& t : tokens) replace_all(t, step.a, step.b);
        break;
      case DecoderStep::kByteFallback: {
        std::vector<std::string> result;
        std::string bytes;
        size_t count = 0;
        const auto flush = [&] {
          if (count == 0) return;
          if (is_valid_utf8(bytes)) {
            result.push_back(bytes);
          } else {
            for (size_t k = 0; k < count; ++k) result.emplace_back(kReplacementChar);
          }
          bytes.clear();
          count = 0;
        };
        for (auto& t : tokens) {
          unsigned value = 0;
          if (t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
              std::isxdigit(uint8_t(t[3])) && std::isxdigit(uint8_t(t[4])) &&
              std::sscanf(t.c_str() + 3, "%2x", &value) == 1) {
            bytes += char(value);
            ++count;
          } else {
            flush();
            result.push_back(std::move(t));
          }
        }
        flush();
        tokens = std::move(result);
        break;
      }
      case DecoderStep::kFuse: {
        std::string all;
        for (const auto& t : tokens) all += t;
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderStep::kStrip:
        for (auto& t : tokens) {
          size_t cut = 0;
          for (size_t k = 0; k < step.start && t.compare(cut, step.a.size(), step.a) == 0; ++k) {
            cut += step.a.size();
          }
          t.erase(0, cut);
          for (size_t k = 0; k < step.stop && t.size() >= step.a.size() &&
                             t.compare(t.size() - step.a.size(), step.a.size(), step.a) == 0;
               ++k) {
            t.resize(t.size() - step.a.size());
          }
        }
        break;
      case DecoderStep::kByteLevel: {
        const auto& table = byte_level_table();
        std::string all;
        for (const auto& t : tokens) {
          for (size_t i = 0; i < t.size();) {
            const size_t len = utf8_char_length(std::string_view(t).substr(i));
            if (len == 0) {
              all += t[i++];
              continue;
            }
            const auto it = table.char_to_byte.find(code_point(t, i, len));
            if (it != table.char_to_byte.end()) {
              all += char(it->second);
            } else {
              all.append(t, i, len);
            }
            i += len;
          }
        }
        tokens.assign(1, std::move(all));
        break;
      }
      case DecoderStep::kMetaspace:
        for (size_t k = 0; k < tokens.size(); ++k) {
          replace_all(tokens[k], step.a, " ");
          if (k == 0 && step.prepend && !tokens[k].empty() && tokens[k][0] == ' ') {
            tokens[k].erase(0, 1);
          }
        }
        break;
    }
  }
  std::string text;
  for (const auto& t : tokens) text += t;
  if (!is_valid_utf8(text)) return sanitize_utf8(text);
  return text;
}

int HfBpeTokenizer::vocab_size() const {
  return int(impl_->pieces.size());
}

std::optional<int32_t> HfBpeTokenizer::bos_id() const {
  return impl_->bos;
}

std::optional<int32_t> HfBpeTokenizer::eos_id() const {
  return impl_->eos;
}

bool HfBpeTokenizer::is_special(int32_t id) const {
  return id >= 0 && size_t(id) < impl_->special.size() && impl_->special[size_t(id)];
}

std::string HfBpeTokenizer::id_to_piece(int32_t id) const {
  if (id < 0 || size_t(id) >= impl_->pieces.size()) {
    throw TokenizerError("token id " + std::to_string(id) + " is out of range [0, " +
                         std::to_string(impl_->pieces.size()) + ")");
  }
  return impl_->pieces[size_t(id)];
}

}  // namespace arbor
