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
// inconsistent head counts, or unsupported rope scaling / biases.
LlamaConfig parse_llama_config(const nlohmann::json& config, const std::string& source);

// Reads model_dir/config.json and, if present, model_dir/generation_config.json.
LlamaConfig load_llama_config(const std::filesystem::path& model_dir);

}  // namespace arbor
