// libFuzzer target: an HTTP request body through the OpenAI request parsing, as the server
// runs it for /v1/completions and /v1/chat/completions (the demo model's SentencePiece
// tokenizer, a ChatML chat template). Every malformed body must end in an ApiError (the
// server's 400/404/413 JSON); any other exception or a crash is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>

#include "server/errors.h"
#include "server/openai_schema.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace {

struct State {
  std::unique_ptr<arbor::Tokenizer> tokenizer = arbor::load_tokenizer(ARBOR_DEMO_MODEL_DIR);
  std::unique_ptr<arbor::ChatTemplate> chat = arbor::chat_template_from_file(
      std::string(ARBOR_FIXTURES_DIR) + "/chat_templates/chatml.jinja", "<s>", "</s>");
  // The demo model's limits (config.json).
  arbor::ModelLimits limits{2048, 4096};
};

const State& state() {
  static const State s;
  return s;
}

void check(const arbor::ApiRequest& r, const arbor::ModelLimits& limits) {
  // What the server relies on after a successful parse.
  if (r.prompts.empty() || r.num_choices() < 1) std::abort();
  for (const auto& p : r.prompts) {
    if (p.empty() || int(p.size()) >= limits.max_model_len) std::abort();
    for (int32_t id : p)
      if (id < 0 || id >= limits.vocab_size) std::abort();
  }
  if (r.base.max_tokens < 1 || r.base.n < 1) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  state();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const State& s = state();
  const std::string body(reinterpret_cast<const char*>(data), size);
  nlohmann::json j;
  try {
    j = arbor::parse_json_body(body);
  } catch (const arbor::ApiError&) {
    return 0;
  }
  try {
    check(arbor::parse_completion_request(j, *s.tokenizer, s.limits), s.limits);
  } catch (const arbor::ApiError&) {
  }
  try {
    check(arbor::parse_chat_request(j, *s.tokenizer, s.limits, s.chat.get()), s.limits);
  } catch (const arbor::ApiError&) {
  }
  try {
    check(arbor::parse_chat_request(j, *s.tokenizer, s.limits, nullptr), s.limits);
  } catch (const arbor::ApiError&) {
  }
  return 0;
}
