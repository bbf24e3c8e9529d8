// load_tokenizer(): picks the tokenizer implementation from the files in a model folder.
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/sentencepiece_tokenizer.h"
#include "tokenizer/tokenizer.h"

namespace arbor {
namespace {

// Reads tokenizer_config.json's add_bos_token / add_eos_token when the file exists. A null
// value keeps the default, as in Hugging Face.
SentencePieceOptions read_tokenizer_config(const std::filesystem::path& model_dir) {
  SentencePieceOptions options;
  const auto file = model_dir / "tokenizer_config.json";
  std::error_code ec;
  if (!std::filesystem::exists(file, ec)) return options;
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
  const auto read_flag = [&](const char* key, bool& flag) {
    const auto it = config.find(key);
    if (it == config.end() || it->is_null()) return;
    if (!it->is_boolean()) {
      throw TokenizerError(file.string() + ": \"" + key + "\" must be true, false or null, not " +
                           it->dump());
    }
    flag = it->get<bool>();
  };
  read_flag("add_bos_token", options.add_bos);
  read_flag("add_eos_token", options.add_eos);
  return options;
}

}  // namespace

std::unique_ptr<Tokenizer> load_tokenizer(const std::filesystem::path& model_dir) {
  std::error_code ec;
  if (!std::filesystem::is_directory(model_dir, ec)) {
    throw TokenizerError("model folder " + model_dir.string() + " does not exist");
  }
  const auto sp_model = model_dir / "tokenizer.model";
  if (std::filesystem::exists(sp_model, ec)) {
    return std::make_unique<SentencePieceTokenizer>(sp_model, read_tokenizer_config(model_dir));
  }
  if (std::filesystem::exists(model_dir / "tokenizer.json", ec)) {
    throw TokenizerError(model_dir.string() +
                         " has only tokenizer.json; tokenizer.json support is not available yet "
                         "(needs tokenizer.model)");
  }
  throw TokenizerError("no tokenizer.model in " + model_dir.string());
}

}  // namespace arbor
