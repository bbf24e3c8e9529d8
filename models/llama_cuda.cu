#include "models/llama_cuda.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <utility>

#include "engine/comm/communicator.h"
#include "kernels/cpu/ops.h"
#include "kernels/cuda/bf16.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/device.h"
#include "kernels/cuda/device_buffer.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"
#include "kernels/cuda/ops.h"
#include "kernels/cuda/prefill_attention.h"
#include "kernels/cuda/sampling.h"
#include "models/context_parallel_cuda.h"
#include "models/safetensors.h"

namespace arbor {
namespace {

using cuda::bf16;

struct LayerWeights {
  bf16* attn_norm = nullptr;
  bf16* wqkv = nullptr;  // q, k, v projections stacked: [(Hq + 2 Hkv) D][hidden]
  bf16* wo = nullptr;
  bf16* mlp_norm = nullptr;
  bf16* w_gate_up = nullptr;  // gate rows then up rows: [2 I][hidden]
  bf16* w_down = nullptr;
};

// Pinned host memory (fast, asynchronous copies), freed on destruction.
template <typename T>
class PinnedArray {
 public:
  PinnedArray() = default;
  explicit PinnedArray(size_t n) : n_(n) {
    CUDA_CHECK(cudaMallocHost(reinterpret_cast<void**>(&p_), n * sizeof(T)));
  }
  ~PinnedArray() {
    if (p_) cudaFreeHost(p_);
  }
  PinnedArray(const PinnedArray&) = delete;
  PinnedArray& operator=(const PinnedArray&) = delete;
  PinnedArray& operator=(PinnedArray&& o) noexcept {
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    return *this;
  }
  T* data() const { return p_; }
  size_t size() const { return n_; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / double(1ull << 30));
  return buf;
}

class LlamaCudaRunner final : public ModelRunner {
 public:
  LlamaCudaRunner(LlamaConfig config, const WeightStore* store, const CudaRunnerOptions& opt);

  const LlamaConfig& config() const override { return c_; }
  int num_kv_blocks() const override { return num_blocks_; }
  int block_size() const override { return opt_.block_size * cp_size_; }
  int max_batch_tokens() const override { return opt_.max_batch_tokens; }
  int max_logits_rows() const override { return opt_.max_num_seqs; }
  void forward(const ForwardBatch& batch, std::vector<float>& logits) override;
  void forward_greedy(const ForwardBatch& batch, std::vector<int32_t>& ids) override;
  // ARBOR_DEVICE_SAMPLING=0: the engine samples on the host, for before/after measurements.
  bool samples_on_device() const override {
    static const bool enabled = [] {
      const char* v = std::getenv("ARBOR_DEVICE_SAMPLING");
      return !(v && std::string(v) == "0");
    }();
    return enabled;
  }
  void forward_sample(const ForwardBatch& batch, std::span<const DeviceSamplingRow> rows,
                      std::vector<DeviceSampledToken>& tokens) override;
  int fused_gemv_rows() const { return fused_gemv_rows_; }
  int paired_gemv_rows() const { return paired_gemv_rows_; }
  std::string device_name() const override { return device_name_; }

 private:
  // Validates the batch, uploads its metadata and enqueues the step (graph or not); the
  // logits of the requested rows are then in logits_ on the stream. Returns the row count.
  int run_step(const ForwardBatch& batch);
  // Everything one step enqueues on the stream, from token ids to logits.
  void enqueue_step(int n_tokens, int n_seqs, int n_rows, bool decode, int max_context_len,
                    int max_query_len, const cuda::DecodeAttentionPlan& plan);
  void upload_weights(const WeightStore* store);
  int fused_gemv_rows_supported() const;
  int paired_gemv_rows_supported() const;
  // out [rows][n] = the product of `in` (a fused norm when it has one, else the plain x
  // through gemm_) with w [n][k].
  void product(const cuda::GemvInputSpec& in, const bf16* w, int rows, int n, int k, bf16* out,
               cudaStream_t s);
  void upload_tensor(const WeightStore& store, const std::string& name,
                     std::initializer_list<int64_t> shape, bf16* dst);
  cuda::DecodeAttentionParams decode_params(int n_seqs, int max_context_len) const;

  LlamaConfig c_;
  CudaRunnerOptions opt_;
  std::string device_name_;
  int num_sms_ = 0;
  int q_dim_ = 0, kv_dim_ = 0, qkv_dim_ = 0;
  int max_blocks_per_seq_ = 0;  // block-table row stride on the device
  int cp_size_ = 1, cp_rank_ = 0;
  int max_local_context_ = 0;  // positions of one sequence this rank can hold

  cuda::Stream stream_;
  cuda::Gemm gemm_;

  cuda::DeviceBuffer weights_;
  bf16* embed_ = nullptr;
  bf16* final_norm_ = nullptr;
  bf16* lm_head_ = nullptr;
  std::vector<LayerWeights> layers_;
  cuda::DeviceArray<float> inv_freq_;

  cuda::DeviceBuffer kv_;
  std::vector<bf16*> k_cache_, v_cache_;
  int num_blocks_ = 0;

  cuda::DeviceArray<bf16> x_, normed_, qkv_, q_, attn_, proj_, gate_up_, act_, rows_;
  // Steps of up to fused_gemv_rows_ tokens fuse the norms into the gemvs: the fused residual
  // add writes the new residual stream to the other buffer (every block still reads the old
  // one), so the stream alternates between x_ and x_alt_ (fused_gemv_rows_ rows).
  int fused_gemv_rows_ = 0;
  // Steps of up to paired_gemv_rows_ tokens fuse RoPE + KV write into the qkv gemv and
  // SiLU·mul into the gate_up gemv (CudaRunnerOptions::fused_gemv_outputs).
  int paired_gemv_rows_ = 0;
  cuda::DeviceArray<bf16> x_alt_;
  cuda::DeviceArray<bf16> logits_bf16_;  // lm_head output, as transformers and vLLM keep it
  cuda::DeviceArray<float> logits_;
  cuda::DeviceBuffer attn_workspace_;
  // Context parallelism: fp32 partials and combine buffers (sized for the largest step).
  // (mutable: decode_params(), const, hands out its partial buffers)
  mutable CudaCombineWorkspace combine_;

