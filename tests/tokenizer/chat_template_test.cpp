// Chat templates: renderings equal @huggingface/jinja's (tests/fixtures/chat_templates,
// made by tools/make_chat_template_fixtures.mjs), errors, and loading from a model folder.
#include "tokenizer/chat_template.h"

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "tests/test_util.h"

using namespace arbor;
using namespace arbor::test;

namespace {

std::filesystem::path template_dir() {
  return fixtures_dir() / "chat_templates";
}

nlohmann::json reference() {
  return nlohmann::json::parse(read_file(template_dir() / "reference.json"));
}

std::vector<ChatMessage> to_messages(const nlohmann::json& list) {
  std::vector<ChatMessage> out;
  for (const auto& m : list) out.push_back({m["role"], m["content"]});
  return out;
}

std::string error_of(const ChatTemplate& t, const std::vector<ChatMessage>& messages) {
  try {
    t.render(messages, true);
  } catch (const ChatTemplateError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("chat templates render exactly as @huggingface/jinja", "[chat_template]") {
  const auto ref = reference();
  int checked = 0, errors = 0;
  for (const auto& [name, tokens] : ref["templates"].items()) {
    const auto tmpl = chat_template_from_file(template_dir() / (name + ".jinja"),
                                              tokens["bos_token"], tokens["eos_token"]);
    for (const auto& c : ref["cases"]) {
      if (c["template"] != name) continue;
      const auto messages = to_messages(ref["conversations"][c["conversation"].get<std::string>()]);
      const bool prompt = c["add_generation_prompt"];
      INFO(name << " / " << c["conversation"] << " / add_generation_prompt=" << prompt);
      if (c.contains("error")) {
        try {
          tmpl->render(messages, prompt);
          FAIL("expected ChatTemplateError");
        } catch (const ChatTemplateError& e) {
          CHECK(std::string(e.what()) == c["error"].get<std::string>());
        }
        ++errors;
      } else {
        CHECK(tmpl->render(messages, prompt) == c["output"].get<std::string>());
      }
      ++checked;
    }
  }
  CHECK(checked == 80);
  CHECK(errors == 2);
}

TEST_CASE("chat template: raise_exception gives the template's message", "[chat_template]") {
  const auto tmpl = chat_template_from_file(template_dir() / "llama2.jinja", "<s>", "</s>");
  CHECK(error_of(*tmpl, {{"assistant", "hi"}}) ==
        "Conversation roles must alternate user/assistant/user/assistant/...");
  CHECK(error_of(*tmpl, {{"user", "hi"}}) == "(no error)");
}

TEST_CASE("chat template: syntax errors name the line and column", "[chat_template]") {
  TempDir dir;
  auto check = [&](const std::string& source, const std::string& part) {
    write_file(dir.path() / "t.jinja", source);
    try {
      chat_template_from_file(dir.path() / "t.jinja", "", "");
      FAIL("no ChatTemplateError for " << source);
    } catch (const ChatTemplateError& e) {
      CHECK_THAT(e.what(), Catch::Contains(part));
    }
  };
  check("{% for m in messages %}{{ m }}", "expected endfor");
  check("ok\n{{ 1 + }}", "line 2, column 8");
  check("{% if x %}a{% endfor %}", "unknown statement 'endfor'");
  check("{{ 'unterminated }}", "unterminated string");
  check("{{ x ", "unterminated {{");
  check("{# never closed", "unterminated comment");
  check("{% frobnicate %}", "unknown statement 'frobnicate'");
  check("{{ a b }}", "expected '}}'");
}

TEST_CASE("chat template: hostile nesting is an error, not a stack overflow", "[chat_template]") {
  TempDir dir;
  for (const std::string& source :
       {"{{ " + std::string(100000, '(') + "1" + std::string(100000, ')') + " }}",
        "{{ 1" +
            [] {
              std::string s;
              for (int k = 0; k < 100000; ++k) s += "+1";
              return s;
            }() +
            " }}",
        [] {
          std::string s;
          for (int k = 0; k < 20000; ++k) s += "{% if x %}";
          return s;
        }(),
        "{{ x" +
            [] {
              std::string s;
              for (int k = 0; k < 100000; ++k) s += "|trim";
              return s;
            }() +
            " }}",
        [] {
          std::string s = "{% if a %}";
          for (int k = 0; k < 20000; ++k) s += "{% elif a %}";
          return s + "{% endif %}";
        }()}) {
    write_file(dir.path() / "t.jinja", source);
    CHECK_THROWS_WITH(chat_template_from_file(dir.path() / "t.jinja", "", ""),
                      Catch::Contains("nested too deeply"));
  }
}

TEST_CASE("load_chat_template: tokenizer_config.json of a model folder", "[chat_template]") {
  TempDir dir;
  const std::string chatml = read_file(template_dir() / "chatml.jinja");
  const std::vector<ChatMessage> hello = {{"user", "hello"}};

  SECTION("no tokenizer_config.json") {
    CHECK(load_chat_template(dir.path()) == nullptr);
  }

  SECTION("config without chat_template") {
    write_file(dir.path() / "tokenizer_config.json", R"({"bos_token": "<s>"})");
    CHECK(load_chat_template(dir.path()) == nullptr);
  }

  SECTION("string template, special tokens as objects") {
    nlohmann::json config = {{"chat_template",
                              "{{ bos_token }}{% for m in messages %}{{ m.content }}{% endfor %}"
                              "{{ eos_token }}"},
                             {"bos_token", {{"content", "<|begin_of_text|>"}, {"lstrip", false}}},
                             {"eos_token", {{"__type", "AddedToken"}, {"content", "<|eot_id|>"}}}};
    write_file(dir.path() / "tokenizer_config.json", config.dump());
    const auto tmpl = load_chat_template(dir.path());
    REQUIRE(tmpl);
    CHECK(tmpl->render(hello, false) == "<|begin_of_text|>hello<|eot_id|>");
  }

  SECTION("list of named templates picks default") {
    nlohmann::json config = {{"chat_template",
                              {{{"name", "tool_use"}, {"template", "TOOLS"}},
                               {{"name", "default"}, {"template", chatml}}}},
                             {"bos_token", "<s>"},
                             {"eos_token", "</s>"}};
    write_file(dir.path() / "tokenizer_config.json", config.dump());
    const auto tmpl = load_chat_template(dir.path());
    REQUIRE(tmpl);
    CHECK(tmpl->render(hello, true) ==
          "<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n");
  }

  SECTION("list without a default") {
    nlohmann::json config = {{"chat_template", {{{"name", "tool_use"}, {"template", "T"}}}}};
    write_file(dir.path() / "tokenizer_config.json", config.dump());
    CHECK(load_chat_template(dir.path()) == nullptr);
  }

  SECTION("template that does not parse") {
    write_file(dir.path() / "tokenizer_config.json", R"({"chat_template": "{% if %}"})");
    CHECK_THROWS_AS(load_chat_template(dir.path()), ChatTemplateError);
  }

  SECTION("real Llama-3 template renders the reference") {
    const auto ref = reference();
    nlohmann::json config = {{"chat_template", read_file(template_dir() / "llama3.jinja")},
                             {"bos_token", ref["templates"]["llama3"]["bos_token"]},
                             {"eos_token", ref["templates"]["llama3"]["eos_token"]}};
    write_file(dir.path() / "tokenizer_config.json", config.dump());
    const auto tmpl = load_chat_template(dir.path());
    REQUIRE(tmpl);
    for (const auto& c : ref["cases"]) {
      if (c["template"] != "llama3" || c["conversation"] != "system_user") continue;
      CHECK(tmpl->render(to_messages(ref["conversations"]["system_user"]),
                         c["add_generation_prompt"]) == c["output"].get<std::string>());
    }
  }
}

TEST_CASE("chat_template_from_file: missing file", "[chat_template]") {
  CHECK_THROWS_AS(chat_template_from_file("/nonexistent/t.jinja", "", ""), ChatTemplateError);
}
