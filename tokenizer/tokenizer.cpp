// load_tokenizer(): picks the tokenizer implementation from the files in a model folder.
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/hf_bpe_tokenizer.h"
#include "tokenizer/sentencepiece_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace arbor {
namespace {

// tokenizer_config.json's settings that the tokenizers use; unset when absent or null.
struct TokenizerConfig {
  std::optional<bool> add_bos, add_eos;
  std::optional<std::string> bos_token, eos_token;
};

// Reads tokenizer_config.json when the file exists. A null value keeps the default, as in
// Hugging Face.
TokenizerConfig read_tokenizer_config(const std::filesystem::path& model_dir) {
  TokenizerConfig result;
  const auto file = model_dir / "tokenizer_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return result;
  std::ifstream in(file, std::ios::binary);
  if (!in) throw TokenizerError("cannot read " + file.string());
  std::ostringstream text;
  text << in.rdbuf();
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception& e) {
    throw TokenizerError(file.string() + " is not valid JSON: " + e.what());
  }
  if (!config.is_object()) throw TokenizerError(file.string() + " is not a JSON object");
  const auto read_flag = [&](const char* key, std::optional<bool>& flag) {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) return;
    if (!it->is_boolean()) {
      throw TokenizerError(file.string() + ": \"" + key + "\" must be true, false or null, not " +
                           it->dump());
    }
    flag = it->get<bool>();
  };
  // A token is a string or an AddedToken object {"content": ...}.
  const auto read_token = [&](const char* key, std::optional<std::string>& token) {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) return;
    if (it->is_string()) {
      token = it->get<std::string>();
    } else if (it->is_object() && it->contains("content") && it->at("content").is_string()) {
      token = it->at("content").get<std::string>();
    } else {
      throw TokenizerError(file.string() + ": \"" + key +
                           "\" must be a string, {\"content\": string} or null, not " + it->dump());
    }
  };
  read_flag("add_bos_token", result.add_bos);
  read_flag("add_eos_token", result.add_eos);
  read_token("bos_token", result.bos_token);
  read_token("eos_token", result.eos_token);
  return result;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(model_dir, ec)) {
    throw TokenizerError("model folder " + model_dir.string() + " does not exist");
  }
  // tokenizer.json first: it is what Hugging Face's (fast) tokenizer uses when both exist.
  const auto hf_json = model_dir / "tokenizer.json";
  if (std::filesystem::exists(hf_json, ec)) {
    const auto config = read_tokenizer_config(model_dir);
    return std::make_unique<HfBpeTokenizer>(
        hf_json, HfBpeOptions{config.add_bos, config.add_eos, config.bos_token, config.eos_token});
  }
  const auto sp_model = model_dir / "tokenizer.model";
  if (std::filesystem::exists(sp_model, ec)) {
    const auto config = read_tokenizer_config(model_dir);
    SentencePieceOptions options;
    options.add_bos = config.add_bos.value_or(options.add_bos);
    options.add_eos = config.add_eos.value_or(options.add_eos);
    return std::make_unique<SentencePieceTokenizer>(sp_model, options);
  }
  throw TokenizerError("no tokenizer.json or tokenizer.model in " + model_dir.string());
}

}  // namespace arbor
