#include "tokenizer/sentencepiece_bpe.h"

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <utility>

#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"

namespace arbor {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // "▁"

// ModelProto.SentencePiece.Type
enum PieceType : uint8_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

// --- protobuf wire format, just enough for ModelProto -------------------------------------

struct Field {
  uint32_t number = 0;
  uint32_t wire_type = 0;
  uint64_t varint = 0;     // wire types 0 (varint), 1 and 5 (fixed64 / fixed32)
  std::string_view bytes;  // wire type 2 (length-delimited)
};

class WireReader {
 public:
  explicit WireReader(std::string_view data) : data_(data) {}
  bool done() const { return pos_ >= data_.size(); }
  // Reads the next field; false when the data is malformed or uses groups.
  bool next(Field& f) {
    uint64_t tag = 0;
    if (!read_varint(tag) || (tag >> 3) == 0 || (tag >> 3) > std::numeric_limits<int32_t>::max())
      return false;
    f.number = uint32_t(tag >> 3);
    f.wire_type = uint32_t(tag & 7);
    switch (f.wire_type) {
      case 0:
        return read_varint(f.varint);
      case 1:
      case 5: {
        const size_t n = f.wire_type == 1 ? 8 : 4;
        if (data_.size() - pos_ < n) return false;
        f.varint = 0;
        for (size_t i = 0; i < n; ++i) f.varint |= uint64_t(uint8_t(data_[pos_ + i])) << (8 * i);
        pos_ += n;
        return true;
      }
      case 2: {
        uint64_t n = 0;
        if (!read_varint(n) || n > data_.size() - pos_) return false;
        f.bytes = data_.substr(pos_, size_t(n));
        pos_ += size_t(n);
        return true;
      }
      default:
        return false;
    }
  }

 private:
  bool read_varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (pos_ >= data_.size()) return false;
      const auto b = uint8_t(data_[pos_++]);
      v |= uint64_t(b & 0x7F) << shift;
      if (!(b & 0x80)) return true;
    }
    return false;
  }
  std::string_view data_;
  size_t pos_ = 0;
};

// --- a flat hash map from piece text to id --------------------------------------------------

class PieceTable {
 public:
  // Keeps the first id of a text that occurs twice. `texts` must outlive the table.
  void insert_all(const std::vector<std::pair<std::string_view, int32_t>>& entries) {
    size_t capacity = 16;
    while (capacity < entries.size() * 2) capacity *= 2;
    slots_.assign(capacity, Slot{});
    mask_ = capacity - 1;
    for (const auto& [text, id] : entries) {
      size_t i = hash(text) & mask_;
      while (slots_[i].id >= 0 && slots_[i].text != text) i = (i + 1) & mask_;
      if (slots_[i].id < 0) slots_[i] = {text, id};
    }
  }
  // -1 when absent.
  int32_t find(std::string_view text) const {
    for (size_t i = hash(text) & mask_;; i = (i + 1) & mask_) {
      const Slot& s = slots_[i];
      if (s.id < 0) return -1;
      if (s.text.size() == text.size() && std::memcmp(s.text.data(), text.data(), text.size()) == 0)
        return s.id;
    }
  }

 private:
  struct Slot {
    std::string_view text;
    int32_t id = -1;
  };
  static size_t hash(std::string_view s) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
    size_t i = 0;
    for (; i + 8 <= s.size(); i += 8) {
      uint64_t k;
      std::memcpy(&k, s.data() + i, 8);
      h = (h ^ k) * 0xBF58476D1CE4E5B9ull;
      h ^= h >> 29;
    }
    uint64_t tail = 0;
    for (size_t j = 0; i < s.size(); ++i, j += 8) tail |= uint64_t(uint8_t(s[i])) << j;
    h = (h ^ tail) * 0x94D049BB133111EBull;
    return size_t(h ^ (h >> 32));
  }
  std::vector<Slot> slots_{16};
  size_t mask_ = 15;
};

// SentencePiece's string_util::OneCharLen: the length the lead byte announces.
inline size_t one_char_len(char c) {
  return size_t("\1\1\1\1\1\1\1\1\1\1\1\1\2\2\3\4"[(uint8_t(c)) >> 4]);
}

bool has_space_after_other_char(std::string_view piece) {
  size_t i = 0;
  while (piece.substr(i, kSpaceSymbol.size()) == kSpaceSymbol) i += kSpaceSymbol.size();
  return piece.find(kSpaceSymbol, i) != std::string_view::npos;
}

struct Span {
  uint32_t begin, size;
};

