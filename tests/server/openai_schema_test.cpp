// Request parsing/validation and response shapes of the OpenAI schema, without HTTP.
#include <catch2/catch.hpp>

#include "server/errors.h"
#include "server/openai_schema.h"
#include "tests/test_util.h"

namespace arbor {
namespace {

using json = nlohmann::json;

const Tokenizer& demo_tokenizer() {
  static std::unique_ptr<Tokenizer> t = load_tokenizer(test::demo_model_dir());
  return *t;
}
const ModelLimits kLimits{2048, 4096};

ApiRequest parse(const std::string& body) {
  return parse_completion_request(parse_json_body(body), demo_tokenizer(), kLimits);
}

// The parameter name an invalid body is rejected with.
std::string rejected_param(const std::string& body) {
  try {
    parse(body);
  } catch (const ApiError& e) {
    CHECK(e.status() == 400);
    return e.param();
  }
  FAIL("accepted: " << body);
  return {};
}

}  // namespace

TEST_CASE("completion requests parse every documented field", "[server]") {
  ApiRequest r = parse(R"({"model":"m","prompt":"The jury","max_tokens":7,"temperature":0.5,
    "top_p":0.9,"top_k":40,"min_p":0.05,"stop":["a","b"],"seed":3,"n":2,"logprobs":2,
    "presence_penalty":0.5,"frequency_penalty":-0.5,"repetition_penalty":1.1,
    "logit_bias":{"5":-100},"ignore_eos":true,"stream":true,
    "stream_options":{"include_usage":true},"user":"u","unknown_field":[1,2]})");
  CHECK(r.model == "m");
  REQUIRE(r.prompts.size() == 1);
  CHECK(r.prompts[0] == demo_tokenizer().encode("The jury", true));
  CHECK(r.base.max_tokens == 7);
  CHECK(r.base.sampling.temperature == Approx(0.5));
  CHECK(r.base.sampling.top_k == 40);
  CHECK(r.base.sampling.seed == 3u);
  CHECK(r.base.stop == std::vector<std::string>{"a", "b"});
  CHECK(r.base.n == 2);
  CHECK(r.logprobs == 2);
  CHECK(r.base.sampling.logprobs == 2);
  CHECK(r.base.sampling.logit_bias.size() == 1);
  CHECK(r.base.ignore_eos);
  CHECK(r.stream);
  CHECK(r.include_usage);
  CHECK(r.user == "u");
  CHECK(r.num_choices() == 2);
}

TEST_CASE("prompts may be strings, lists of strings, ids and lists of ids", "[server]") {
  CHECK(parse(R"({"prompt":["a b","c"]})").prompts.size() == 2);
  CHECK(parse(R"({"prompt":[1,5,9]})").prompts == std::vector<std::vector<int32_t>>{{1, 5, 9}});
  CHECK(parse(R"({"prompt":[[1,5],[1,7,8]]})").prompts.size() == 2);
  CHECK(parse(R"({"prompt":"x","stop":"y"})").base.stop == std::vector<std::string>{"y"});
  CHECK(parse(R"({"prompt":"x"})").base.max_tokens == 16);
}

