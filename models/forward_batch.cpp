#include "models/forward_batch.h"

#include <cstring>
#include <stdexcept>

namespace arbor {
namespace {

constexpr uint32_t kMagic = 0x41524231;  // "ARB1"

void put_u32(std::vector<uint8_t>& out, uint32_t v) {
  const size_t at = out.size();
  out.resize(at + 4);
  std::memcpy(out.data() + at, &v, 4);
}

void put_array(std::vector<uint8_t>& out, const std::vector<int32_t>& v) {
  put_u32(out, uint32_t(v.size()));
  const size_t at = out.size();
  out.resize(at + v.size() * 4);
  if (!v.empty()) std::memcpy(out.data() + at, v.data(), v.size() * 4);
}

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> bytes) : bytes_(bytes) {}
  uint32_t u32() {
    need(4);
    uint32_t v;
    std::memcpy(&v, bytes_.data() + at_, 4);
    at_ += 4;
    return v;
  }
  std::vector<int32_t> array() {
    const uint32_t n = u32();
    need(size_t(n) * 4);
    std::vector<int32_t> v(n);
    if (n) std::memcpy(v.data(), bytes_.data() + at_, size_t(n) * 4);
    at_ += size_t(n) * 4;
    return v;
  }
  bool done() const { return at_ == bytes_.size(); }

 private:
  void need(size_t n) const {
    if (bytes_.size() - at_ < n) throw std::invalid_argument("forward batch message is truncated");
  }
  std::span<const uint8_t> bytes_;
  size_t at_ = 0;
};

}  // namespace

void serialize_forward_batch(const ForwardBatch& b, std::vector<uint8_t>& out) {
  put_u32(out, kMagic);
  put_u32(out, uint32_t(b.max_blocks_per_seq));
  put_array(out, b.token_ids);
  put_array(out, b.positions);
  put_array(out, b.slot_mapping);
  put_array(out, b.query_start);
  put_array(out, b.context_lens);
  put_array(out, b.block_tables);
  put_array(out, b.logits_rows);
}

ForwardBatch deserialize_forward_batch(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  if (r.u32() != kMagic) throw std::invalid_argument("not a forward batch message");
  ForwardBatch b;
  b.max_blocks_per_seq = int(r.u32());
  b.token_ids = r.array();
  b.positions = r.array();
  b.slot_mapping = r.array();
  b.query_start = r.array();
  b.context_lens = r.array();
  b.block_tables = r.array();
  b.logits_rows = r.array();
  if (!r.done()) throw std::invalid_argument("forward batch message has trailing bytes");
  const size_t n = b.token_ids.size(), seqs = b.context_lens.size();
  if (b.max_blocks_per_seq < 0 || b.positions.size() != n || b.slot_mapping.size() != n ||
      b.query_start.size() != seqs + 1 ||
      b.block_tables.size() != seqs * size_t(b.max_blocks_per_seq))
    throw std::invalid_argument("forward batch message has inconsistent array sizes");
  return b;
}

}  // namespace arbor