// Per-call working memory of SentencePieceBpe::encode.
struct EncodeState {
  static constexpr uint32_t kFrozen = 0x80000000u;  // a user-defined piece: never merged
  struct Candidate {
    float score;
    uint32_t left;  // position of the left symbol in the run
    uint32_t size;  // bytes of both symbols together
    // std::push_heap's "less": lower score, then further right.
    bool operator<(const Candidate& o) const {
      return score < o.score || (score == o.score && left > o.left);
    }
  };
  std::vector<uint32_t> len;  // at each symbol's first byte: its length (| kFrozen); 0 = merged
  std::vector<int32_t> prev;  // at each symbol's first byte: the previous symbol, -1 for none
  std::vector<Candidate> heap;
  std::unordered_map<int32_t, std::pair<Span, Span>> rev_merge;  // unused piece → its halves
  std::vector<Span> pending;  // symbols waiting for rev_merge (models with unused pieces)
  bool prev_unknown = false;
};

}  // namespace

struct SentencePieceBpe::Model {
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<uint8_t> types;
  PieceTable mergeable;  // normal, user-defined and unused pieces (SentencePiece's pieces_)
  PieceTable lookup;     // PieceToId: control/unknown/byte pieces first, then `mergeable`
  std::vector<std::string_view> user_defined;
  std::array<bool, 256> user_defined_first_byte{};
  size_t max_piece_bytes = 0;
  int32_t unk_id = -1;
  std::array<int32_t, 256> byte_ids{};
  bool byte_fallback = false;
  bool has_unused = false;
  bool split_words = false;
  // NormalizerSpec / TrainerSpec
  bool add_dummy_prefix = true;
  bool remove_extra_whitespaces = true;
  bool escape_whitespaces = true;
  bool treat_whitespace_as_suffix = false;

  // Length of the longest user-defined piece at the start of s, 0 if none.
  size_t match_user_defined(std::string_view s) const {
    size_t best = 0;
    for (const auto u : user_defined) {
      if (u.size() > best && s.substr(0, u.size()) == u) best = u.size();
    }
    return best;
  }
  void normalize(std::string_view in, std::string& out) const;
  // Writes the ids of one final symbol (SentencePiece's PopulateSentencePieceText).
  void emit(std::string_view piece, EncodeState& st, std::vector<int32_t>& out) const;
};