TEST_CASE("wrong types and out-of-range values are rejected with the parameter", "[server]") {
  CHECK(rejected_param(R"({})") == "prompt");
  CHECK(rejected_param(R"({"prompt":5})") == "prompt");
  CHECK(rejected_param(R"({"prompt":[]})") == "prompt");
  CHECK(rejected_param(R"({"prompt":[1,"a"]})") == "prompt");
  CHECK(rejected_param(R"({"prompt":[99999]})") == "prompt");
  CHECK(rejected_param(R"({"prompt":"x","max_tokens":"5"})") == "max_tokens");
  CHECK(rejected_param(R"({"prompt":"x","max_tokens":0})") == "max_tokens");
  CHECK(rejected_param(R"({"prompt":"x","max_tokens":1.5})") == "max_tokens");
  CHECK(rejected_param(R"({"prompt":"x","temperature":-1})") == "temperature");
  CHECK(rejected_param(R"({"prompt":"x","temperature":"hot"})") == "temperature");
  CHECK(rejected_param(R"({"prompt":"x","top_p":0})") == "top_p");
  CHECK(rejected_param(R"({"prompt":"x","n":0})") == "n");
  CHECK(rejected_param(R"({"prompt":"x","stop":[1]})") == "stop");
  CHECK(rejected_param(R"({"prompt":"x","stream":"yes"})") == "stream");
  CHECK(rejected_param(R"({"prompt":"x","logprobs":21})") == "logprobs");
  CHECK(rejected_param(R"({"prompt":"x","logit_bias":{"abc":1}})") == "logit_bias");
  CHECK(rejected_param(R"({"prompt":"x","logit_bias":{"3":1000}})") == "logit_bias");
  CHECK(rejected_param(R"({"prompt":"x","presence_penalty":3})") == "presence_penalty");
  CHECK(rejected_param(R"({"prompt":"x","model":3})") == "model");
  CHECK(rejected_param(R"({"prompt":"x","stream_options":true})") == "stream_options");
  CHECK(rejected_param(R"({"prompt":"x","top_p":1.5})") == "top_p");
  CHECK(rejected_param(R"({"prompt":"x","max_tokens":3.5})") == "max_tokens");
  CHECK(rejected_param(R"({"prompt":"x","max_completion_tokens":0})") == "max_completion_tokens");
}

TEST_CASE("top_p's range reads the same whichever bound is broken", "[server]") {
  for (const char* body : {R"({"prompt":"x","top_p":0})", R"({"prompt":"x","top_p":1.5})"}) {
    try {
      parse(body);
      FAIL("accepted " << body);
    } catch (const ApiError& e) {
      CHECK(std::string(e.what()).find("(0.0, 1.0]") != std::string::npos);
    }
  }
}

TEST_CASE(
    "whole numbers written as floats are integers; max_completion_tokens works on both "
    "endpoints",
    "[server]") {
  CHECK(parse(R"({"prompt":"x","max_tokens":3.0})").base.max_tokens == 3);
  CHECK(parse(R"({"prompt":"x","n":2.0,"max_tokens":4})").base.n == 2);
  // OpenAI's newer name wins over max_tokens, on completions as on chat.
  CHECK(parse(R"({"prompt":"x","max_completion_tokens":3})").base.max_tokens == 3);
  CHECK(parse(R"({"prompt":"x","max_tokens":9,"max_completion_tokens":3})").base.max_tokens == 3);
}

TEST_CASE("OpenAI fields arbor does not implement are refused, not ignored", "[server]") {
  // A client that asks for JSON output or tool calls must not get plain text with a 200.
  CHECK(rejected_param(R"({"prompt":"x","suffix":"end"})") == "suffix");
  CHECK(rejected_param(R"({"prompt":"x","response_format":{"type":"json_object"}})") ==
        "response_format");
  CHECK(rejected_param(R"({"prompt":"x","response_format":{"type":7}})") == "response_format");
  CHECK(rejected_param(R"({"prompt":"x","response_format":"json"})") == "response_format");
  CHECK(rejected_param(R"({"prompt":"x","tools":[{"type":"function"}]})") == "tools");
  CHECK(rejected_param(R"({"prompt":"x","tools":[{"type":"function"}],"tool_choice":"auto"})") ==
        "tools");
  CHECK(rejected_param(R"({"prompt":"x","functions":[{"name":"f"}]})") == "functions");
  // Usage chunks exist only in streams (vLLM refuses stream_options without stream too).
  CHECK(rejected_param(R"({"prompt":"x","stream_options":{"include_usage":true}})") ==
        "stream_options");
  // What is harmless passes: plain text format, tools that may not be called, empty lists.
  CHECK_NOTHROW(parse(R"({"prompt":"x","response_format":{"type":"text"}})"));
  CHECK_NOTHROW(parse(R"({"prompt":"x","tools":[{"type":"function"}],"tool_choice":"none"})"));
  CHECK_NOTHROW(parse(R"({"prompt":"x","tools":[]})"));
  CHECK_NOTHROW(parse(R"({"prompt":"x","suffix":null})"));
}