  // Step metadata: token ids, positions, slots, query_start, context_lens, logits rows at
  // fixed offsets of one int32 buffer (fixed pointers, so CUDA graphs can replay), then the
  // block tables with row stride max_blocks_per_seq_.
  cuda::DeviceArray<int32_t> meta_;
  PinnedArray<int32_t> meta_host_;
  PinnedArray<float> logits_host_;
  size_t off_tokens_ = 0, off_positions_ = 0, off_slots_ = 0, off_query_start_ = 0,
         off_context_lens_ = 0, off_logits_rows_ = 0, off_block_tables_ = 0;

  std::map<int, cuda::Graph> decode_graphs_;  // batch-size bucket → captured decode step

  // Device-side greedy sampling (forward_greedy): one parameter row per logits row.
  cuda::DeviceArray<cuda::SamplingRowParams> greedy_params_;
  cuda::DeviceArray<int32_t> sampled_;
  // Device-side sampling (forward_sample): the rows' parameters, their penalty and bias
  // lists (CSR, grown on demand), the processed rows' workspace (allocated with the logits,
  // before the KV cache takes the rest) and the outputs, with pinned host copies.
  PinnedArray<cuda::SamplingRowParams> sample_params_host_;
  cuda::DeviceArray<cuda::SamplingRowParams> sample_params_;
  cuda::DeviceBuffer sample_lists_;
  // forward_sample's host staging of those lists, kept so that steps reuse their capacity.
  std::vector<int32_t> sample_penalty_offsets_, sample_bias_offsets_;
  std::vector<cuda::SamplingPenaltyEntry> sample_penalties_;
  std::vector<cuda::SamplingBiasEntry> sample_biases_;
  std::vector<char> sample_lists_host_;
  cuda::DeviceBuffer sample_workspace_;
  cuda::DeviceArray<float> sampled_logprobs_, top_logprobs_;
  cuda::DeviceArray<int32_t> top_ids_;
  PinnedArray<int32_t> sampled_host_, top_ids_host_;
  PinnedArray<float> sampled_logprobs_host_, top_logprobs_host_;
};

LlamaCudaRunner::LlamaCudaRunner(LlamaConfig config, const WeightStore* store,
                                 const CudaRunnerOptions& opt)
    : c_(std::move(config)), opt_(opt) {
  if (opt_.block_size <= 0 || opt_.max_batch_tokens <= 0 || opt_.max_num_seqs <= 0)
    throw std::invalid_argument("block size, max batch tokens and max sequences must be > 0");
  if (!(opt_.gpu_memory_utilization > 0.0f && opt_.gpu_memory_utilization <= 1.0f))
    throw std::invalid_argument("gpu_memory_utilization must be in (0, 1]");
  gemm_.set_small_m_gemv(opt_.small_batch_gemv);
  gemm_.set_autotune(opt_.gemm_autotune);
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, opt_.device));
  device_name_ = prop.name;
  num_sms_ = prop.multiProcessorCount;

  const int H = c_.hidden_size, I = c_.intermediate_size, V = c_.vocab_size;
  q_dim_ = c_.num_heads * c_.head_dim;
  kv_dim_ = c_.num_kv_heads * c_.head_dim;
  qkv_dim_ = q_dim_ + 2 * kv_dim_;
  if (opt_.cp.enabled()) {
    if (!opt_.cp.comm->device_memory())
      throw std::invalid_argument("context parallelism on the GPU needs a device communicator");
    cp_size_ = opt_.cp.size();
    cp_rank_ = opt_.cp.rank();
  }
  const int stripe = opt_.block_size * cp_size_;  // positions per engine (super-)block
  max_blocks_per_seq_ = (c_.max_position_embeddings + stripe - 1) / stripe;
  max_local_context_ = std::min(c_.max_position_embeddings, max_blocks_per_seq_ * opt_.block_size);

  // Weights: one arena.
  const size_t per_layer =
      size_t(H) * 2 + size_t(qkv_dim_) * H + size_t(H) * q_dim_ + size_t(2) * I * H + size_t(H) * I;
  const size_t total =
      size_t(V) * H * (c_.tie_word_embeddings ? 1 : 2) + size_t(H) + per_layer * c_.num_layers;
  weights_ = cuda::DeviceBuffer(total * sizeof(bf16));
  bf16* p = weights_.as<bf16>();
  auto take = [&p](size_t n) {
    bf16* r = p;
    p += n;
    return r;
  };
  embed_ = take(size_t(V) * H);
  layers_.resize(c_.num_layers);
  for (LayerWeights& w : layers_) {
    w.attn_norm = take(H);
    w.wqkv = take(size_t(qkv_dim_) * H);
    w.wo = take(size_t(H) * q_dim_);
    w.mlp_norm = take(H);
    w.w_gate_up = take(size_t(2) * I * H);
    w.w_down = take(size_t(H) * I);
  }
  final_norm_ = take(H);
  lm_head_ = c_.tie_word_embeddings ? embed_ : take(size_t(V) * H);
  upload_weights(store);

  std::vector<float> inv_freq = cpu::rope_inv_freq(c_.head_dim, c_.rope_theta, c_.rope_scaling);
  inv_freq_ = cuda::DeviceArray<float>(inv_freq.size());
  inv_freq_.upload(inv_freq.data(), inv_freq.size(), stream_.get());

