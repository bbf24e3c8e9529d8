#include "server/openai_schema.h"

#include <cmath>
#include <limits>
#include <random>
#include <utility>

#include "engine/sampler.h"
#include "server/errors.h"
#include "tokenizer/chat_template.h"

namespace arbor {
namespace {

using json = nlohmann::json;

const json* field(const json& body, const char* name) {
  auto it = body.find(name);
  if (it == body.end() || it->is_null()) return nullptr;
  return &*it;
}

std::string type_name(const json& v) {
  return v.type_name();
}

bool get_bool(const json& body, const char* name, bool fallback) {
  const json* v = field(body, name);
  if (!v) return fallback;
  if (!v->is_boolean())
    throw invalid_param(name,
                        std::string("'") + name + "' must be a boolean, got " + type_name(*v));
  return v->get<bool>();
}

std::optional<int64_t> get_int(const json& body, const char* name, int64_t lo, int64_t hi) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  // A whole number written as a float (3.0) counts as that integer, as in vLLM (pydantic).
  const bool whole_float = v->is_number_float() && std::isfinite(v->get<double>()) &&
                           std::trunc(v->get<double>()) == v->get<double>() &&
                           std::fabs(v->get<double>()) < 9.0e18;
  if (!v->is_number_integer() && !whole_float)
    throw invalid_param(name,
                        std::string("'") + name + "' must be an integer, got " + type_name(*v));
  if (v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max()))
    throw invalid_param(name, std::string("'") + name + "' is out of range");
  const int64_t x = whole_float ? int64_t(v->get<double>()) : v->get<int64_t>();
  if (x < lo || x > hi)
    throw invalid_param(name, std::string("'") + name + "' must be in [" + std::to_string(lo) +
                                  ", " + std::to_string(hi) + "], got " + std::to_string(x));
  return x;
}

// A number in [lo, hi], or in (lo, hi] when lo_open.
std::optional<float> get_float(const json& body, const char* name, double lo, double hi,
                               bool lo_open = false) {
  const json* v = field(body, name);
  if (!v) return std::nullopt;
  if (!v->is_number())
    throw invalid_param(name, std::string("'") + name + "' must be a number, got " + type_name(*v));
  const double x = v->get<double>();
  if (!std::isfinite(x) || x < lo || (lo_open && x == lo) || x > hi)
    throw invalid_param(name, std::string("'") + name + "' must be in " + (lo_open ? "(" : "[") +
                                  json(lo).dump() + ", " + json(hi).dump() + "], got " +
                                  json(x).dump());
  return float(x);
}

// Fields of OpenAI's API that arbor does not implement: a 400 that says so, not a 200 that
// silently does something else (a client asking for JSON or tool calls would get plain text).
void reject_unsupported(const json& body, ApiKind kind) {
  if (kind == ApiKind::kCompletion && field(body, "suffix"))
    throw invalid_param("suffix", "'suffix' is not supported");
  if (const json* rf = field(body, "response_format")) {
    const json* type = rf->is_object() ? field(*rf, "type") : nullptr;
    if (!type || !type->is_string() || type->get<std::string>() != "text")
      throw invalid_param("response_format",
                          "'response_format' other than {\"type\": \"text\"} (structured "
                          "output) is not supported");
  }
  // Tools may be listed as long as none may be called (vLLM ignores them then too).
  const std::pair<const char*, const char*> tool_fields[] = {{"tools", "tool_choice"},
                                                             {"functions", "function_call"}};
  for (const auto& [list, choice_name] : tool_fields) {
    const json* tools = field(body, list);
    if (!tools || (tools->is_array() && tools->empty())) continue;
    const json* choice = field(body, choice_name);
    if (!choice || !choice->is_string() || choice->get<std::string>() != "none")
      throw invalid_param(list, std::string("tool calling is not supported ('") + list +
                                    "' needs '" + choice_name + "': \"none\")");
  }
}