TEST_CASE("malformed JSON and a prompt over the context give OpenAI errors", "[server]") {
  try {
    parse_json_body("{\"prompt\": ");
    FAIL("accepted malformed JSON");
  } catch (const ApiError& e) {
    CHECK(e.status() == 400);
    CHECK(e.code() == "invalid_json");
  }
  CHECK_THROWS_AS(parse_json_body("[1,2]"), ApiError);
  try {
    parse(R"({"prompt":"x","max_tokens":5000})");
    FAIL("accepted a request over the context");
  } catch (const ApiError& e) {
    CHECK(e.code() == "context_length_exceeded");
    CHECK(std::string(e.what()).find("2048") != std::string::npos);
    CHECK(std::string(e.what()).find("5000") != std::string::npos);
    const json j = e.to_json();
    CHECK(j["error"]["type"] == "invalid_request_error");
    CHECK(j["error"]["param"] == "prompt");
  }
}

TEST_CASE("chat requests without a template are rejected clearly", "[server]") {
  const json body = json::parse(R"({"messages":[{"role":"user","content":"hi"}]})");
  try {
    parse_chat_request(body, demo_tokenizer(), kLimits, nullptr);
    FAIL("accepted");
  } catch (const ApiError& e) {
    CHECK(e.param() == "messages");
    CHECK(std::string(e.what()).find("chat template") != std::string::npos);
  }
  CHECK_THROWS_AS(
      parse_chat_request(json::parse(R"({"messages":"hi"})"), demo_tokenizer(), kLimits, nullptr),
      ApiError);
}

TEST_CASE("responses have OpenAI's shapes", "[server]") {
  ChoiceResult c;
  c.text = "hello";
  c.finish = FinishReason::kLength;
  c.logprobs.push_back({" hello", -0.5f, {{" hello", -0.5f}}});
  c.text_offsets.push_back(0);
  const json r = completion_response(ApiKind::kCompletion, "cmpl-x", 7, "m", {c}, true, {3, 1, 0});
  CHECK(r["object"] == "text_completion");
  CHECK(r["choices"][0]["text"] == "hello");
  CHECK(r["choices"][0]["finish_reason"] == "length");
  CHECK(r["choices"][0]["logprobs"]["tokens"][0] == " hello");
  CHECK(r["choices"][0]["logprobs"]["top_logprobs"][0] == json{{" hello", -0.5f}});
  CHECK(r["usage"]["total_tokens"] == 4);
  // A sampled token outside the top ones (temperature, logit_bias) is listed among them too.
  ChoiceResult unlikely = c;
  unlikely.logprobs[0] = {" zebra", -7.25f, {{" hello", -0.5f}, {" world", -1.5f}}};
  const json u = completion_response(ApiKind::kCompletion, "cmpl-y", 7, "m", {unlikely}, true, {});
  CHECK(u["choices"][0]["logprobs"]["top_logprobs"][0] ==
        json{{" hello", -0.5f}, {" world", -1.5f}, {" zebra", -7.25f}});
  // Chat lists exactly the top ones (the sampled token has its own fields).
  const json uc = completion_response(ApiKind::kChat, "chatcmpl-y", 7, "m", {unlikely}, true, {});
  CHECK(uc["choices"][0]["logprobs"]["content"][0]["top_logprobs"].size() == 2);
  const json chat = completion_response(ApiKind::kChat, "chatcmpl-x", 7, "m", {c}, false, {});
  CHECK(chat["object"] == "chat.completion");
  CHECK(chat["choices"][0]["message"]["role"] == "assistant");
  CHECK(chat["choices"][0]["logprobs"].is_null());
  const json chunk = stream_chunk(ApiKind::kChat, "chatcmpl-x", 7, "m", 0, "", true, nullptr,
                                  nullptr, std::nullopt, false);
  CHECK(chunk["object"] == "chat.completion.chunk");
  CHECK(chunk["choices"][0]["delta"]["role"] == "assistant");
  CHECK(new_response_id(ApiKind::kChat).rfind("chatcmpl-", 0) == 0);
  CHECK(new_response_id(ApiKind::kCompletion).rfind("cmpl-", 0) == 0);
}

}  // namespace arbor
