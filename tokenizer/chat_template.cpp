// Chat templates on top of the Jinja subset interpreter (jinja_*.h): the context HF
// transformers gives a chat template, and loading the template from tokenizer_config.json.
#include "tokenizer/chat_template.h"

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tokenizer/jinja_interpreter.h"

namespace arbor {

namespace {

class JinjaChatTemplate : public ChatTemplate {
 public:
  JinjaChatTemplate(std::string source, std::string bos_token, std::string eos_token)
      : template_(std::move(source)),
        bos_token_(std::move(bos_token)),
        eos_token_(std::move(eos_token)) {}

  std::string render(const std::vector<ChatMessage>& messages,
                     bool add_generation_prompt) const override {
    using jinja::Value;
    jinja::List list;
    for (const ChatMessage& m : messages) {
      Value message = Value::make_map();
      message.map->set("role", Value::string(m.role));
      message.map->set("content", Value::string(m.content));
      list.push_back(std::move(message));
    }
    // What transformers' apply_chat_template passes (tools and documents are not used by
    // arbor; templates see them as undefined and fall back to their own defaults, e.g.
    // Llama-3.1's date_string "26 Jul 2024").
    jinja::Map context;
    context.set("messages", Value::make_list(std::move(list)));
    context.set("add_generation_prompt", Value::boolean(add_generation_prompt));
    context.set("bos_token", Value::string(bos_token_));
    context.set("eos_token", Value::string(eos_token_));
    return template_.render(context);
  }

 private:
  jinja::Template template_;
  std::string bos_token_;
  std::string eos_token_;
};

std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) throw ChatTemplateError("cannot read chat template file " + file.string());
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// A special token in tokenizer_config.json: a string, or an AddedToken object {content: ...}.
std::string token_text(const nlohmann::json& config, const char* key) {
  auto it = config.find(key);
  if (it == config.end() || it->is_null()) return "";
  if (it->is_string()) return it->get<std::string>();
  if (it->is_object() && it->contains("content") && (*it)["content"].is_string()) {
    return (*it)["content"].get<std::string>();
  }
  throw ChatTemplateError(std::string("tokenizer_config.json: bad ") + key);
}

}  // namespace

std::unique_ptr<ChatTemplate> load_chat_template(const std::filesystem::path& model_dir) {
  std::filesystem::path file = model_dir / "tokenizer_config.json";
  if (!std::filesystem::exists(file)) return nullptr;
  nlohmann::json config;
  try {
    config = nlohmann::json::parse(read_text(file));
  } catch (const nlohmann::json::exception& e) {
    throw ChatTemplateError(file.string() + ": " + e.what());
  }
  auto it = config.find("chat_template");
  if (it == config.end() || it->is_null()) return nullptr;
  std::string source;
  if (it->is_string()) {
    source = it->get<std::string>();
  } else if (it->is_array()) {
    bool found = false;
    for (const auto& entry : *it) {
      if (entry.is_object() && entry.value("name", "") == "default" && entry.contains("template") &&
          entry["template"].is_string()) {
        source = entry["template"].get<std::string>();
        found = true;
      }
    }
    if (!found) return nullptr;
  } else {
    throw ChatTemplateError(file.string() + ": chat_template must be a string or a list");
  }
  return std::make_unique<JinjaChatTemplate>(std::move(source), token_text(config, "bos_token"),
                                             token_text(config, "eos_token"));
}

std::unique_ptr<ChatTemplate> chat_template_from_file(const std::filesystem::path& file,
                                                      const std::string& bos_token,
                                                      const std::string& eos_token) {
  return std::make_unique<JinjaChatTemplate>(read_text(file), bos_token, eos_token);
}

}  // namespace arbor