  // Activations for the largest step.
  const size_t T = opt_.max_batch_tokens, S = opt_.max_num_seqs;
  x_ = cuda::DeviceArray<bf16>(T * H);
  normed_ = cuda::DeviceArray<bf16>(T * H);
  qkv_ = cuda::DeviceArray<bf16>(T * qkv_dim_);
  q_ = cuda::DeviceArray<bf16>(T * q_dim_);
  attn_ = cuda::DeviceArray<bf16>(T * q_dim_);
  proj_ = cuda::DeviceArray<bf16>(T * H);
  gate_up_ = cuda::DeviceArray<bf16>(T * 2 * I);
  act_ = cuda::DeviceArray<bf16>(T * I);
  rows_ = cuda::DeviceArray<bf16>(S * H);
  if (opt_.fused_gemv_norms && opt_.small_batch_gemv) {
    fused_gemv_rows_ = fused_gemv_rows_supported();
    if (fused_gemv_rows_ > 0) x_alt_ = cuda::DeviceArray<bf16>(size_t(fused_gemv_rows_) * H);
  }
  paired_gemv_rows_ = paired_gemv_rows_supported();
  logits_bf16_ = cuda::DeviceArray<bf16>(S * V);
  logits_ = cuda::DeviceArray<float>(S * V);
  logits_host_ = PinnedArray<float>(S * V);
  if (opt_.cp.enabled())
    combine_ = CudaCombineWorkspace(opt_.cp, T * size_t(c_.num_heads), c_.head_dim);

  off_tokens_ = 0;
  off_positions_ = off_tokens_ + T;
  off_slots_ = off_positions_ + T;
  off_query_start_ = off_slots_ + T;
  off_context_lens_ = off_query_start_ + S + 1;
  off_logits_rows_ = off_context_lens_ + S;
  off_block_tables_ = off_logits_rows_ + S;
  const size_t meta_size = off_block_tables_ + S * size_t(max_blocks_per_seq_);
  meta_ = cuda::DeviceArray<int32_t>(meta_size);
  meta_host_ = PinnedArray<int32_t>(meta_size);

  {
    std::vector<cuda::SamplingRowParams> greedy(S);
    for (auto& g : greedy) g.temperature = 0.0f;
    greedy_params_ = cuda::DeviceArray<cuda::SamplingRowParams>(S);
    greedy_params_.upload(greedy.data(), S, stream_.get());
    sampled_ = cuda::DeviceArray<int32_t>(S);
    sample_params_host_ = PinnedArray<cuda::SamplingRowParams>(S);
    sample_params_ = cuda::DeviceArray<cuda::SamplingRowParams>(S);
    sample_workspace_ = cuda::DeviceBuffer(cuda::sampling_workspace_bytes(int(S), V));
    sampled_logprobs_ = cuda::DeviceArray<float>(S);
    top_logprobs_ = cuda::DeviceArray<float>(S * cuda::kMaxTopLogprobs);
    top_ids_ = cuda::DeviceArray<int32_t>(S * cuda::kMaxTopLogprobs);
    sampled_host_ = PinnedArray<int32_t>(S);
    sampled_logprobs_host_ = PinnedArray<float>(S);
    top_ids_host_ = PinnedArray<int32_t>(S * cuda::kMaxTopLogprobs);
    top_logprobs_host_ = PinnedArray<float>(S * cuda::kMaxTopLogprobs);
  }

  // Decode-attention workspace: the largest any batch size may need at full context.
  size_t ws = 0;
  for (int s = 1; s <= opt_.max_num_seqs; ++s)
    ws = std::max(ws, cuda::plan_decode_attention(decode_params(s, max_local_context_), num_sms_)
                          .workspace_bytes);
  attn_workspace_ = cuda::DeviceBuffer(ws);
  CUDA_CHECK(cudaMemsetAsync(attn_workspace_.get(), 0, ws, stream_.get()));
  stream_.sync();

  // KV cache: what remains of the allowed memory.
  size_t free_bytes = 0, total_bytes = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const double allowed = double(total_bytes) * opt_.gpu_memory_utilization;
  const double used = double(total_bytes - free_bytes);
  const size_t block_bytes =
      size_t(2) * c_.num_layers * c_.num_kv_heads * opt_.block_size * c_.head_dim * sizeof(bf16);
  if (opt_.num_kv_blocks > 0) {
    num_blocks_ = opt_.num_kv_blocks;
  } else {
    const double room = allowed - used - 256.0 * (1 << 20);  // headroom for cuBLAS, graphs
    num_blocks_ = room > 0 ? int(std::min(room / double(block_bytes), 1e9)) : 0;
  }
  if (num_blocks_ < 1)
    throw std::runtime_error("the model does not fit on " + device_name_ + ": weights " +
                             gib(double(total * sizeof(bf16))) +
                             " + activations leave no room for the KV cache under " + gib(allowed) +
                             " (" + std::to_string(opt_.gpu_memory_utilization) + " of " +
                             gib(double(total_bytes)) + "; in use " + gib(used) +
                             "); raise --gpu-memory-utilization or lower --max-batch-tokens");
  kv_ = cuda::DeviceBuffer(size_t(num_blocks_) * block_bytes);
  const size_t layer_elems = size_t(num_blocks_) * c_.num_kv_heads * opt_.block_size * c_.head_dim;
  for (int l = 0; l < c_.num_layers; ++l) {
    k_cache_.push_back(kv_.as<bf16>() + (2 * size_t(l)) * layer_elems);
    v_cache_.push_back(kv_.as<bf16>() + (2 * size_t(l) + 1) * layer_elems);
  }
}