void SentencePieceBpe::Model::normalize(std::string_view in, std::string& out) const {
  out.clear();
  // SentencePiece's NormalizePrefix without a charsmap: a user-defined piece, a character, or
  // U+FFFD for a byte that does not start a valid one.
  const auto unit = [&](std::string_view s) -> std::pair<std::string_view, size_t> {
    const auto b = uint8_t(s[0]);
    if (user_defined_first_byte[b]) {
      if (const size_t n = match_user_defined(s); n > 0) return {s.substr(0, n), n};
    }
    if (b < 0x80) return {s.substr(0, 1), 1};
    const size_t n = utf8_char_length(s);
    if (n == 0) return {kReplacementChar, 1};
    return {s.substr(0, n), n};
  };
  if (remove_extra_whitespaces) {
    while (!in.empty()) {
      const auto [u, n] = unit(in);
      if (u != " ") break;
      in.remove_prefix(n);
    }
  }
  if (in.empty()) return;
  const std::string_view space = escape_whitespaces ? kSpaceSymbol : " ";
  out.reserve(in.size() + 2 * size_t(std::count(in.begin(), in.end(), ' ')) + space.size());
  if (!treat_whitespace_as_suffix && add_dummy_prefix) out += space;
  bool prev_space = remove_extra_whitespaces;
  while (!in.empty()) {
    auto [piece, n] = unit(in);
    while (prev_space && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
    if (!piece.empty()) {
      for (const char c : piece) {
        if (c == ' ' && escape_whitespaces) {
          out += kSpaceSymbol;
        } else {
          out += c;
        }
      }
      prev_space = piece.back() == ' ';
    }
    in.remove_prefix(n);
    if (!remove_extra_whitespaces) prev_space = false;
  }
  if (remove_extra_whitespaces) {
    while (out.size() >= space.size() &&
           out.compare(out.size() - space.size(), space.size(), space) == 0)
      out.resize(out.size() - space.size());
  }
  if (treat_whitespace_as_suffix && add_dummy_prefix) out += space;
}

std::unique_ptr<SentencePieceBpe> SentencePieceBpe::create(std::string_view proto) {
  auto m = std::make_unique<Model>();
  bool bpe = false, charsmap = false;
  WireReader top(proto);
  Field f;
  while (!top.done()) {
    if (!top.next(f)) return nullptr;
    if (f.number == 1 && f.wire_type == 2) {  // repeated SentencePiece pieces
      std::string piece;
      float score = 0;
      uint64_t type = kNormal;
      WireReader r(f.bytes);
      Field g;
      while (!r.done()) {
        if (!r.next(g)) return nullptr;
        if (g.number == 1 && g.wire_type == 2) piece.assign(g.bytes);
        if (g.number == 2 && g.wire_type == 5) {
          const auto bits = uint32_t(g.varint);
          std::memcpy(&score, &bits, 4);
        }
        if (g.number == 3 && g.wire_type == 0) type = g.varint;
      }
      if (piece.empty() || type < kNormal || type > kByte) return nullptr;
      m->pieces.push_back(std::move(piece));
      m->scores.push_back(score);
      m->types.push_back(uint8_t(type));
    } else if (f.number == 2 && f.wire_type == 2) {  // TrainerSpec
      WireReader r(f.bytes);
      Field g;
      while (!r.done()) {
        if (!r.next(g)) return nullptr;
        if (g.wire_type != 0) continue;
        if (g.number == 3) bpe = g.varint == 2;  // model_type BPE (default UNIGRAM)
        if (g.number == 24) m->treat_whitespace_as_suffix = g.varint != 0;
        if (g.number == 35) m->byte_fallback = g.varint != 0;
      }
    } else if (f.number == 3 && f.wire_type == 2) {  // NormalizerSpec
      WireReader r(f.bytes);
      Field g;
      while (!r.done()) {
        if (!r.next(g)) return nullptr;
        if (g.number == 2 && g.wire_type == 2) charsmap = !g.bytes.empty();
        if (g.wire_type != 0) continue;
        if (g.number == 3) m->add_dummy_prefix = g.varint != 0;
        if (g.number == 4) m->remove_extra_whitespaces = g.varint != 0;
        if (g.number == 5) m->escape_whitespaces = g.varint != 0;
      }
    }
  }
  if (!bpe || charsmap || m->pieces.empty() ||
      m->pieces.size() > size_t(std::numeric_limits<int32_t>::max())) {
    return nullptr;
  }

  std::vector<std::pair<std::string_view, int32_t>> mergeable, reserved;
  m->split_words = true;
  for (size_t i = 0; i < m->pieces.size(); ++i) {
    const std::string_view piece = m->pieces[i];
    const auto id = int32_t(i);
    switch (m->types[i]) {
      case kNormal:
      case kUserDefined:
      case kUnused:
        mergeable.emplace_back(piece, id);
        m->max_piece_bytes = std::max(m->max_piece_bytes, piece.size());
        if (!is_valid_utf8(piece) || has_space_after_other_char(piece)) m->split_words = false;
        if (m->types[i] == kUserDefined) {
          m->user_defined.push_back(piece);
          m->user_defined_first_byte[uint8_t(piece[0])] = true;
        }
        if (m->types[i] == kUnused) m->has_unused = true;
        break;
      case kUnknown:
        if (m->unk_id >= 0) return nullptr;  // SentencePiece rejects two
        m->unk_id = id;
        reserved.emplace_back(piece, id);
        break;
      default:
        reserved.emplace_back(piece, id);
    }
  }
  if (m->unk_id < 0) return nullptr;
  m->mergeable.insert_all(mergeable);
  reserved.insert(reserved.end(), mergeable.begin(), mergeable.end());
  m->lookup.insert_all(reserved);
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof(name), "<0x%02X>", b);
    const int32_t id = m->lookup.find(name);
    m->byte_ids[size_t(b)] = id < 0 ? m->unk_id : id;
    if (m->byte_fallback && (id < 0 || m->types[size_t(id)] != kByte)) return nullptr;
  }
  return std::unique_ptr<SentencePieceBpe>(new SentencePieceBpe(std::move(m)));
}

SentencePieceBpe::SentencePieceBpe(std::unique_ptr<Model> model) : model_(std::move(model)) {}
SentencePieceBpe::~SentencePieceBpe() = default;

int SentencePieceBpe::vocab_size() const {
  return int(model_->pieces.size());
}
std::string_view SentencePieceBpe::piece(int32_t id) const {
  return model_->pieces[size_t(id)];
}
bool SentencePieceBpe::splits_words() const {
  return model_->split_words;
}

