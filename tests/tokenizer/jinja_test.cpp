// The Jinja subset interpreter behind chat templates: expressions, filters, tests, loops,
// scoping and whitespace control.
#include <catch2/catch.hpp>

#include "tokenizer/chat_template.h"
#include "tokenizer/jinja_interpreter.h"

using namespace arbor;
using namespace arbor::jinja;

namespace {

Value message(const std::string& role, const std::string& content) {
  Value m = Value::make_map();
  m.map->set("role", Value::string(role));
  m.map->set("content", Value::string(content));
  return m;
}

std::string render(const std::string& source) {
  Map context;
  context.set("messages", Value::make_list({message("system", "sys"), message("user", "hi"),
                                            message("assistant", "yo")}));
  context.set("name", Value::string("arbor"));
  context.set("n", Value::integer(7));
  return Template(source).render(context);
}

std::string error(const std::string& source) {
  try {
    render(source);
  } catch (const ChatTemplateError& e) {
    return e.what();
  }
  return "(no error)";
}

}  // namespace

TEST_CASE("jinja: literals and output", "[jinja]") {
  CHECK(render("a{{ 1 }}b") == "a1b");
  CHECK(render("{{ 'it\\'s' }} {{ \"q\\\"\\n\" }}") == "it's q\"\n");
  CHECK(render("{{ 2.5 }} {{ 3.0 }} {{ true }} {{ none }} {{ undefined_name }}|") ==
        "2.5 3.0 True None |");
  CHECK(render("{{ [1, 'a', none] }} {{ {'k': 'v'} }}") == "[1, 'a', None] {'k': 'v'}");
  CHECK(render("{{ 'a' 'b' }}") == "ab");
  CHECK(render("trailing newline dropped\n") == "trailing newline dropped");
}

TEST_CASE("jinja: operators and precedence", "[jinja]") {
  CHECK(render("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 2 ** 3 }} {{ -n }}") == "7 9 8 -7");
  CHECK(render("{{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 / 2 }}") ==
        "3 -4 1 2 3.5");
  CHECK(render("{{ 'a' + 'b' }} {{ 'a' ~ 1 ~ none }} {{ [1] + [2] }} {{ 'ab' * 3 }}") ==
        "ab a1None [1, 2] ababab");
  CHECK(render("{{ 1 == 1.0 }} {{ 'a' != 'b' }} {{ 2 < 3 }} {{ 'b' >= 'a' }}") ==
        "True True True True");
  CHECK(render("{{ not true or true and false }} {{ 0 or 'x' }} {{ '' and 'y' }}|") == "False x |");
  CHECK(render("{{ 'b' in 'abc' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 3 not in [3] }}") ==
        "True True True False");
  CHECK(render("{{ 'yes' if n > 5 else 'no' }} {{ 'yes' if n > 9 }}|") == "yes |");
  CHECK(render("{{ name + ' has ' ~ n | string + ' stars' }}") == "arbor has 7 stars");
  CHECK(error("{{ 1 / 0 }}").find("division by zero") != std::string::npos);
  CHECK(error("{{ 'a' - 1 }}").find("unsupported operands") != std::string::npos);
}

TEST_CASE("jinja: member access, indexing and slicing", "[jinja]") {
  CHECK(render("{{ messages[1].content }} {{ messages[1]['role'] }} {{ messages[-1].role }}") ==
        "hi user assistant");
  CHECK(
      render(
          "{{ messages[1:] | length }} {{ messages[:1][0].role }} {{ messages[::-1][0].role }}") ==
      "2 system assistant");
  CHECK(render("{{ 'héllo'[1:3] }} {{ 'abc'[-1] }} {{ 'abcdef'[::2] }}") == "él c ace");
  CHECK(render("{{ messages[0].missing is defined }} {{ messages[9] is defined }}") ==
        "False False");
  CHECK(render("{{ undefined_name.field is defined }}") == "False");
  CHECK(error("{{ undefined_name.field }}").find("undefined") != std::string::npos);
}

TEST_CASE("jinja: filters", "[jinja]") {
  CHECK(render("{{ '  a b \\n' | trim }}|{{ 'x' | upper }}{{ 'Y' | lower }}") == "a b|Xy");
  CHECK(render("{{ 'hello world' | title }} {{ 'hELLO' | capitalize }}") == "Hello World Hello");
  CHECK(render("{{ messages | length }} {{ 'héllo' | length }} {{ {'a': 1} | count }}") == "3 5 1");
  CHECK(render("{{ [1, 2, 3] | join(', ') }} {{ messages | map(attribute='role') | join }}") ==
        "1, 2, 3 systemuserassistant");
  CHECK(render("{{ [1, 2] | first }} {{ [1, 2] | last }} {{ [1, 2] | reverse | list }}") ==
        "1 2 [2, 1]");
  CHECK(render("{{ missing | default('d') }} {{ '' | default('d', true) }} {{ 'v' | d('x') }}") ==
        "d d v");
  CHECK(render("{{ {'a': [1, 'x', none, true]} | tojson }}") == "{\"a\": [1, \"x\", null, true]}");
  CHECK(render("{{ {'a': [1]} | tojson(indent=2) }}") == "{\n  \"a\": [\n    1\n  ]\n}");
  CHECK(render("{{ 'é\"\\n' | tojson }}") == "\"é\\\"\\n\"");
  CHECK(render("{{ {'b': 1, 'a': 2} | items | list }} {{ {'b': 1, 'a': 2} | dictsort }}") ==
        "[['b', 1], ['a', 2]] [['a', 2], ['b', 1]]");
  CHECK(render("{{ 'aXbX' | replace('X', '-') }} {{ '12' | int + 1 }} {{ 3 | float }}") ==
        "a-b- 13 3.0");
  CHECK(render("{{ ['a', 'b', 'a'] | reject('equalto', 'a') | list }} {{ [0, 1, 2] | select | list "
               "}}") == "['b'] [1, 2]");
  CHECK(render("{{ messages | selectattr('role', 'equalto', 'user') | list | length }}") == "1");
  CHECK(render("{{ ['a', 'b', 'a'] | unique | list }} {{ [3, 1] | sum }} {{ [3, 1] | min }}") ==
        "['a', 'b'] 4 1");
  CHECK(error("{{ 1 | nosuchfilter }}").find("unknown filter 'nosuchfilter'") != std::string::npos);
}