void LlamaCudaRunner::upload_tensor(const WeightStore& store, const std::string& name,
                                    std::initializer_list<int64_t> shape, bf16* dst) {
  std::vector<int64_t> s(shape);
  const TensorView& t = store.get(name, s);
  const size_t n = size_t(t.numel());
  if (t.dtype == DType::BF16) {
    // Straight from the mapping; cudaMemcpy copes with pageable, unaligned sources.
    CUDA_CHECK(cudaMemcpy(dst, t.data, n * sizeof(bf16), cudaMemcpyHostToDevice));
    return;
  }
  std::vector<float> f = store.load_f32(name, s);
  std::vector<uint16_t> h(n);
  for (size_t i = 0; i < n; ++i) h[i] = cuda::float_to_bf16_bits(f[i]);
  CUDA_CHECK(cudaMemcpy(dst, h.data(), n * sizeof(uint16_t), cudaMemcpyHostToDevice));
}

void LlamaCudaRunner::upload_weights(const WeightStore* store) {
  const int64_t H = c_.hidden_size, I = c_.intermediate_size, V = c_.vocab_size;
  const int64_t q = q_dim_, kv = kv_dim_;
  if (!store) {
    // --load-format dummy: N(0, 0.02) matrices (HF's initializer_range), unit norms.
    cudaStream_t s = stream_.get();
    uint64_t seed = opt_.dummy_seed * 1000003ull + 1;
    auto fill = [&](bf16* dst, size_t n, float mean, float std) {
      cuda::fill_normal_bf16(dst, n, seed++, mean, std, s);
    };
    fill(embed_, size_t(V * H), 0.0f, 0.02f);
    for (LayerWeights& w : layers_) {
      fill(w.attn_norm, H, 1.0f, 0.0f);
      fill(w.wqkv, size_t(qkv_dim_) * H, 0.0f, 0.02f);
      fill(w.wo, size_t(H * q), 0.0f, 0.02f);
      fill(w.mlp_norm, H, 1.0f, 0.0f);
      fill(w.w_gate_up, size_t(2 * I * H), 0.0f, 0.02f);
      fill(w.w_down, size_t(H * I), 0.0f, 0.02f);
    }
    fill(final_norm_, H, 1.0f, 0.0f);
    if (!c_.tie_word_embeddings) fill(lm_head_, size_t(V * H), 0.0f, 0.02f);
    stream_.sync();
    return;
  }
  upload_tensor(*store, "model.embed_tokens.weight", {V, H}, embed_);
  for (int l = 0; l < c_.num_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    LayerWeights& w = layers_[l];
    upload_tensor(*store, p + "input_layernorm.weight", {H}, w.attn_norm);
    upload_tensor(*store, p + "self_attn.q_proj.weight", {q, H}, w.wqkv);
    upload_tensor(*store, p + "self_attn.k_proj.weight", {kv, H}, w.wqkv + q * H);
    upload_tensor(*store, p + "self_attn.v_proj.weight", {kv, H}, w.wqkv + (q + kv) * H);
    upload_tensor(*store, p + "self_attn.o_proj.weight", {H, q}, w.wo);
    upload_tensor(*store, p + "post_attention_layernorm.weight", {H}, w.mlp_norm);
    upload_tensor(*store, p + "mlp.gate_proj.weight", {I, H}, w.w_gate_up);
    upload_tensor(*store, p + "mlp.up_proj.weight", {I, H}, w.w_gate_up + I * H);
    upload_tensor(*store, p + "mlp.down_proj.weight", {H, I}, w.w_down);
  }
  upload_tensor(*store, "model.norm.weight", {H}, final_norm_);
  if (!c_.tie_word_embeddings) upload_tensor(*store, "lm_head.weight", {V, H}, lm_head_);
}

// 1 when the fused norms (kernels/cuda/gemv.h) take this model's shapes and weights (16-byte
// aligned), else 0. Only single-token steps: at 2 tokens every block re-reading both rows
// cost more than the saved kernel (H200, bench/RESULTS.md).
int LlamaCudaRunner::fused_gemv_rows_supported() const {
  auto aligned = [](const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; };
  for (const LayerWeights& w : layers_) {
    for (const bf16* p : {w.attn_norm, w.wqkv, w.mlp_norm, w.w_gate_up})
      if (!aligned(p)) return 0;
  }
  const bool fits =
      cuda::Gemm::kGemvMaxRowsRouted >= 1 && cuda::gemv_rmsnorm_supported(1, c_.hidden_size);
  return fits ? 1 : 0;
}

// The most rows whose qkv and gate_up gemvs can take the op after them (kernels/cuda/gemv.h:
// gemv_rope_kv_write, gemv_silu_mul): the steps the gemv runs (Gemm::kGemvMaxRowsRouted),
// with 16-byte aligned weights; 0 when off.
int LlamaCudaRunner::paired_gemv_rows_supported() const {
  if (!opt_.fused_gemv_outputs || !opt_.small_batch_gemv) return 0;
  for (const LayerWeights& w : layers_) {
    for (const bf16* p : {w.wqkv, w.w_gate_up})
      if (reinterpret_cast<uintptr_t>(p) % 16 != 0) return 0;
  }
  int rows = std::min(cuda::kMaxGemvPairedRows, cuda::Gemm::kGemvMaxRowsRouted);
  while (rows > 0 && !cuda::gemv_paired_supported(rows, c_.hidden_size, false)) --rows;
  // Steps whose norms are fused give the paired products a norm as their input.
  if (fused_gemv_rows_ > 0 && !cuda::gemv_paired_supported(fused_gemv_rows_, c_.hidden_size, true))
    return 0;
  return rows;
}