std::vector<int32_t> token_list(const json& v, const char* param, int vocab) {
  std::vector<int32_t> ids;
  ids.reserve(v.size());
  for (const json& t : v) {
    if (!t.is_number_integer())
      throw invalid_param(param, std::string("'") + param + "' token ids must be integers");
    const int64_t id = t.get<int64_t>();
    if (id < 0 || id >= vocab)
      throw invalid_param(param, "token id " + std::to_string(id) +
                                     " is outside the vocabulary [0, " + std::to_string(vocab) +
                                     ")");
    ids.push_back(int32_t(id));
  }
  return ids;
}

// Parameters shared by both endpoints.
void parse_common(const json& body, const ModelLimits& limits, ApiRequest& r) {
  if (!body.is_object()) throw invalid_json("the body must be a JSON object");
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) throw invalid_param("model", "'model' must be a string");
    r.model = m->get<std::string>();
  }
  SamplingParams& s = r.base.sampling;
  s.temperature = get_float(body, "temperature", 0, 2).value_or(1.0f);
  s.top_p = get_float(body, "top_p", 0, 1, /*lo_open=*/true).value_or(1.0f);
  s.top_k = int(get_int(body, "top_k", -1, std::numeric_limits<int32_t>::max()).value_or(0));
  s.min_p = get_float(body, "min_p", 0, 1).value_or(0.0f);
  s.presence_penalty = get_float(body, "presence_penalty", -2, 2).value_or(0.0f);
  s.frequency_penalty = get_float(body, "frequency_penalty", -2, 2).value_or(0.0f);
  s.repetition_penalty = get_float(body, "repetition_penalty", 1e-6, 1e6).value_or(1.0f);
  if (auto seed = get_int(body, "seed", std::numeric_limits<int64_t>::min(),
                          std::numeric_limits<int64_t>::max()))
    s.seed = uint64_t(*seed);
  if (const json* lb = field(body, "logit_bias")) {
    if (!lb->is_object())
      throw invalid_param("logit_bias", "'logit_bias' must be an object of token id → bias");
    for (const auto& [key, val] : lb->items()) {
      size_t used = 0;
      long id = -1;
      try {
        id = std::stol(key, &used);
      } catch (const std::exception&) {
        used = 0;
      }
      if (used != key.size() || id < 0 || id >= limits.vocab_size)
        throw invalid_param("logit_bias", "logit_bias key '" + key + "' is not a token id in [0, " +
                                              std::to_string(limits.vocab_size) + ")");
      if (!val.is_number() || val.get<double>() < -100 || val.get<double>() > 100)
        throw invalid_param("logit_bias", "logit_bias values must be numbers in [-100, 100]");
      s.logit_bias.emplace_back(int32_t(id), val.get<float>());
    }
  }
  r.base.n = int(get_int(body, "n", 1, 128).value_or(1));
  r.base.ignore_eos = get_bool(body, "ignore_eos", false);
  r.stream = get_bool(body, "stream", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object())
      throw invalid_param("stream_options", "'stream_options' must be an object");
    r.include_usage = get_bool(*so, "include_usage", false);
    if (!r.stream)  // as vLLM: usage chunks exist only in streams
      throw invalid_param("stream_options", "'stream_options' needs 'stream': true");
  }
  if (const json* stop = field(body, "stop")) {
    if (stop->is_string()) {
      r.base.stop.push_back(stop->get<std::string>());
    } else if (stop->is_array()) {
      if (stop->size() > 16) throw invalid_param("stop", "'stop' may hold at most 16 strings");
      for (const json& x : *stop) {
        if (!x.is_string())
          throw invalid_param("stop", "'stop' must be a string or a list of strings");
        r.base.stop.push_back(x.get<std::string>());
      }
    } else {
      throw invalid_param("stop", "'stop' must be a string or a list of strings");
    }
    for (const std::string& x : r.base.stop)
      if (x.empty()) throw invalid_param("stop", "stop strings must not be empty");
  }
  if (const json* u = field(body, "user")) {
    if (!u->is_string()) throw invalid_param("user", "'user' must be a string");
    r.user = u->get<std::string>();
  }
}

