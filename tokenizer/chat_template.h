// Chat templates: turns OpenAI-style messages into the prompt text a model was trained on,
// from the `chat_template` (Jinja) in a model's tokenizer_config.json, or a template file
// given with --chat-template.
#pragma once

#include <filesystem>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace arbor {

class ChatTemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", "tool", ...
  std::string content;
};

class ChatTemplate {
 public:
  virtual ~ChatTemplate() = default;
  // Renders the conversation; add_generation_prompt appends the assistant header so the
  // model continues as the assistant. Throws ChatTemplateError with the template's message
  // for conversations the template rejects (e.g. raise_exception("roles must alternate")).
  virtual std::string render(const std::vector<ChatMessage>& messages,
                             bool add_generation_prompt) const = 0;
};

// The template of a model folder: tokenizer_config.json's chat_template (a string, or the
// entry named "default" of a list of {name, template}), with bos_token / eos_token taken from
// the same file. Returns nullptr when the folder has no chat template (the server then
// answers chat requests with a clear error). Throws ChatTemplateError for a template that
// does not parse.
std::unique_ptr<ChatTemplate> load_chat_template(const std::filesystem::path& model_dir);

// A template from a file (--chat-template), with the given special token strings.
std::unique_ptr<ChatTemplate> chat_template_from_file(const std::filesystem::path& file,
                                                      const std::string& bos_token,
                                                      const std::string& eos_token);

}  // namespace arbor