void LlamaCudaRunner::product(const cuda::GemvInputSpec& in, const bf16* w, int rows, int n, int k,
                              bf16* out, cudaStream_t s) {
  if (!in.norm_weight) {
    gemm_.run(in.x, w, rows, n, k, out, s);
  } else if (!in.residual_in) {
    cuda::gemv_rmsnorm(in.x, in.norm_weight, in.eps, w, rows, n, k, out, s);
  } else {
    cuda::gemv_add_rmsnorm(in.residual_in, in.x, in.residual_out, in.norm_weight, in.eps, w, rows,
                           n, k, out, s);
  }
}

cuda::DecodeAttentionParams LlamaCudaRunner::decode_params(int n_seqs, int max_context_len) const {
  cuda::DecodeAttentionParams a;
  a.q = q_.data();
  a.k_cache = nullptr;  // per layer
  a.v_cache = nullptr;
  a.block_tables = meta_.data() + off_block_tables_;
  a.context_lens = meta_.data() + off_context_lens_;
  a.num_seqs = n_seqs;
  a.num_q_heads = c_.num_heads;
  a.num_kv_heads = c_.num_kv_heads;
  a.head_dim = c_.head_dim;
  a.block_size = opt_.block_size;
  a.max_blocks_per_seq = max_blocks_per_seq_;
  a.scale = 1.0f / std::sqrt(float(c_.head_dim));
  a.max_context_len = max_context_len;
  // Every plan of this runner (graph buckets, eager steps of any batch and context) shares
  // attn_workspace_.
  a.workspace_num_seqs = opt_.max_num_seqs;
  a.out = attn_.data();
  a.cp_size = cp_size_;
  a.cp_rank = cp_rank_;
  // Launched right after rope_kv_write (or the qkv gemv that does its work), which writes
  // only q and each sequence's last K/V row (and the fused residual add, the residual).
  a.overlap_previous_kernel = true;
  if (opt_.cp.enabled()) {
    a.out_f32 = combine_.partial_out();
    a.lse = combine_.partial_lse();
  }
  return a;
}

void LlamaCudaRunner::enqueue_step(int n, int n_seqs, int n_rows, bool decode, int max_context_len,
                                   int max_query_len, const cuda::DecodeAttentionPlan& plan) {
  cudaStream_t s = stream_.get();
  const int H = c_.hidden_size, I = c_.intermediate_size, V = c_.vocab_size;
  const float eps = c_.rms_norm_eps;
  const int32_t* meta = meta_.data();
  // Single-token steps compute each norm inside the product after it; steps the gemv runs
  // compute RoPE + KV write and SiLU·mul in the product before them.
  const bool fuse = n <= fused_gemv_rows_;
  const bool paired = n <= paired_gemv_rows_;
  bf16* residual = x_.data();  // the residual stream (fused steps: x_ and x_alt_ in turn)
  bf16* residual_next = x_alt_.data();
  cuda::embedding(embed_, meta + off_tokens_, n, H, residual, s);
  for (int l = 0; l < c_.num_layers; ++l) {
    const LayerWeights& w = layers_[l];
    // The qkv product's input: the fused norm, or the separate norm's output.
    cuda::GemvInputSpec qkv_in;
    if (fuse) {
      qkv_in.x = l == 0 ? residual : proj_.data();
      qkv_in.norm_weight = w.attn_norm;
      qkv_in.eps = eps;
      if (l > 0) {
        qkv_in.residual_in = residual;
        qkv_in.residual_out = residual_next;
      }
    } else {
      if (l == 0)
        cuda::rmsnorm(residual, w.attn_norm, n, H, eps, normed_.data(), s);
      else
        cuda::add_rmsnorm(residual, proj_.data(), w.attn_norm, n, H, eps, normed_.data(), s);
      qkv_in.x = normed_.data();
    }

    cuda::RopeKvWriteParams r;
    r.positions = meta + off_positions_;
    r.slot_mapping = meta + off_slots_;
    r.inv_freq = inv_freq_.data();
    r.n_tokens = n;
    r.num_q_heads = c_.num_heads;
    r.num_kv_heads = c_.num_kv_heads;
    r.head_dim = c_.head_dim;
    r.block_size = opt_.block_size;
    r.num_blocks = num_blocks_;
    r.q_out = q_.data();
    r.k_cache = k_cache_[l];
    r.v_cache = v_cache_[l];
    if (paired) {
      cuda::gemv_rope_kv_write(qkv_in, w.wqkv, n, H, r, s);
    } else {
      product(qkv_in, w.wqkv, n, qkv_dim_, H, qkv_.data(), s);
      r.qkv = qkv_.data();
      cuda::rope_kv_write(r, s);
    }
    if (qkv_in.residual_in) std::swap(residual, residual_next);

    if (decode) {
      cuda::DecodeAttentionParams a = decode_params(n_seqs, max_context_len);
      a.k_cache = k_cache_[l];
      a.v_cache = v_cache_[l];
      cuda::decode_attention(a, plan, attn_workspace_.get(), s);
    } else {
      cuda::PrefillAttentionParams a;
      a.q = q_.data();
      a.k_cache = k_cache_[l];
      a.v_cache = v_cache_[l];
      a.block_tables = meta + off_block_tables_;
      a.context_lens = meta + off_context_lens_;
      a.query_start = meta + off_query_start_;
      a.num_seqs = n_seqs;
      a.num_tokens = n;
      a.num_q_heads = c_.num_heads;
      a.num_kv_heads = c_.num_kv_heads;
      a.head_dim = c_.head_dim;
      a.block_size = opt_.block_size;
      a.max_blocks_per_seq = max_blocks_per_seq_;
      a.max_query_len = max_query_len;
      a.scale = 1.0f / std::sqrt(float(c_.head_dim));
      a.out = attn_.data();
      a.cp_size = cp_size_;
      a.cp_rank = cp_rank_;
      if (opt_.cp.enabled()) {
        a.out_f32 = combine_.partial_out();
        a.lse = combine_.partial_lse();
      }
      cuda::prefill_attention(a, s);
    }
    if (opt_.cp.enabled()) combine_.combine(size_t(n) * c_.num_heads, attn_.data(), s);
    gemm_.run(attn_.data(), w.wo, n, H, q_dim_, proj_.data(), s);
    cuda::GemvInputSpec mlp_in;
    if (fuse) {
      mlp_in.x = proj_.data();
      mlp_in.norm_weight = w.mlp_norm;
      mlp_in.eps = eps;
      mlp_in.residual_in = residual;
      mlp_in.residual_out = residual_next;
    } else {
      cuda::add_rmsnorm(residual, proj_.data(), w.mlp_norm, n, H, eps, normed_.data(), s);
      mlp_in.x = normed_.data();
    }
    if (paired) {
      cuda::gemv_silu_mul(mlp_in, w.w_gate_up, n, I, H, act_.data(), s);
    } else {
      product(mlp_in, w.w_gate_up, n, 2 * I, H, gate_up_.data(), s);
      cuda::silu_mul(gate_up_.data(), n, I, act_.data(), s);
    }
    if (fuse) std::swap(residual, residual_next);
    gemm_.run(act_.data(), w.w_down, n, H, I, proj_.data(), s);
  }
  cuda::add_rmsnorm(residual, proj_.data(), final_norm_, n, H, eps, normed_.data(), s);
  // Gather the rows whose logits are wanted (the embedding kernel is exactly a row gather).
  cuda::embedding(normed_.data(), meta + off_logits_rows_, n_rows, H, rows_.data(), s);
  // Logits are rounded to bf16 like the lm_head output of transformers and vLLM, then
  // widened: greedy ties then break exactly as theirs do (lowest id among equal bf16 values).
  gemm_.run(rows_.data(), lm_head_, n_rows, V, H, logits_bf16_.data(), s);
  cuda::bf16_to_f32(logits_bf16_.data(), size_t(n_rows) * V, logits_.data(), s);
}

