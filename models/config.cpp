// config.json / generation_config.json → LlamaConfig. Every field is type-checked; errors
// name the file and the field.
#include "models/config.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <sstream>
#include <utility>

#include <nlohmann/json.hpp>

namespace arbor {
namespace {

using nlohmann::json;

// A JSON value for an error message, cut short if it is long.
std::string show(const json& value) {
  std::string s = value.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// Reads fields of one JSON object; `source` names the file in messages.
class Fields {
 public:
  Fields(const json& object, std::string source) : obj_(object), source_(std::move(source)) {}

  // The value of `key`, or nullptr when absent or null.
  const json* find(const std::string& key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  [[noreturn]] void fail(const std::string& what) const { throw ModelError(source_ + ": " + what); }
  [[noreturn]] void bad(const std::string& key, const std::string& must, const json& v) const {
    fail("field '" + key + "' must be " + must + ", found " + show(v));
  }

  // A JSON integer in [lo, INT_MAX].
  int to_int(const std::string& key, const json& v, int lo, const char* must) const {
    if (!v.is_number_integer()) bad(key, must, v);
    if (v.is_number_unsigned()) {
      auto u = v.get<uint64_t>();
      if (u > uint64_t(std::numeric_limits<int>::max())) bad(key, must, v);
      if (int(u) < lo) bad(key, must, v);
      return int(u);
    }
    auto i = v.get<int64_t>();
    if (i < lo || i > std::numeric_limits<int>::max()) bad(key, must, v);
    return int(i);
  }

  int positive_int(const std::string& key) const {
    const json* v = find(key);
    if (!v) fail("missing field '" + key + "'");
    return to_int(key, *v, 1, "a positive integer");
  }
  std::optional<int> optional_positive_int(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return to_int(key, *v, 1, "a positive integer");
  }
  std::optional<int> optional_token_id(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    return to_int(key, *v, 0, "a token id (a non-negative integer)");
  }
  // int, list of ints, or absent/null (empty).
  std::vector<int> token_ids(const std::string& key) const {
    const json* v = find(key);
    if (!v) return {};
    const char* must = "a token id or a list of token ids";
    if (v->is_array()) {
      std::vector<int> ids;
      for (const json& e : *v) ids.push_back(to_int(key, e, 0, must));
      return ids;
    }
    return {to_int(key, *v, 0, must)};
  }

  // A finite number (integer or float).
  std::optional<double> optional_number(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_number()) bad(key, "a number", *v);
    double d = v->get<double>();
    if (!std::isfinite(d)) bad(key, "a finite number", *v);
    return d;
  }
  std::optional<double> optional_positive_number(const std::string& key) const {
    auto d = optional_number(key);
    if (d && !(*d > 0.0)) bad(key, "a positive number", *find(key));
    return d;
  }
  double positive_number(const std::string& key) const {
    auto d = optional_positive_number(key);
    if (!d) fail("missing field '" + key + "'");
    return *d;
  }
  std::optional<bool> optional_bool(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_boolean()) bad(key, "true or false", *v);
    return v->get<bool>();
  }
  std::optional<std::string> optional_string(const std::string& key) const {
    const json* v = find(key);
    if (!v) return std::nullopt;
    if (!v->is_string()) bad(key, "a string", *v);
    return v->get<std::string>();
  }

 private:
  const json& obj_;
  std::string source_;
};

void parse_architecture(const Fields& f, const std::string& source, LlamaConfig& out) {
  constexpr const char* kLlama = "LlamaForCausalLM";
  const std::string tail = " in " + source + " (arbor serves Llama-architecture models)";
  if (const json* archs = f.find("architectures"); archs && !archs->empty()) {
    if (!archs->is_array()) f.bad("architectures", "a list of strings", *archs);
    std::string listed;
    for (const json& a : *archs) {
      if (!a.is_string()) f.bad("architectures", "a list of strings", *archs);
      if (a.get<std::string>() == kLlama) {
        out.architecture = kLlama;
        return;
      }
      listed += (listed.empty() ? "" : ", ") + a.get<std::string>();
    }
    throw ModelError("unsupported architecture " + listed + tail);
  }
  auto model_type = f.optional_string("model_type");
  if (model_type == "llama") {
    out.architecture = kLlama;
    return;
  }
  throw ModelError("unsupported architecture " +
                   (model_type ? "(model_type '" + *model_type + "')"
                               : std::string("(no 'architectures' or 'model_type')")) +
                   tail);
}

// rope_scaling (or the scaling part of transformers-v5 rope_parameters).
cpu::RopeScaling parse_rope_scaling(const json& scaling, const std::string& key,
                                    const std::string& source) {
  if (!scaling.is_object()) {
    throw ModelError(source + ": field '" + key + "' must be an object or null, found " +
                     show(scaling));
  }
  Fields f(scaling, source + ": " + key);
  auto type = f.optional_string("rope_type");
  if (!type) type = f.optional_string("type");
  cpu::RopeScaling rs;
  if (!type || *type == "default") return rs;
  if (*type != "llama3") {
    throw ModelError(source + ": " + key + " type '" + *type +
                     "' is not supported (arbor supports 'llama3' and 'default')");
  }
  rs.llama3 = true;
  rs.factor = float(f.positive_number("factor"));
  rs.low_freq_factor = float(f.positive_number("low_freq_factor"));
  rs.high_freq_factor = float(f.positive_number("high_freq_factor"));
  rs.original_max_position = f.positive_int("original_max_position_embeddings");
  if (!(rs.high_freq_factor > rs.low_freq_factor)) {
    f.fail("high_freq_factor (" + show(scaling["high_freq_factor"]) +
           ") must be greater than low_freq_factor (" + show(scaling["low_freq_factor"]) + ")");
  }
  return rs;
}

}  // namespace

json read_json_file(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ModelError("cannot read " + path.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw ModelError("cannot read " + path.string());
  try {
    return json::parse(ss.str());
  } catch (const json::exception& e) {
    throw ModelError(path.string() + ": invalid JSON: " + e.what());
  }
}

LlamaConfig parse_llama_config(const json& config, const std::string& source) {
  if (!config.is_object()) {
    throw ModelError(source + ": expected a JSON object, found " + show(config));
  }
  Fields f(config, source);
  LlamaConfig c;
  parse_architecture(f, source, c);

  c.hidden_size = f.positive_int("hidden_size");
  c.intermediate_size = f.positive_int("intermediate_size");
  c.num_layers = f.positive_int("num_hidden_layers");
  c.num_heads = f.positive_int("num_attention_heads");
  c.num_kv_heads = f.optional_positive_int("num_key_value_heads").value_or(c.num_heads);
  c.vocab_size = f.positive_int("vocab_size");
  c.max_position_embeddings = f.optional_positive_int("max_position_embeddings").value_or(2048);

  if (c.num_heads % c.num_kv_heads != 0) {
    f.fail("num_attention_heads (" + std::to_string(c.num_heads) +
           ") must be divisible by num_key_value_heads (" + std::to_string(c.num_kv_heads) + ")");
  }
  if (auto hd = f.optional_positive_int("head_dim")) {
    c.head_dim = *hd;
  } else {
    if (c.hidden_size % c.num_heads != 0) {
      f.fail("hidden_size (" + std::to_string(c.hidden_size) +
             ") must be divisible by num_attention_heads (" + std::to_string(c.num_heads) +
             ") when head_dim is not given");
    }
    c.head_dim = c.hidden_size / c.num_heads;
  }
  if (c.head_dim % 2 != 0) {
    f.fail("head_dim (" + std::to_string(c.head_dim) + ") must be even for rotary embeddings");
  }

  c.rms_norm_eps = float(f.optional_positive_number("rms_norm_eps").value_or(1e-6));
  if (auto theta = f.optional_positive_number("rope_theta")) c.rope_theta = float(*theta);
  if (const json* rs = f.find("rope_scaling")) {
    c.rope_scaling = parse_rope_scaling(*rs, "rope_scaling", source);
  } else if (const json* rp = f.find("rope_parameters")) {
    // transformers v5: rope_theta moves in here, next to the scaling type.
    c.rope_scaling = parse_rope_scaling(*rp, "rope_parameters", source);
    Fields pf(*rp, source + ": rope_parameters");
    if (auto theta = pf.optional_positive_number("rope_theta")) c.rope_theta = float(*theta);
  }

  c.tie_word_embeddings = f.optional_bool("tie_word_embeddings").value_or(false);
  if (f.optional_bool("attention_bias").value_or(false)) {
    f.fail("attention_bias = true is not supported (arbor's Llama has no bias terms)");
  }
  if (f.optional_bool("mlp_bias").value_or(false)) {
    f.fail("mlp_bias = true is not supported (arbor's Llama has no bias terms)");
  }
  if (auto act = f.optional_string("hidden_act"); act && *act != "silu") {
    f.fail("hidden_act '" + *act + "' is not supported (arbor's Llama MLP uses silu)");
  }

  c.bos_token_id = f.optional_token_id("bos_token_id");
  c.eos_token_ids = f.token_ids("eos_token_id");
  if (auto dt = f.optional_string("torch_dtype")) {
    c.torch_dtype = *dt;
  } else if (auto dt2 = f.optional_string("dtype")) {
    c.torch_dtype = *dt2;
  }
  return c;
}

LlamaConfig load_llama_config(const std::filesystem::path& model_dir) {
  namespace fs = std::filesystem;
  const fs::path config_path = model_dir / "config.json";
  std::error_code ec;
  if (!fs::is_regular_file(config_path, ec)) {
    throw ModelError("no config.json in " + model_dir.string() +
                     (fs::is_directory(model_dir, ec) ? "" : " (the folder does not exist)"));
  }
  LlamaConfig c = parse_llama_config(read_json_file(config_path), config_path.string());

  const fs::path gen_path = model_dir / "generation_config.json";
  if (!fs::exists(gen_path, ec)) return c;
  const json gen = read_json_file(gen_path);
  const std::string source = gen_path.string();
  if (!gen.is_object()) throw ModelError(source + ": expected a JSON object, found " + show(gen));
  Fields g(gen, source);
  for (int id : g.token_ids("eos_token_id")) {
    if (std::find(c.eos_token_ids.begin(), c.eos_token_ids.end(), id) == c.eos_token_ids.end()) {
      c.eos_token_ids.push_back(id);
    }
  }
  if (!c.bos_token_id) c.bos_token_id = g.optional_token_id("bos_token_id");
  if (auto t = g.optional_number("temperature")) {
    if (*t < 0) g.bad("temperature", "a non-negative number", gen["temperature"]);
    c.generation.temperature = float(*t);
  }
  if (auto p = g.optional_number("top_p")) {
    if (!(*p > 0 && *p <= 1)) g.bad("top_p", "a number in (0, 1]", gen["top_p"]);
    c.generation.top_p = float(*p);
  }
  if (const json* k = g.find("top_k")) {
    // HF's "no top-k" is 0; keep it (callers treat <= 0 as disabled).
    c.generation.top_k = g.to_int("top_k", *k, 0, "a non-negative integer");
  }
  if (auto r = g.optional_positive_number("repetition_penalty")) {
    c.generation.repetition_penalty = float(*r);
  }
  return c;
}

}  // namespace arbor