// max_tokens, or max_completion_tokens (OpenAI's newer name, taken by both endpoints), which
// wins: checked against the context; default 16 for completions (OpenAI) and the rest of the
// context for chat (vLLM).
void resolve_max_tokens(const json& body, const ModelLimits& limits, ApiRequest& r) {
  std::optional<int64_t> max_tokens =
      get_int(body, "max_tokens", 1, std::numeric_limits<int32_t>::max());
  if (auto mct = get_int(body, "max_completion_tokens", 1, std::numeric_limits<int32_t>::max()))
    max_tokens = mct;
  size_t longest = 0;
  for (const auto& p : r.prompts) longest = std::max(longest, p.size());
  const int64_t room = int64_t(limits.max_model_len) - int64_t(longest);
  const int64_t mt =
      max_tokens.value_or(r.kind == ApiKind::kChat ? std::max<int64_t>(room, 1) : 16);
  const char* param = r.kind == ApiKind::kChat ? "messages" : "prompt";
  if (int64_t(longest) + mt > limits.max_model_len)
    throw context_length_exceeded(int(longest), int(std::min<int64_t>(mt, 1 << 30)),
                                  limits.max_model_len, param);
  r.base.max_tokens = int(mt);
}

void validate_sampling(ApiRequest& r, const ModelLimits& limits) {
  try {
    r.base.sampling.validate(limits.vocab_size);
  } catch (const std::invalid_argument& e) {
    throw invalid_param({}, e.what());
  }
}

std::string message_content(const json& m, size_t i) {
  const json* c = field(m, "content");
  if (!c) return {};
  if (c->is_string()) return c->get<std::string>();
  if (c->is_array()) {
    std::string text;
    for (const json& part : *c) {
      if (!part.is_object() || part.value("type", "") != "text" || !part.contains("text") ||
          !part["text"].is_string())
        throw invalid_param("messages",
                            "messages[" + std::to_string(i) +
                                "].content parts must be {\"type\":\"text\",\"text\":...}");
      text += part["text"].get<std::string>();
    }
    return text;
  }
  throw invalid_param("messages", "messages[" + std::to_string(i) +
                                      "].content must be a string or a list of text parts");
}

}  // namespace

json parse_json_body(const std::string& body) {
  json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) throw invalid_json("malformed JSON");
  if (!j.is_object()) throw invalid_json("the body must be a JSON object");
  return j;
}

ApiRequest parse_completion_request(const json& body, const Tokenizer& tokenizer,
                                    const ModelLimits& limits) {
  ApiRequest r;
  r.kind = ApiKind::kCompletion;
  parse_common(body, limits, r);
  reject_unsupported(body, r.kind);
  const json* prompt = field(body, "prompt");
  if (!prompt) throw invalid_param("prompt", "'prompt' is required");
  auto add_text = [&](const std::string& text) {
    r.prompts.push_back(tokenizer.encode(text, /*add_special_tokens=*/true));
    r.prompt_texts.push_back(text);
  };
  auto add_ids = [&](const json& ids) {
    r.prompts.push_back(token_list(ids, "prompt", limits.vocab_size));
    r.prompt_texts.push_back(tokenizer.decode(r.prompts.back(), false));
  };
  const char* shape =
      "'prompt' must be a string, a list of strings, a list of token ids or a "
      "list of token id lists";
  if (prompt->is_string()) {
    add_text(prompt->get<std::string>());
  } else if (prompt->is_array() && !prompt->empty()) {
    const json& first = prompt->front();
    if (first.is_number_integer()) {
      add_ids(*prompt);
    } else {
      for (const json& p : *prompt) {
        if (p.is_string() && first.is_string())
          add_text(p.get<std::string>());
        else if (p.is_array() && first.is_array() && !p.empty())
          add_ids(p);
        else
          throw invalid_param("prompt", shape);
      }
    }
  } else {
    throw invalid_param("prompt", shape);
  }
  if (r.prompts.size() > 64) throw invalid_param("prompt", "at most 64 prompts per request");
  for (const auto& p : r.prompts)
    if (p.empty()) throw invalid_param("prompt", "the prompt is empty");
  r.echo = get_bool(body, "echo", false);
  if (auto lp = get_int(body, "logprobs", 0, 20)) r.logprobs = int(*lp);
  if (r.echo && r.logprobs >= 0)
    throw invalid_param("echo", "echo with logprobs (prompt logprobs) is not supported");
  r.base.sampling.logprobs = r.logprobs;
  resolve_max_tokens(body, limits, r);
  validate_sampling(r, limits);
  return r;
}