void LlamaCudaRunner::forward(const ForwardBatch& b, std::vector<float>& logits) {
  const int n_rows = run_step(b);
  const int V = c_.vocab_size;
  cudaStream_t st = stream_.get();
  CUDA_CHECK(cudaMemcpyAsync(logits_host_.data(), logits_.data(),
                             size_t(n_rows) * V * sizeof(float), cudaMemcpyDeviceToHost, st));
  stream_.sync();
  logits.assign(logits_host_.data(), logits_host_.data() + size_t(n_rows) * V);
}

void LlamaCudaRunner::forward_greedy(const ForwardBatch& b, std::vector<int32_t>& ids) {
  const int n_rows = run_step(b);
  cudaStream_t st = stream_.get();
  cuda::SamplingBatch sb;
  sb.logits = logits_.data();
  sb.rows = n_rows;
  sb.vocab = c_.vocab_size;
  sb.params = greedy_params_.data();
  sb.tokens = sampled_.data();
  cuda::sample(sb, nullptr, 0, st);
  ids.resize(n_rows);
  CUDA_CHECK(cudaMemcpyAsync(ids.data(), sampled_.data(), size_t(n_rows) * sizeof(int32_t),
                             cudaMemcpyDeviceToHost, st));
  stream_.sync();
}

void LlamaCudaRunner::forward_sample(const ForwardBatch& b, std::span<const DeviceSamplingRow> rows,
                                     std::vector<DeviceSampledToken>& tokens) {
  check_sampling_rows(b, rows);
  const int n_rows = run_step(b);
  const int V = c_.vocab_size;
  cudaStream_t st = stream_.get();

  // Parameters, and the penalty / bias lists of the rows that have them (CSR; a row with
  // neither reads its logits directly).
  std::vector<int32_t>& penalty_offsets = sample_penalty_offsets_;
  std::vector<int32_t>& bias_offsets = sample_bias_offsets_;
  std::vector<cuda::SamplingPenaltyEntry>& penalties = sample_penalties_;
  std::vector<cuda::SamplingBiasEntry>& biases = sample_biases_;
  penalty_offsets.assign(1, 0);
  bias_offsets.assign(1, 0);
  penalties.clear();
  biases.clear();
  bool any_logprobs = false, any_top = false;
  for (int r = 0; r < n_rows; ++r) {
    const DeviceSamplingRow& row = rows[size_t(r)];
    cuda::SamplingRowParams& p = sample_params_host_.data()[r];
    p.temperature = row.temperature;
    p.top_k = row.top_k;
    p.top_p = row.top_p;
    p.min_p = row.min_p;
    p.repetition_penalty = row.repetition_penalty;
    p.presence_penalty = row.presence_penalty;
    p.frequency_penalty = row.frequency_penalty;
    p.logprobs = row.logprobs;
    p.seed = row.seed;
    p.step = row.step;
    any_logprobs = any_logprobs || row.logprobs >= 0;
    any_top = any_top || row.logprobs >= 1;
    if (row.repetition_penalty != 1.0f || row.presence_penalty != 0.0f ||
        row.frequency_penalty != 0.0f)
      cuda::append_penalty_entries(row.prompt_ids, row.output_ids, penalties);
    penalty_offsets.push_back(int32_t(penalties.size()));
    for (const auto& [id, bias] : row.logit_bias) biases.push_back({id, bias});
    bias_offsets.push_back(int32_t(biases.size()));
  }
  sample_params_.upload(sample_params_host_.data(), size_t(n_rows), st);

  cuda::SamplingBatch sb;
  sb.logits = logits_.data();
  sb.rows = n_rows;
  sb.vocab = V;
  sb.params = sample_params_.data();
  sb.tokens = sampled_.data();
  sb.logprobs = any_logprobs ? sampled_logprobs_.data() : nullptr;
  sb.top_ids = any_top ? top_ids_.data() : nullptr;
  sb.top_logprobs = any_top ? top_logprobs_.data() : nullptr;
  const bool lists = !penalties.empty() || !biases.empty();
  if (lists) {
    // One upload: both offset arrays, then the entries (each part 16-byte aligned).
    auto align16 = [](size_t x) { return (x + 15) / 16 * 16; };
    const size_t offsets_bytes = align16(penalty_offsets.size() * sizeof(int32_t));
    const size_t penalties_bytes = align16(penalties.size() * sizeof(cuda::SamplingPenaltyEntry));
    const size_t total =
        2 * offsets_bytes + penalties_bytes + biases.size() * sizeof(cuda::SamplingBiasEntry);
    if (sample_lists_.bytes() < total) sample_lists_ = cuda::DeviceBuffer(total);
    std::vector<char>& host = sample_lists_host_;
    host.resize(total);
    std::memcpy(host.data(), penalty_offsets.data(), penalty_offsets.size() * sizeof(int32_t));
    std::memcpy(host.data() + offsets_bytes, bias_offsets.data(),
                bias_offsets.size() * sizeof(int32_t));
    std::memcpy(host.data() + 2 * offsets_bytes, penalties.data(),
                penalties.size() * sizeof(cuda::SamplingPenaltyEntry));
    std::memcpy(host.data() + 2 * offsets_bytes + penalties_bytes, biases.data(),
                biases.size() * sizeof(cuda::SamplingBiasEntry));
    // Pageable source: the copy is done when the call returns, so `host` may be reused.
    CUDA_CHECK(
        cudaMemcpyAsync(sample_lists_.get(), host.data(), total, cudaMemcpyHostToDevice, st));
    char* d = static_cast<char*>(sample_lists_.get());
    sb.penalty_offsets = reinterpret_cast<const int32_t*>(d);
    sb.bias_offsets = reinterpret_cast<const int32_t*>(d + offsets_bytes);
    sb.penalty_entries = reinterpret_cast<const cuda::SamplingPenaltyEntry*>(d + 2 * offsets_bytes);
    sb.bias_entries =
        reinterpret_cast<const cuda::SamplingBiasEntry*>(d + 2 * offsets_bytes + penalties_bytes);
  }
  cuda::sample(sb, lists ? sample_workspace_.get() : nullptr, lists ? sample_workspace_.bytes() : 0,
               st);

  sampled_.download(sampled_host_.data(), size_t(n_rows), st);
  if (any_logprobs) sampled_logprobs_.download(sampled_logprobs_host_.data(), size_t(n_rows), st);
  const size_t top_n = size_t(n_rows) * cuda::kMaxTopLogprobs;
  if (any_top) {
    top_ids_.download(top_ids_host_.data(), top_n, st);
    top_logprobs_.download(top_logprobs_host_.data(), top_n, st);
  }
  stream_.sync();
  tokens.resize(size_t(n_rows));
  for (int r = 0; r < n_rows; ++r) {
    DeviceSampledToken& t = tokens[size_t(r)];
    t.id = sampled_host_.data()[r];
    t.logprob = rows[size_t(r)].logprobs >= 0 ? sampled_logprobs_host_.data()[r] : 0.0f;
    t.top_logprobs.clear();
    for (int i = 0; i < rows[size_t(r)].logprobs; ++i) {
      const size_t at = size_t(r) * cuda::kMaxTopLogprobs + size_t(i);
      if (top_ids_host_.data()[at] < 0) break;  // fewer tokens than asked for
      t.top_logprobs.emplace_back(top_ids_host_.data()[at], top_logprobs_host_.data()[at]);
    }
  }
}