TEST_CASE("jinja: tests", "[jinja]") {
  CHECK(render("{{ name is defined }} {{ nope is undefined }} {{ none is none }}") ==
        "True True True");
  CHECK(render("{{ name is string }} {{ n is number }} {{ n is integer }} {{ n is odd }}") ==
        "True True True True");
  CHECK(render("{{ messages is iterable }} {{ messages[0] is mapping }} {{ n is not string }}") ==
        "True True True");
  CHECK(render("{{ n is divisibleby(7) }} {{ n is equalto 7 }} {{ n is sameas 7 }}") ==
        "True True True");
}

TEST_CASE("jinja: methods", "[jinja]") {
  CHECK(render("{{ '  x  '.strip() }}|{{ 'xxaxx'.lstrip('x') }}|{{ ' x '.rstrip() }}|") ==
        "x|axx| x|");
  CHECK(render("{{ 'abc'.startswith('ab') }} {{ 'abc'.endswith('bc') }} {{ 'a,b'.split(',') }}") ==
        "True True ['a', 'b']");
  CHECK(render("{{ messages[0].get('role') }} {{ messages[0].get('x', 'dflt') }}") ==
        "system dflt");
  CHECK(render("{{ messages[0].keys() | list }} {{ messages[0].values() | list }}") ==
        "['role', 'content'] ['system', 'sys']");
  CHECK(render("{% for k, v in messages[0].items() %}{{ k }}={{ v }};{% endfor %}") ==
        "role=system;content=sys;");
}

TEST_CASE("jinja: control flow, loops and scoping", "[jinja]") {
  CHECK(render("{% if n > 10 %}a{% elif n > 5 %}b{% else %}c{% endif %}") == "b");
  CHECK(render("{% for m in messages %}{{ loop.index }}{{ loop.index0 }}{{ loop.first }}"
               "{{ loop.last }}{{ loop.length }}{{ loop.revindex }};{% endfor %}") ==
        "10TrueFalse33;21FalseFalse32;32FalseTrue31;");
  CHECK(render("{% for m in messages if m.role != 'system' %}{{ loop.index }}{{ m.role }}"
               "{% endfor %}") == "1user2assistant");
  CHECK(render("{% for x in [] %}x{% else %}empty{% endfor %}") == "empty");
  CHECK(render("{% for x in range(10) %}{% if x == 3 %}{% break %}{% endif %}"
               "{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% endfor %}") == "02");
  CHECK(render("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }}{% endfor %}") == "37");
  CHECK(render("{% for c in 'ab' %}{{ c }}.{% endfor %}") == "a.b.");
  // `set` in a loop does not leak out of it; a namespace carries values out.
  CHECK(render("{% set x = 1 %}{% for m in messages %}{% set x = 2 %}{% endfor %}{{ x }}") == "1");
  CHECK(render("{% set ns = namespace(total=0) %}{% for i in range(4) %}"
               "{% set ns.total = ns.total + i %}{% endfor %}{{ ns.total }}") == "6");
  CHECK(render("{% if true %}{% set y = 'set in if' %}{% endif %}{{ y }}") == "set in if");
  CHECK(render("{% set block %}a{{ n }}b{% endset %}[{{ block }}]") == "[a7b]");
  CHECK(render("{% generation %}kept{% endgeneration %}") == "kept");
  CHECK(render("a{# comment #}b") == "ab");
}

TEST_CASE("jinja: whitespace control", "[jinja]") {
  CHECK(render("a  {{- ' b ' -}}  \n c") == "a b c");
  CHECK(render("a\n  {%- if true -%}\n  b  {%- endif %}") == "ab");
  // trim_blocks: the newline after a block tag goes; lstrip_blocks: indentation before it.
  CHECK(render("{% if true %}\nx\n    {% endif %}\ny") == "x\ny");
  CHECK(render("  {# c #}\nz") == "z");
  // Expression tags keep their surroundings.
  CHECK(render("  {{ 1 }}\n") == "  1");
  CHECK(render("x {% if true %}y{% endif %}") == "x y");
}

TEST_CASE("jinja: globals and errors", "[jinja]") {
  CHECK(render("{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(3, 0, -1) | list }}") ==
        "[0, 1, 2] [1, 3, 5] [3, 2, 1]");
  CHECK(render("{{ strftime_now('%Y') | length }}") == "4");
  CHECK(error("{{ raise_exception('custom message') }}") == "custom message");
  CHECK(error("{{ nope() }}").find("cannot call undefined 'nope'") != std::string::npos);
  CHECK(error("x\n  {{ 'a'.nomethod() }}").find("line 2, column 6") != std::string::npos);
  CHECK(error("{% for x in 5 %}{% endfor %}").find("cannot iterate over int") != std::string::npos);
  CHECK(error("{{ 'x' * 100000000 }}").find("too large") != std::string::npos);
  // A template is reusable: globals set during one render do not leak into the next.
  Template t("{% if seen is defined %}again{% endif %}{% set seen = 1 %}once");
  CHECK(t.render({}) == "once");
  CHECK(t.render({}) == "once");
}
