#include "tokenizer/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include <algorithm>
#include <exception>
#include <vector>

#include "tokenizer/sentencepiece_bpe.h"
#include "tokenizer/utf8.h"

namespace arbor {
namespace {

constexpr std::string_view kSpaceSymbol = "\xE2\x96\x81";  // "▁"

}  // namespace

SentencePieceTokenizer::SentencePieceTokenizer(const std::filesystem::path& model_file,
                                               SentencePieceOptions options)
    : model_file_(model_file),
      sp_(std::make_unique<sentencepiece::SentencePieceProcessor>()),
      options_(options) {
  sentencepiece::util::Status status;
  try {
    status = sp_->Load(model_file.string());
  } catch (const std::exception& e) {
    throw TokenizerError("cannot load SentencePiece model " + model_file.string() + ": " +
                         e.what());
  }
  if (!status.ok()) {
    throw TokenizerError("cannot load SentencePiece model " + model_file.string() + ": " +
                         status.ToString());
  }
  vocab_size_ = sp_->GetPieceSize();
  if (vocab_size_ <= 0) {
    throw TokenizerError("SentencePiece model " + model_file.string() + " has no pieces");
  }
  if (const int bos = sp_->bos_id(); bos >= 0 && bos < vocab_size_) bos_id_ = bos;
  if (const int eos = sp_->eos_id(); eos >= 0 && eos < vocab_size_) eos_id_ = eos;
  for (int id = 0; id < vocab_size_; ++id) {
    if (!is_special(id)) continue;
    const std::string& piece = sp_->IdToPiece(id);
    if (!piece.empty()) specials_by_first_byte_[uint8_t(piece[0])].emplace_back(piece, id);
  }
  for (auto& list : specials_by_first_byte_) {
    std::stable_sort(list.begin(), list.end(),
                     [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  }
  bpe_ = SentencePieceBpe::create(sp_->serialized_model_proto());
  // The library stays the reference: its own reading of the model must be the same.
  if (bpe_ && bpe_->vocab_size() != vocab_size_) bpe_.reset();
  for (int id = 0; bpe_ && id < vocab_size_; ++id) {
    if (bpe_->piece(id) != sp_->IdToPiece(id)) bpe_.reset();
  }
  for (int id = 0; id < vocab_size_; ++id) {
    if (sp_->IsControl(id) || sp_->IsUnknown(id) || sp_->IsUnused(id) || sp_->IsByte(id)) continue;
    const std::string& piece = sp_->IdToPiece(id);
    if (piece.empty() || piece.find(kSpaceSymbol) != std::string::npos) continue;
    std::string text;
    if (!sp_->Decode(std::vector<int>{id}, &text).ok() || text != piece) continue;
    sentinel_id_ = id;
    sentinel_text_ = text;
    break;
  }
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

void SentencePieceTokenizer::encode_plain(std::string_view text, std::vector<int32_t>& ids) const {
  if (text.empty()) return;
  if (bpe_) {
    bpe_->encode(text, ids);
    return;
  }
  std::vector<int> pieces;
  const auto status = sp_->Encode(text, &pieces);
  if (!status.ok()) {
    throw TokenizerError("SentencePiece encode failed (" + model_file_.string() +
                         "): " + status.ToString());
  }
  ids.insert(ids.end(), pieces.begin(), pieces.end());
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text,
                                                    bool add_special_tokens) const {
  std::vector<int32_t> ids;
  if (add_special_tokens && options_.add_bos && bos_id_) ids.push_back(*bos_id_);
  size_t segment = 0;  // start of the text not yet encoded
  for (size_t i = 0; i < text.size(); ++i) {
    const auto& candidates = specials_by_first_byte_[uint8_t(text[i])];
    for (const auto& [piece, id] : candidates) {
      if (text.compare(i, piece.size(), piece) != 0) continue;
      encode_plain(text.substr(segment, i - segment), ids);
      ids.push_back(id);
      segment = i + piece.size();
      i = segment - 1;
      break;
    }
  }
  encode_plain(text.substr(segment), ids);
  if (add_special_tokens && options_.add_eos && eos_id_) ids.push_back(*eos_id_);
  return ids;
}

void SentencePieceTokenizer::check_ids(std::span<const int32_t> ids) const {
  for (const int32_t id : ids) {
    if (id < 0 || id >= vocab_size_) {
      throw TokenizerError("token id " + std::to_string(id) + " is out of range [0, " +
                           std::to_string(vocab_size_) + ")");
    }
  }
}

std::string SentencePieceTokenizer::decode_plain(std::span<const int32_t> ids,
                                                 bool keep_leading_space) const {
  if (ids.empty()) return {};
  const bool use_sentinel = keep_leading_space && sentinel_id_.has_value();
  std::vector<int> pieces;
  pieces.reserve(ids.size() + 1);
  if (use_sentinel) pieces.push_back(*sentinel_id_);
  pieces.insert(pieces.end(), ids.begin(), ids.end());
  std::string text;
  const auto status = sp_->Decode(pieces, &text);
  if (!status.ok()) {
    throw TokenizerError("SentencePiece decode failed (" + model_file_.string() +
                         "): " + status.ToString());
  }
  if (use_sentinel) {
    // The sentinel has no "▁", so SentencePiece writes it unchanged at the front.
    if (text.compare(0, sentinel_text_.size(), sentinel_text_) != 0) {
      throw TokenizerError("SentencePiece decode: unexpected output for " + model_file_.string());
    }
    text.erase(0, sentinel_text_.size());
  }
  // SentencePiece already turns invalid byte-fallback bytes into U+FFFD; this guards the
  // guarantee against pieces that are themselves not valid UTF-8.
  if (!is_valid_utf8(text)) text = sanitize_utf8(text);
  return text;
}

std::string SentencePieceTokenizer::decode(std::span<const int32_t> ids, bool skip_special) const {
  check_ids(ids);
  std::string out;
  std::vector<int32_t> run;  // ordinary ids since the last special id
  run.reserve(ids.size());
  const auto flush_run = [&] {
    out += decode_plain(run, /*keep_leading_space=*/!out.empty());
    run.clear();
  };
  for (const int32_t id : ids) {
    if (!is_special(id)) {
      run.push_back(id);
    } else if (!skip_special) {
      flush_run();
      out += sanitize_utf8(sp_->IdToPiece(id));
    }
  }
  flush_run();
  return out;
}

bool SentencePieceTokenizer::is_special(int32_t id) const {
  if (id < 0 || id >= vocab_size_) return false;
  return sp_->IsControl(id) || sp_->IsUnknown(id);
}

std::string SentencePieceTokenizer::id_to_piece(int32_t id) const {
  check_ids(std::span<const int32_t>(&id, 1));
  return sp_->IdToPiece(id);
}

}  // namespace arbor