std::string render_chat(const json& messages, const ChatTemplate* chat,
                        bool add_generation_prompt) {
  if (!messages.is_array() || messages.empty())
    throw invalid_param("messages", "'messages' must be a non-empty list of messages");
  std::vector<ChatMessage> msgs;
  for (size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    if (!m.is_object() || !m.contains("role") || !m["role"].is_string())
      throw invalid_param(
          "messages", "messages[" + std::to_string(i) + "] must be an object with a string 'role'");
    msgs.push_back({m["role"].get<std::string>(), message_content(m, i)});
  }
  if (!chat)
    throw invalid_param("messages",
                        "this model has no chat template; start the server with "
                        "--chat-template FILE or use /v1/completions");
  try {
    return chat->render(msgs, add_generation_prompt);
  } catch (const std::exception& e) {
    throw invalid_param("messages", std::string("chat template: ") + e.what());
  }
}

ApiRequest parse_chat_request(const json& body, const Tokenizer& tokenizer,
                              const ModelLimits& limits, const ChatTemplate* chat) {
  ApiRequest r;
  r.kind = ApiKind::kChat;
  parse_common(body, limits, r);
  reject_unsupported(body, r.kind);
  const json* messages = field(body, "messages");
  if (!messages) throw invalid_param("messages", "'messages' is required");
  const std::string text =
      render_chat(*messages, chat, get_bool(body, "add_generation_prompt", true));
  r.prompts.push_back(tokenizer.encode(text, /*add_special_tokens=*/false));
  r.prompt_texts.push_back(text);
  if (r.prompts.back().empty()) throw invalid_param("messages", "the rendered prompt is empty");
  if (get_bool(body, "logprobs", false))
    r.logprobs = int(get_int(body, "top_logprobs", 0, 20).value_or(0));
  else if (field(body, "top_logprobs"))
    throw invalid_param("top_logprobs", "'top_logprobs' needs 'logprobs': true");
  r.base.sampling.logprobs = r.logprobs;
  resolve_max_tokens(body, limits, r);
  validate_sampling(r, limits);
  return r;
}

// ---- responses ----

std::string token_text(const Tokenizer& tokenizer, int32_t id) {
  std::string piece = tokenizer.id_to_piece(id);
  std::string out;
  for (size_t i = 0; i < piece.size();) {
    if (piece.compare(i, 3, "\xE2\x96\x81") == 0) {  // ▁
      out += ' ';
      i += 3;
    } else {
      out += piece[i++];
    }
  }
  return out;
}

TokenLogprob make_token_logprob(const Tokenizer& tokenizer, const RequestOutput& out) {
  TokenLogprob t;
  t.token = token_text(tokenizer, out.token_id);
  t.logprob = out.logprob;
  for (const auto& [id, lp] : out.top_logprobs) t.top.emplace_back(token_text(tokenizer, id), lp);
  return t;
}

std::string new_response_id(ApiKind kind) {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  static const char* hex = "0123456789abcdef";
  std::string id = kind == ApiKind::kChat ? "chatcmpl-" : "cmpl-";
  for (int i = 0; i < 24; ++i) id += hex[rng() % 16];
  return id;
}

json usage_json(const Usage& u) {
  json j = {{"prompt_tokens", u.prompt_tokens},
            {"completion_tokens", u.completion_tokens},
            {"total_tokens", u.prompt_tokens + u.completion_tokens}};
  if (u.cached_tokens > 0) j["prompt_tokens_details"] = {{"cached_tokens", u.cached_tokens}};
  return j;
}