void SentencePieceBpe::encode(std::string_view text, std::vector<int32_t>& out) const {
  const Model& m = *model_;
  std::string normalized;
  m.normalize(text, normalized);
  if (normalized.empty()) return;
  if (normalized.size() >= EncodeState::kFrozen) {
    throw TokenizerError("text of " + std::to_string(text.size()) + " bytes is too long");
  }
  EncodeState st;

  // One BPE run: SentencePiece's bpe::Model::SampleEncode with symbols addressed by their
  // first byte (so a symbol's right neighbour is at position + length) and merge candidates
  // invalidated lazily (a candidate is stale when the lengths no longer add up).
  const auto run = [&](uint32_t begin, uint32_t end) {
    const char* s = normalized.data() + begin;
    const uint32_t n = end - begin;
    st.len.resize(n);
    st.prev.resize(n);
    st.heap.clear();
    int32_t last = -1;
    for (uint32_t pos = 0; pos < n;) {
      uint32_t len = 0;
      if (m.user_defined_first_byte[uint8_t(s[pos])]) {
        len = uint32_t(m.match_user_defined(std::string_view(s + pos, n - pos)));
      }
      st.len[pos] =
          len > 0 ? len | EncodeState::kFrozen : std::min(uint32_t(one_char_len(s[pos])), n - pos);
      st.prev[pos] = last;
      last = int32_t(pos);
      pos += st.len[pos] & ~EncodeState::kFrozen;
    }
    const auto consider = [&](uint32_t left) {
      const uint32_t l = st.len[left];
      const uint32_t right = left + l;
      if ((l & EncodeState::kFrozen) || right >= n) return;
      const uint32_t r = st.len[right];
      if ((r & EncodeState::kFrozen) || l + r > m.max_piece_bytes) return;
      const int32_t id = m.mergeable.find(std::string_view(s + left, l + r));
      if (id < 0) return;
      st.heap.push_back({m.scores[size_t(id)], left, l + r});
      std::push_heap(st.heap.begin(), st.heap.end());
      if (m.types[size_t(id)] == kUnused)
        st.rev_merge[id] = {{begin + left, l}, {begin + right, r}};
    };
    for (uint32_t pos = 0; pos < n; pos += st.len[pos] & ~EncodeState::kFrozen) consider(pos);
    while (!st.heap.empty()) {
      std::pop_heap(st.heap.begin(), st.heap.end());
      const auto c = st.heap.back();
      st.heap.pop_back();
      const uint32_t l = st.len[c.left];
      if (l == 0 || c.left + l >= n || l + st.len[c.left + l] != c.size) continue;  // stale
      st.len[c.left + l] = 0;
      st.len[c.left] = c.size;
      if (c.left + c.size < n) st.prev[c.left + c.size] = int32_t(c.left);
      if (st.prev[c.left] >= 0) consider(uint32_t(st.prev[c.left]));
      consider(c.left);
    }
    for (uint32_t pos = 0; pos < n;) {
      const uint32_t len = st.len[pos] & ~EncodeState::kFrozen;
      if (m.has_unused) {
        st.pending.push_back({begin + pos, len});
      } else {
        m.emit(std::string_view(s + pos, len), st, out);
      }
      pos += len;
    }
  };

  if (!m.split_words) {
    run(0, uint32_t(normalized.size()));
  } else {
    // Runs start at each "▁" that follows another character.
    const std::string_view all = normalized;
    uint32_t begin = 0;
    for (size_t pos = all.find(kSpaceSymbol, 1); pos != std::string_view::npos;
         pos = all.find(kSpaceSymbol, pos + kSpaceSymbol.size())) {
      if (pos >= kSpaceSymbol.size() &&
          all.compare(pos - kSpaceSymbol.size(), kSpaceSymbol.size(), kSpaceSymbol) == 0) {
        continue;
      }
      run(begin, uint32_t(pos));
      begin = uint32_t(pos);
    }
    run(begin, uint32_t(normalized.size()));
  }

  if (m.has_unused) {
    // Unused pieces are split into the halves they were last merged from, in the whole text
    // (SentencePiece's rev_merge is one map per Encode call).
    const auto resegment = [&](const auto& self, Span w) -> void {
      const std::string_view piece(normalized.data() + w.begin, w.size);
      const int32_t id = m.lookup.find(piece);
      if (id >= 0 && m.types[size_t(id)] == kUnused) {
        if (const auto it = st.rev_merge.find(id); it != st.rev_merge.end()) {
          self(self, it->second.first);
          self(self, it->second.second);
          return;
        }
      }
      m.emit(piece, st, out);
    };
    for (const Span w : st.pending) resegment(resegment, w);
  }
}

void SentencePieceBpe::Model::emit(std::string_view piece, EncodeState& st,
                                   std::vector<int32_t>& out) const {
  const Model& m = *this;
  int32_t id = m.lookup.find(piece);
  if (id < 0) id = m.unk_id;
  const uint8_t type = m.types[size_t(id)];
  if (type == kControl) {
    // SentencePiece gives control pieces no surface and then fails its consistency check.
    throw TokenizerError("SentencePiece encode failed: control piece " + m.pieces[size_t(id)] +
                         " in the text");
  }
  const bool unknown = type == kUnknown;
  if (unknown && m.byte_fallback) {
    for (const char b : piece) out.push_back(m.byte_ids[uint8_t(b)]);
  } else if (!(unknown && st.prev_unknown)) {  // a run of unknown pieces is one <unk>
    out.push_back(id);
  }
  st.prev_unknown = unknown;
}

}  // namespace arbor
