// Hugging Face Llama config.json (+ generation_config.json) → LlamaConfig.
#pragma once

#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nlohmann/json_fwd.hpp>

#include "kernels/cpu/ops.h"

namespace arbor {

// Every problem with a model folder: the message names the file and what is wrong.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Sampling defaults a model folder may ship in generation_config.json.
struct GenerationDefaults {
  std::optional<float> temperature;
  std::optional<float> top_p;
  std::optional<int> top_k;
  std::optional<float> repetition_penalty;
};

struct LlamaConfig {
  std::string architecture;  // e.g. "LlamaForCausalLM"
  int hidden_size = 0;
  int intermediate_size = 0;
  int num_layers = 0;
  int num_heads = 0;
  int num_kv_heads = 0;  // num_key_value_heads; defaults to num_heads
  int head_dim = 0;      // "head_dim" if present, else hidden_size / num_heads
  int vocab_size = 0;
  int max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  cpu::RopeScaling rope_scaling;  // llama3 scaling when config has rope_type "llama3"
  bool tie_word_embeddings = false;
  std::optional<int> bos_token_id;
  std::vector<int> eos_token_ids;  // config's eos_token_id (int or list), merged with
                                   // generation_config.json's
  std::string torch_dtype;         // informational ("bfloat16", ...)
  GenerationDefaults generation;
};

// Parses a config.json object; `source` names the file in error messages. Throws ModelError
// for unsupported architectures (anything but Llama), missing or invalid fields,
// inconsistent head counts, or unsupported rope scaling / biases / activations.
// Required: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads,
// vocab_size, and "architectures" containing "LlamaForCausalLM" (or, without architectures,
// model_type "llama"). Optional with Hugging Face's defaults: num_key_value_heads,
// head_dim, max_position_embeddings (2048), rms_norm_eps (1e-6), rope_theta (10000),
// rope_scaling (none; "llama3" and "default" supported), tie_word_embeddings (false),
// hidden_act ("silu" only). The transformers-v5 form "rope_parameters" {rope_type,
// rope_theta, ...} is read when rope_scaling is absent. A field set to null counts as absent.
LlamaConfig parse_llama_config(const nlohmann::json& config, const std::string& source);

// Reads model_dir/config.json and, if present, model_dir/generation_config.json: its
// eos_token_id (int or list) is merged into eos_token_ids (union, config's ids first), its
// bos_token_id is used when config.json has none, and temperature / top_p / top_k /
// repetition_penalty become `generation` (do_sample is ignored, as vLLM does).
LlamaConfig load_llama_config(const std::filesystem::path& model_dir);

// Reads and parses one JSON file. Throws ModelError naming the file when it cannot be read
// or is not valid JSON (with the parser's message). Shared by the model-folder loaders.
nlohmann::json read_json_file(const std::filesystem::path& path);

}  // namespace arbor