namespace {

json bytes_of(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(int(c));
  return b;
}

json logprobs_json(ApiKind kind, const std::vector<TokenLogprob>& lps,
                   const std::vector<size_t>* offsets, size_t from, size_t to) {
  if (kind == ApiKind::kChat) {
    json content = json::array();
    for (size_t i = from; i < to; ++i) {
      json top = json::array();
      for (const auto& [tok, lp] : lps[i].top)
        top.push_back({{"token", tok}, {"logprob", lp}, {"bytes", bytes_of(tok)}});
      content.push_back({{"token", lps[i].token},
                         {"logprob", lps[i].logprob},
                         {"bytes", bytes_of(lps[i].token)},
                         {"top_logprobs", top}});
    }
    return {{"content", content}};
  }
  json tokens = json::array(), token_lps = json::array(), tops = json::array(),
       offs = json::array();
  for (size_t i = from; i < to; ++i) {
    tokens.push_back(lps[i].token);
    token_lps.push_back(lps[i].logprob);
    // As OpenAI's legacy completions and vLLM: the sampled token is always among the
    // top_logprobs (up to logprobs + 1 entries when it is not one of the most likely).
    json top = json::object();
    for (const auto& [tok, lp] : lps[i].top) top[tok] = lp;
    if (!top.contains(lps[i].token)) top[lps[i].token] = lps[i].logprob;
    tops.push_back(top);
    offs.push_back(offsets && i < offsets->size() ? (*offsets)[i] : 0);
  }
  return {{"tokens", tokens},
          {"token_logprobs", token_lps},
          {"top_logprobs", tops},
          {"text_offset", offs}};
}

json finish_json(std::optional<FinishReason> f) {
  return f ? json(finish_reason_name(*f)) : json();
}

}  // namespace

json completion_response(ApiKind kind, const std::string& id, int64_t created,
                         const std::string& model, const std::vector<ChoiceResult>& choices,
                         bool with_logprobs, const Usage& usage) {
  json cs = json::array();
  for (size_t i = 0; i < choices.size(); ++i) {
    const ChoiceResult& c = choices[i];
    json lp = with_logprobs ? logprobs_json(kind, c.logprobs, &c.text_offsets, 0, c.logprobs.size())
                            : json();
    if (kind == ApiKind::kChat) {
      cs.push_back({{"index", i},
                    {"message", {{"role", "assistant"}, {"content", c.text}}},
                    {"logprobs", lp},
                    {"finish_reason", finish_json(c.finish)}});
    } else {
      cs.push_back({{"index", i},
                    {"text", c.text},
                    {"logprobs", lp},
                    {"finish_reason", finish_json(c.finish)}});
    }
  }
  return {{"id", id},
          {"object", kind == ApiKind::kChat ? "chat.completion" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", cs},
          {"usage", usage_json(usage)}};
}

json stream_chunk(ApiKind kind, const std::string& id, int64_t created, const std::string& model,
                  int index, const std::string& text, bool role,
                  const std::vector<TokenLogprob>* logprobs,
                  const std::vector<size_t>* text_offsets, std::optional<FinishReason> finish,
                  bool usage_null) {
  json lp = logprobs ? logprobs_json(kind, *logprobs, text_offsets, 0, logprobs->size()) : json();
  json choice;
  if (kind == ApiKind::kChat) {
    json delta = json::object();
    if (role) delta["role"] = "assistant";
    if (!text.empty() || role) delta["content"] = text;
    choice = {{"index", index},
              {"delta", delta},
              {"logprobs", lp},
              {"finish_reason", finish_json(finish)}};
  } else {
    choice = {
        {"index", index}, {"text", text}, {"logprobs", lp}, {"finish_reason", finish_json(finish)}};
  }
  json chunk = {{"id", id},
                {"object", kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion"},
                {"created", created},
                {"model", model},
                {"choices", json::array({choice})}};
  if (usage_null) chunk["usage"] = nullptr;
  return chunk;
}

json usage_chunk(ApiKind kind, const std::string& id, int64_t created, const std::string& model,
                 const Usage& usage) {
  return {{"id", id},
          {"object", kind == ApiKind::kChat ? "chat.completion.chunk" : "text_completion"},
          {"created", created},
          {"model", model},
          {"choices", json::array()},
          {"usage", usage_json(usage)}};
}

}  // namespace arbor