int LlamaCudaRunner::run_step(const ForwardBatch& b) {
  const int n = b.num_tokens(), n_seqs = b.num_seqs(), n_rows = int(b.logits_rows.size());
  const int V = c_.vocab_size;
  if (n == 0 || n_seqs == 0) throw std::invalid_argument("empty forward batch");
  if (n > opt_.max_batch_tokens)
    throw std::invalid_argument("batch of " + std::to_string(n) + " tokens exceeds " +
                                std::to_string(opt_.max_batch_tokens) + " (max batch tokens)");
  if (n_seqs > opt_.max_num_seqs || n_rows > opt_.max_num_seqs)
    throw std::invalid_argument("batch of " + std::to_string(std::max(n_seqs, n_rows)) +
                                " sequences/logits rows exceeds " +
                                std::to_string(opt_.max_num_seqs));
  if (b.max_blocks_per_seq > max_blocks_per_seq_)
    throw std::invalid_argument(
        "block tables of " + std::to_string(b.max_blocks_per_seq) + " blocks exceed the " +
        std::to_string(max_blocks_per_seq_) +
        " a sequence of max_position_embeddings tokens needs (context too long for the model)");
  if (int(b.positions.size()) != n || int(b.slot_mapping.size()) != n ||
      int(b.query_start.size()) != n_seqs + 1 || b.query_start.back() != n ||
      b.block_tables.size() != size_t(n_seqs) * b.max_blocks_per_seq)
    throw std::invalid_argument("malformed forward batch");
  const int64_t num_slots = int64_t(num_blocks_) * opt_.block_size * cp_size_;
  for (int t = 0; t < n; ++t) {
    if (b.token_ids[t] < 0 || b.token_ids[t] >= V)
      throw std::invalid_argument("token id " + std::to_string(b.token_ids[t]) +
                                  " is outside the vocabulary (size " + std::to_string(V) + ")");
    if (b.slot_mapping[t] < 0 || b.slot_mapping[t] >= num_slots)
      throw std::invalid_argument("cache slot outside the KV cache");
  }
  for (int32_t row : b.logits_rows)
    if (row < 0 || row >= n) throw std::invalid_argument("logits row outside the batch");
  for (int32_t blk : b.block_tables)
    if (blk >= num_blocks_) throw std::invalid_argument("block id outside the KV cache");

  int max_ctx = 0, max_q = 0;
  bool decode = n == n_seqs;
  for (int s = 0; s < n_seqs; ++s) {
    const int q_len = b.query_start[s + 1] - b.query_start[s];
    if (q_len <= 0 || q_len > b.context_lens[s] ||
        b.context_lens[s] > int64_t(b.max_blocks_per_seq) * opt_.block_size * cp_size_)
      throw std::invalid_argument("malformed forward batch: query/context lengths");
    max_ctx =
        std::max(max_ctx, local_kv_len(b.context_lens[s], cp_size_, cp_rank_, opt_.block_size));
    max_q = std::max(max_q, q_len);
    decode = decode && q_len == 1;
  }

  // Decode steps replay a captured graph for the next batch-size bucket; the padding
  // sequences have empty contexts and padding slots, so they read and write nothing.
  int bucket = 0;
  const bool capturable = !opt_.cp.enabled() || opt_.cp.comm->graph_capturable();
  // (A step with more logits rows than sequences, an n > 1 request's forks drawing from
  // copies of its row, runs eagerly: the graphs gather one row per sequence.)
  if (decode && n_rows <= n_seqs && opt_.cuda_graphs && capturable) {
    bucket = 1;
    while (bucket < n_seqs) bucket *= 2;
    bucket = std::min(bucket, opt_.max_num_seqs);
  }
  const int rows_used = bucket ? bucket : n_rows;
  const int seqs_used = bucket ? bucket : n_seqs;

  int32_t* h = meta_host_.data();
  for (int t = 0; t < n; ++t) {
    h[off_tokens_ + t] = b.token_ids[t];
    h[off_positions_ + t] = b.positions[t];
    h[off_slots_ + t] = local_slot(b.slot_mapping[t], cp_size_, cp_rank_, opt_.block_size);
  }
  for (int s = 0; s <= n_seqs; ++s) h[off_query_start_ + s] = b.query_start[s];
  for (int s = 0; s < n_seqs; ++s) h[off_context_lens_ + s] = b.context_lens[s];
  for (int r = 0; r < n_rows; ++r) h[off_logits_rows_ + r] = b.logits_rows[r];
  for (int s = n_seqs; s < seqs_used; ++s) {  // graph padding
    h[off_tokens_ + s] = 0;
    h[off_positions_ + s] = 0;
    h[off_slots_ + s] = -1;
    h[off_query_start_ + s + 1] = s + 1;
    h[off_context_lens_ + s] = 0;
  }
  for (int r = n_rows; r < rows_used; ++r) h[off_logits_rows_ + r] = 0;
  cudaStream_t st = stream_.get();
  CUDA_CHECK(cudaMemcpyAsync(meta_.data(), h, off_block_tables_ * sizeof(int32_t),
                             cudaMemcpyHostToDevice, st));
  for (int s = 0; s < n_seqs; ++s)
    std::memcpy(h + off_block_tables_ + size_t(s) * max_blocks_per_seq_,
                b.block_tables.data() + size_t(s) * b.max_blocks_per_seq,
                size_t(b.max_blocks_per_seq) * sizeof(int32_t));
  CUDA_CHECK(cudaMemcpy2DAsync(
      meta_.data() + off_block_tables_, size_t(max_blocks_per_seq_) * sizeof(int32_t),
      h + off_block_tables_, size_t(max_blocks_per_seq_) * sizeof(int32_t),
      size_t(b.max_blocks_per_seq) * sizeof(int32_t), size_t(n_seqs), cudaMemcpyHostToDevice, st));

  if (bucket) {
    cuda::Graph& g = decode_graphs_[bucket];
    if (!g.ready()) {
      // One graph per bucket serves every context length: the attention reads the lengths
      // from device memory and plans its splits for the longest possible context.
      const int plan_ctx = max_local_context_;
      const cuda::DecodeAttentionPlan plan =
          cuda::plan_decode_attention(decode_params(bucket, plan_ctx), num_sms_);
      g.capture(st, [&] { enqueue_step(bucket, bucket, bucket, true, plan_ctx, 1, plan); });
    }
    g.launch(st);
  } else {
    cuda::DecodeAttentionPlan plan;
    if (decode) plan = cuda::plan_decode_attention(decode_params(n_seqs, max_ctx), num_sms_);
    enqueue_step(n, n_seqs, n_rows, decode, max_ctx, max_q, plan);
  }
  return n_rows;
}

}  // namespace

bool cuda_available(std::string* why_not) {
  std::string why;
  const bool ok = !cuda::list_devices(&why).empty();
  if (!ok && why_not) *why_not = why;
  return ok;
}

int cuda_fused_gemv_rows(const ModelRunner& runner) {
  const auto* cuda_runner = dynamic_cast<const LlamaCudaRunner*>(&runner);
  return cuda_runner ? cuda_runner->fused_gemv_rows() : 0;
}

int cuda_paired_gemv_rows(const ModelRunner& runner) {
  const auto* cuda_runner = dynamic_cast<const LlamaCudaRunner*>(&runner);
  return cuda_runner ? cuda_runner->paired_gemv_rows() : 0;
}

std::unique_ptr<ModelRunner> make_cuda_runner(const std::filesystem::path& model_dir,
                                              const CudaRunnerOptions& options) {
  CUDA_CHECK(cudaSetDevice(options.device));
  LlamaConfig config = load_llama_config(model_dir);
  if (options.dummy_weights) return std::make_unique<LlamaCudaRunner>(config, nullptr, options);
  WeightStore store = WeightStore::open(model_dir);
  return std::make_unique<LlamaCudaRunner>(config, &store, options);
}

}  // namespace arbor
