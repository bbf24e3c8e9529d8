#include "models/llama.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/cpu/ops.h"

namespace arbor {
namespace {

std::vector<float> load(const WeightStore& store, const std::string& name,
                        std::initializer_list<int64_t> shape) {
  std::vector<int64_t> s(shape);
  return store.load_f32(name, s);
}

// Appends the rows of `part` to `stacked` (both row-major with the same row length).
void append_rows(std::vector<float>& stacked, const std::vector<float>& part) {
  stacked.insert(stacked.end(), part.begin(), part.end());
}

}  // namespace

LlamaWeightsCpu load_llama_weights_cpu(const WeightStore& store, const LlamaConfig& c) {
  const int64_t hidden = c.hidden_size, inter = c.intermediate_size, vocab = c.vocab_size;
  const int64_t q_dim = int64_t(c.num_heads) * c.head_dim;
  const int64_t kv_dim = int64_t(c.num_kv_heads) * c.head_dim;
  LlamaWeightsCpu w;
  w.embed = load(store, "model.embed_tokens.weight", {vocab, hidden});
  w.layers.resize(c.num_layers);
  for (int l = 0; l < c.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LlamaLayerWeightsCpu& lw = w.layers[l];
    lw.attn_norm = load(store, p + "input_layernorm.weight", {hidden});
    lw.wqkv = load(store, p + "self_attn.q_proj.weight", {q_dim, hidden});
    append_rows(lw.wqkv, load(store, p + "self_attn.k_proj.weight", {kv_dim, hidden}));
    append_rows(lw.wqkv, load(store, p + "self_attn.v_proj.weight", {kv_dim, hidden}));
    lw.wo = load(store, p + "self_attn.o_proj.weight", {hidden, q_dim});
    lw.mlp_norm = load(store, p + "post_attention_layernorm.weight", {hidden});
    lw.w_gate_up = load(store, p + "mlp.gate_proj.weight", {inter, hidden});
    append_rows(lw.w_gate_up, load(store, p + "mlp.up_proj.weight", {inter, hidden}));
    lw.w_down = load(store, p + "mlp.down_proj.weight", {hidden, inter});
  }
  w.final_norm = load(store, "model.norm.weight", {hidden});
  // Tied models usually omit lm_head.weight; if a tied checkpoint still ships it, the tie
  // wins, as in transformers.
  if (!c.tie_word_embeddings) w.lm_head = load(store, "lm_head.weight", {vocab, hidden});
  return w;
}

LlamaCpu::LlamaCpu(LlamaConfig config, LlamaWeightsCpu weights)
    : config_(std::move(config)), weights_(std::move(weights)) {
  inv_freq_ = cpu::rope_inv_freq(config_.head_dim, config_.rope_theta, config_.rope_scaling);
}

LlamaCpu LlamaCpu::load(const std::filesystem::path& model_dir) {
  LlamaConfig config = load_llama_config(model_dir);
  WeightStore store = WeightStore::open(model_dir);
  LlamaWeightsCpu weights = load_llama_weights_cpu(store, config);
  return LlamaCpu(std::move(config), std::move(weights));
}

PagedKvShape LlamaCpu::kv_shape(int num_blocks, int block_size) const {
  return PagedKvShape{num_blocks, config_.num_kv_heads, block_size, config_.head_dim};
}

void LlamaCpu::forward(const ForwardBatch& b, CpuKvCache& cache, std::vector<float>& logits,
                       const ContextParallelRank& cp) {
  const LlamaConfig& c = config_;
  const int n = b.num_tokens();
  const int hidden = c.hidden_size, hq = c.num_heads, hkv = c.num_kv_heads, d = c.head_dim;
  const int q_dim = hq * d, kv_dim = hkv * d, qkv_dim = q_dim + 2 * kv_dim;
  const int inter = c.intermediate_size, vocab = c.vocab_size;
  const PagedKvShape& shape = cache.shape();

  if (cache.num_layers() != c.num_layers || shape.num_kv_heads != hkv || shape.head_dim != d)
    throw std::invalid_argument("KV cache shape does not match the model");
  if (int(b.positions.size()) != n || int(b.slot_mapping.size()) != n ||
      int(b.query_start.size()) != b.num_seqs() + 1 || b.query_start.back() != n)
    throw std::invalid_argument("malformed forward batch: token arrays disagree in length");
  // Engine slots address super-blocks of cp_size local blocks (kernels/paged_kv.h).
  const int cp_size = cp.size(), cp_rank = cp.rank();
  const int64_t num_slots = int64_t(shape.num_blocks) * shape.block_size * cp_size;
  for (int t = 0; t < n; ++t) {
    if (b.token_ids[t] < 0 || b.token_ids[t] >= vocab)
      throw std::invalid_argument("token id " + std::to_string(b.token_ids[t]) +
                                  " is outside the vocabulary (size " + std::to_string(vocab) +
                                  ")");
    if (b.slot_mapping[t] < 0 || b.slot_mapping[t] >= num_slots)
      throw std::invalid_argument("cache slot " + std::to_string(b.slot_mapping[t]) +
                                  " is outside the KV cache");
  }
  for (int32_t row : b.logits_rows)
    if (row < 0 || row >= n) throw std::invalid_argument("logits row outside the batch");

  x_.resize(size_t(n) * hidden);
  normed_.resize(size_t(n) * hidden);
  qkv_.resize(size_t(n) * qkv_dim);
  q_.resize(size_t(n) * q_dim);
  k_.resize(size_t(n) * kv_dim);
  v_.resize(size_t(n) * kv_dim);
  attn_.resize(size_t(n) * q_dim);
  proj_.resize(size_t(n) * hidden);
  gate_up_.resize(size_t(n) * 2 * inter);
  act_.resize(size_t(n) * inter);

  // This rank's cache slots (the engine's own without context parallelism).
  const int32_t* slots = b.slot_mapping.data();
  if (cp.enabled()) {
    local_slots_.resize(size_t(n));
    for (int t = 0; t < n; ++t)
      local_slots_[t] = local_slot(b.slot_mapping[t], cp_size, cp_rank, shape.block_size);
    slots = local_slots_.data();
    partial_.resize(size_t(n) * q_dim);
    lse_.resize(size_t(n) * hq);
  }

  cpu::embedding(weights_.embed.data(), b.token_ids.data(), n, hidden, x_.data());
  const float scale = 1.0f / std::sqrt(float(d));
  AttentionBatch attention = b.attention_batch();
  attention.cp_size = cp_size;
  attention.cp_rank = cp_rank;

  for (int l = 0; l < c.num_layers; ++l) {
    const LlamaLayerWeightsCpu& w = weights_.layers[l];
    // The residual stream x_ absorbs the previous layer's MLP output (proj_) here.
    if (l == 0) {
      cpu::rmsnorm(x_.data(), w.attn_norm.data(), n, hidden, c.rms_norm_eps, normed_.data());
    } else {
      cpu::add_rmsnorm(x_.data(), proj_.data(), w.attn_norm.data(), n, hidden, c.rms_norm_eps,
                       normed_.data());
    }
    cpu::matmul(normed_.data(), w.wqkv.data(), n, qkv_dim, hidden, qkv_.data());
    for (int t = 0; t < n; ++t) {
      const float* row = qkv_.data() + size_t(t) * qkv_dim;
      std::copy(row, row + q_dim, q_.data() + size_t(t) * q_dim);
      std::copy(row + q_dim, row + q_dim + kv_dim, k_.data() + size_t(t) * kv_dim);
      std::copy(row + q_dim + kv_dim, row + qkv_dim, v_.data() + size_t(t) * kv_dim);
    }
    cpu::rope(q_.data(), b.positions.data(), n, hq, d, inv_freq_.data());
    cpu::rope(k_.data(), b.positions.data(), n, hkv, d, inv_freq_.data());
    cpu::kv_cache_write(k_.data(), v_.data(), slots, n, shape, cache.k(l), cache.v(l));
    if (cp.enabled()) {
      // This rank's partial (o, lse) over its shard, then the tree combine across ranks.
      cpu::paged_attention(q_.data(), hq, shape, cache.k(l), cache.v(l), attention, scale,
                           partial_.data(), lse_.data());
      combine_partials_host(cp, partial_.data(), lse_.data(), size_t(n) * hq, d, attn_.data(),
                            combine_scratch_);
    } else {
      cpu::paged_attention(q_.data(), hq, shape, cache.k(l), cache.v(l), attention, scale,
                           attn_.data());
    }
    cpu::matmul(attn_.data(), w.wo.data(), n, hidden, q_dim, proj_.data());
    cpu::add_rmsnorm(x_.data(), proj_.data(), w.mlp_norm.data(), n, hidden, c.rms_norm_eps,
                     normed_.data());
    cpu::matmul(normed_.data(), w.w_gate_up.data(), n, 2 * inter, hidden, gate_up_.data());
    cpu::silu_mul(gate_up_.data(), n, inter, act_.data());
    cpu::matmul(act_.data(), w.w_down.data(), n, hidden, inter, proj_.data());
  }

  // Final norm only for the rows whose logits are wanted (usually one per sequence).
  const int rows = int(b.logits_rows.size());
  rows_.resize(size_t(rows) * hidden);
  for (int r = 0; r < rows; ++r) {
    const size_t t = size_t(b.logits_rows[r]);
    for (int i = 0; i < hidden; ++i)
      rows_[size_t(r) * hidden + i] = x_[t * hidden + i] + proj_[t * hidden + i];
  }
  cpu::rmsnorm(rows_.data(), weights_.final_norm.data(), rows, hidden, c.rms_norm_eps,
               rows_.data());
  const std::vector<float>& head = weights_.lm_head.empty() ? weights_.embed : weights_.lm_head;
  logits.resize(size_t(rows) * vocab);
  cpu::matmul(rows_.data(), head.data(), rows, vocab, hidden, logits.data());
}

}  // namespace arbor
