// HfBpeTokenizer: ids equal Hugging Face's on the Llama-2 and Llama-3 tokenizer.json files
// (reference_ids.json, made by tools/make_tokenizer_fixtures.mjs), decoding, added/special
// tokens, BOS rules, malformed files, invalid UTF-8 and the incremental detokenizer.
#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/tokenizer/tokenizer_fixtures.h"
#include "tokenizer/hf_bpe_tokenizer.h"
#include "tokenizer/incremental_detokenizer.h"
#include "tokenizer/utf8.h"

using namespace arbor;
using namespace arbor::test;
using json = nlohmann::json;

namespace {

std::filesystem::path hf_dir(const std::string& name) {
  return fixtures_dir() / "tokenizers" / name;
}

// Loaded once: the Llama-3 file is 9 MB.
const Tokenizer& llama(const std::string& name) {
  static const auto llama2 = load_tokenizer(hf_dir("llama2"));
  static const auto llama3 = load_tokenizer(hf_dir("llama3"));
  return name == "llama2" ? *llama2 : *llama3;
}

const json& reference() {
  static const json j =
      json::parse(read_file(fixtures_dir() / "tokenizers" / "reference_ids.json"));
  return j;
}

std::vector<int32_t> ids_of(const json& j) {
  return j.get<std::vector<int32_t>>();
}

// A small byte-level BPE tokenizer.json in the Llama-3 style: the 256 byte characters, a few
// merges, two special added tokens and a TemplateProcessing with BOS.
json tiny_byte_level() {
  json vocab = json::object();
  int id = 0;
  std::vector<std::string> byte_chars;
  int next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    const int cp = printable ? b : next++;
    std::string s;
    if (cp < 0x80) {
      s += char(cp);
    } else {
      s += char(0xC0 | (cp >> 6));
      s += char(0x80 | (cp & 0x3F));
    }
    byte_chars.push_back(s);
    vocab[s] = id++;
  }
  const std::string G = byte_chars[' '];  // "Ġ"
  json merges = json::array();
  for (const auto& [l, r] : std::vector<std::pair<std::string, std::string>>{
           {"h", "e"}, {"l", "l"}, {"he", "ll"}, {"hell", "o"}, {G, "w"}, {"o", "r"}}) {
    vocab[l + r] = id++;
    merges.push_back(l + " " + r);
  }
  json t = json::parse(R"({
    "version": "1.0",
    "added_tokens": [
      {"id": 300, "content": "<|bos|>", "special": true},
      {"id": 301, "content": "<|eos|>", "special": true},
      {"id": 302, "content": "[plain]", "special": false}],
    "normalizer": null,
    "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
      {"type": "Split", "pattern": {"Regex": " ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+"},
       "behavior": "Isolated", "invert": false},
      {"type": "ByteLevel", "add_prefix_space": false, "use_regex": false}]},
    "post_processor": {"type": "Sequence", "processors": [
      {"type": "ByteLevel"},
      {"type": "TemplateProcessing",
       "single": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}},
                  {"Sequence": {"id": "A", "type_id": 0}}],
       "special_tokens": {"<|bos|>": {"id": "<|bos|>", "ids": [300]}}}]},
    "decoder": {"type": "ByteLevel"},
    "model": {"type": "BPE", "ignore_merges": false}
  })");
  t["model"]["vocab"] = vocab;
  t["model"]["merges"] = merges;
  return t;
}

struct HfDir {
  TempDir dir;
  explicit HfDir(const json& tokenizer, std::optional<std::string> config = std::nullopt) {
    write_file(dir.path() / "tokenizer.json", tokenizer.dump());
    if (config) write_file(dir.path() / "tokenizer_config.json", *config);
  }
  const std::filesystem::path& path() const { return dir.path(); }
};

template <typename F>
void check_error(F&& f, const std::vector<std::string>& parts) {
  try {
    f();
    FAIL("no TokenizerError");
  } catch (const TokenizerError& e) {
    for (const auto& part : parts) CHECK_THAT(e.what(), Catch::Contains(part));
  }
}

}  // namespace

TEST_CASE("hf bpe: ids and decoded text equal Hugging Face's", "[tokenizer]") {
  for (const std::string name : {"llama2", "llama3"}) {
    const Tokenizer& tok = llama(name);
    const auto& cases = reference().at("tokenizers").at(name);
    REQUIRE(cases.size() > 30);
    for (const auto& c : cases) {
      const auto text = c.at("text").get<std::string>();
      INFO(name << " text '" << text << "'");
      const auto ids = tok.encode(text, false);
      CHECK(ids == ids_of(c.at("ids")));
      CHECK(tok.encode(text, true) == ids_of(c.at("ids_special")));
      CHECK(tok.decode(ids, false) == c.at("decoded").get<std::string>());
      CHECK(tok.decode(ids, true) == c.at("decoded_skip").get<std::string>());
    }
  }
}

TEST_CASE("hf bpe: vocabulary, BOS/EOS and special ids of the Llama files", "[tokenizer]") {
  const Tokenizer& l2 = llama("llama2");
  CHECK(l2.vocab_size() == 32000);
  CHECK(l2.bos_id() == 1);
  CHECK(l2.eos_id() == 2);
  CHECK(l2.is_special(0));
  CHECK(l2.is_special(1));
  CHECK(l2.is_special(2));
  CHECK_FALSE(l2.is_special(3));
  CHECK_FALSE(l2.is_special(-1));
  CHECK_FALSE(l2.is_special(32000));
  CHECK(l2.id_to_piece(1) == "<s>");
  CHECK(l2.id_to_piece(3) == "<0x00>");
  CHECK_THROWS_AS(l2.id_to_piece(32000), TokenizerError);

  const Tokenizer& l3 = llama("llama3");
  CHECK(l3.vocab_size() == 128256);
  CHECK(l3.bos_id() == 128000);
  CHECK(l3.eos_id() == 128001);
  CHECK(l3.is_special(128009));
  CHECK_FALSE(l3.is_special(9906));
  CHECK(l3.id_to_piece(128009) == "<|eot_id|>");
  CHECK(l3.id_to_piece(1917) == "\xC4\xA0world");  // "Ġworld"
  CHECK_THROWS_AS(l3.decode(std::vector<int32_t>{128256}, false), TokenizerError);
  CHECK_THROWS_AS(l3.decode(std::vector<int32_t>{-1}, true), TokenizerError);
}

TEST_CASE("hf bpe: special tokens in the text become their ids", "[tokenizer]") {
  const Tokenizer& l3 = llama("llama3");
  const auto ids = l3.encode("<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>", false);
  REQUIRE(ids.size() >= 5);
  CHECK(ids.front() == 128006);
  CHECK(ids[2] == 128007);
  CHECK(ids.back() == 128009);
  CHECK(l3.decode(ids, false) == "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>");
  CHECK(l3.decode(ids, true) == "user\n\nhi");
  // Not quite a special token: plain text.
  for (const auto id : l3.encode("<|eot_id |eot_id|> <|eot_id", false)) CHECK(id < 128000);

  const Tokenizer& l2 = llama("llama2");
  const auto l2ids = l2.encode("a</s>b", false);
  CHECK(std::count(l2ids.begin(), l2ids.end(), 2) == 1);
}

TEST_CASE("hf bpe: decode(encode(text)) gives the text back", "[tokenizer]") {
  for (const std::string name : {"llama2", "llama3"}) {
    const Tokenizer& tok = llama(name);
    for (const auto& c : reference().at("tokenizers").at(name)) {
      const auto text = c.at("text").get<std::string>();
      // Llama-2's Prepend normalizer adds a "▁" after every added token, which decodes as a space.
      if (name == "llama2" && text.find('<') != std::string::npos) continue;
      INFO(name << " text '" << text << "'");
      CHECK(tok.decode(tok.encode(text, false), false) == text);
      if (text.find("<|") == std::string::npos) {
        CHECK(tok.decode(tok.encode(text, true), true) == text);
      }
    }
  }
}

TEST_CASE("hf bpe: invalid UTF-8 encodes as its U+FFFD-sanitized text", "[tokenizer]") {
  const std::vector<std::string> texts = {
      "\xFF",
      "abc\xC3",
      "\xE4\xB8 half a character",
      "\x80\x80\x80 stray continuations",
      "mixed \xF0\x9F\x98 emoji \xF0\x9F\x98\x80 and \xED\xA0\x80 a surrogate",
      std::string("nul \0 byte", 10)};
  for (const std::string name : {"llama2", "llama3"}) {
    const Tokenizer& tok = llama(name);
    for (const auto& text : texts) {
      INFO(name << " text '" << text << "'");
      const auto ids = tok.encode(text, true);
      CHECK(ids == tok.encode(sanitize_utf8(text), true));
      const auto decoded = tok.decode(ids, true);
      CHECK(valid_utf8(decoded));
      CHECK(decoded == sanitize_utf8(text));
    }
  }
  // Decoding ids that end inside a character gives U+FFFD, never invalid UTF-8.
  const Tokenizer& l3 = llama("llama3");
  const auto emoji = l3.encode("\xF0\x9F\x98\x80\xF0\x9F\x91\x8D", false);
  for (size_t n = 0; n <= emoji.size(); ++n) {
    CHECK(valid_utf8(l3.decode(std::span(emoji).first(n), false)));
  }
}

TEST_CASE("hf bpe: BOS/EOS from the template and tokenizer_config.json", "[tokenizer]") {
  const json tiny = tiny_byte_level();
  SECTION("template adds BOS") {
    HfDir dir(tiny);
    const auto tok = load_tokenizer(dir.path());
    CHECK(tok->bos_id() == 300);
    CHECK_FALSE(tok->eos_id());
    const auto plain = tok->encode("hello world", false);
    CHECK(plain == std::vector<int32_t>{259, 260, 261, 108, 100});  // hello Ġw or l d
    auto with_bos = plain;
    with_bos.insert(with_bos.begin(), 300);
    CHECK(tok->encode("hello world", true) == with_bos);
    CHECK(tok->encode("", true) == std::vector<int32_t>{300});
    CHECK(tok->decode(with_bos, false) == "<|bos|>hello world");
    CHECK(tok->decode(with_bos, true) == "hello world");
  }
  SECTION("config turns BOS off and EOS on") {
    HfDir dir(tiny, R"({"add_bos_token": false, "add_eos_token": true, "eos_token": "<|eos|>"})");
    const auto tok = load_tokenizer(dir.path());
    CHECK(tok->eos_id() == 301);
    CHECK(tok->encode("hello", true) == std::vector<int32_t>{259, 301});
  }
  SECTION("config names BOS as an AddedToken object") {
    HfDir dir(tiny, R"({"add_bos_token": true, "bos_token": {"content": "<|eos|>"}})");
    CHECK(load_tokenizer(dir.path())->encode("hello", true) == std::vector<int32_t>{301, 259});
  }
  SECTION("no template, no config: nothing added") {
    json t = tiny;
    t["post_processor"] = {{"type", "ByteLevel"}};
    HfDir dir(t);
    const auto tok = load_tokenizer(dir.path());
    CHECK_FALSE(tok->bos_id());
    CHECK(tok->encode("hello", true) == std::vector<int32_t>{259});
  }
  SECTION("non-special added tokens are matched but kept by skip_special") {
    HfDir dir(tiny);
    const auto tok = load_tokenizer(dir.path());
    const auto ids = tok->encode("a[plain]b", false);
    CHECK(ids == std::vector<int32_t>{97, 302, 98});
    CHECK_FALSE(tok->is_special(302));
    CHECK(tok->decode(ids, true) == "a[plain]b");
  }
  SECTION("lstrip / rstrip take the whitespace around an added token") {
    json t = tiny;
    t["added_tokens"][1]["lstrip"] = true;
    t["added_tokens"][1]["rstrip"] = true;
    HfDir dir(t);
    CHECK(load_tokenizer(dir.path())->encode("a  <|eos|> \tb", false) ==
          std::vector<int32_t>{97, 301, 98});
  }
  SECTION("tokenizer.json is preferred over tokenizer.model") {
    HfDir dir(tiny);
    std::filesystem::copy_file(brown_model(512), dir.path() / "tokenizer.model");
    CHECK(load_tokenizer(dir.path())->vocab_size() == 303);
  }
}

TEST_CASE("hf bpe: malformed tokenizer.json names the file", "[tokenizer]") {
  const json tiny = tiny_byte_level();
  const auto with = [&](const char* key, json value) {
    json t = tiny;
    t[key] = std::move(value);
    return t.dump();
  };
  json bad_merge = tiny;
  bad_merge["model"]["merges"].push_back("x yz");
  json unigram = tiny;
  unigram["model"]["type"] = "Unigram";
  json bad_vocab = tiny;
  bad_vocab["model"]["vocab"] = json::array();
  // Ids that are not int32 token ids (found by tests/fuzz/fuzz_tokenizer_json: 1.65e96 was
  // converted with get<int32_t>(), undefined behaviour; 2^31-1 sized a 64 GB table).
  const auto vocab_id = [&](json id) {
    json t = tiny;
    t["model"]["vocab"]["h"] = std::move(id);
    return t.dump();
  };
  const auto added_id = [&](json id) {
    json t = tiny;
    t["added_tokens"][0]["id"] = std::move(id);
    return t.dump();
  };
  const auto template_id = [&](json id) {
    json t = tiny;
    t["post_processor"]["processors"][1]["special_tokens"]["<|bos|>"]["ids"] = {std::move(id)};
    return t.dump();
  };
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"empty", ""},
      {"not JSON", "tokenizer"},
      {"truncated", tiny.dump().substr(0, 500)},
      {"array", "[1, 2]"},
      {"no model", "{}"},
      {"Unigram model", unigram.dump()},
      {"vocab not an object", bad_vocab.dump()},
      {"merge of unknown tokens", bad_merge.dump()},
      {"bad regex",
       with("pre_tokenizer",
            {{"type", "Split"}, {"pattern", {{"Regex", "(unclosed"}}}, {"behavior", "Isolated"}})},
      {"unknown normalizer", with("normalizer", {{"type", "NFKC"}})},
      {"unknown decoder", with("decoder", {{"type", "WordPiece"}})},
      {"added token not an object", with("added_tokens", {1})},
      {"float vocab id", vocab_id(1.65e96)},
      {"fractional vocab id", vocab_id(3.5)},
      {"string vocab id", vocab_id("7")},
      {"negative vocab id", vocab_id(-1)},
      {"huge vocab id", vocab_id(2147483647)},
      {"vocab id over 2^32", vocab_id(uint64_t(1) << 40)},
      {"float added token id", added_id(1e30)},
      {"negative added token id", added_id(-5)},
      {"added token content not a string",
       [&] {
         json t = tiny;
         t["added_tokens"][0]["content"] = 5;
         return t.dump();
       }()},
      {"float template id", template_id(-1e300)},
      {"template id outside the vocabulary", template_id(5000)},
      {"Strip decoder with a negative count",
       with("decoder", {{"type", "Strip"}, {"content", " "}, {"start", -1}, {"stop", 0}})},
      {"Strip decoder with a float count",
       with("decoder", {{"type", "Strip"}, {"content", " "}, {"start", 1e40}, {"stop", 0}})},
      {"template with undefined token",
       with("post_processor", {{"type", "TemplateProcessing"},
                               {"single", {{{"SpecialToken", {{"id", "<x>"}}}}}},
                               {"special_tokens", json::object()}})},
  };
  for (const auto& [name, contents] : cases) {
    INFO(name);
    TempDir dir;
    const auto file = dir.path() / "tokenizer.json";
    write_file(file, contents);
    check_error([&] { load_tokenizer(dir.path()); }, {file.string()});
  }
  // The same errors from memory, named as the caller says.
  check_error([&] { HfBpeTokenizer(vocab_id(1.65e96), "mem.json", {}); }, {"mem.json", "vocab"});
  CHECK(HfBpeTokenizer(tiny.dump(), "mem.json", {}).encode("hello world", true) ==
        load_tokenizer(HfDir(tiny).path())->encode("hello world", true));
  TempDir dir;
  check_error([&] { HfBpeTokenizer(dir.path() / "tokenizer.json", {}); },
              {(dir.path() / "tokenizer.json").string()});
  std::filesystem::create_directory(dir.path() / "tokenizer.json");
  check_error([&] { load_tokenizer(dir.path()); }, {(dir.path() / "tokenizer.json").string()});
  // A BOS that the config asks for but that does not exist.
  HfDir no_bos(tiny, R"({"add_bos_token": true, "bos_token": "<nope>"})");
  check_error([&] { load_tokenizer(no_bos.path()); },
              {(no_bos.path() / "tokenizer.json").string(), "<nope>"});
}

TEST_CASE("hf bpe: the incremental detokenizer streams byte-level text", "[tokenizer]") {
  for (const std::string name : {"llama3", "llama2"}) {
    const Tokenizer& tok = llama(name);
    const auto prompt = tok.encode("Question: what next?\nAnswer:", true);
    const std::string prompt_text = tok.decode(prompt, true);
    for (const auto& c : reference().at("tokenizers").at(name)) {
      const auto output = tok.encode(c.at("text").get<std::string>(), false);
      INFO(name << " text '" << c.at("text").get<std::string>() << "'");
      IncrementalDetokenizer detok(tok, prompt);
      std::string streamed;
      for (const int32_t id : output) {
        const auto inc = detok.push(id);
        CHECK(valid_utf8(inc));
        streamed += inc;
      }
      streamed += detok.flush();
      auto all = prompt;
      all.insert(all.end(), output.begin(), output.end());
      const std::string full = tok.decode(all, true);
      REQUIRE(full.compare(0, prompt_text.size(), prompt_text) == 0);
      CHECK(streamed == full.substr(prompt_text.size()));
    }
  }
}

TEST_CASE("hf bpe: cached and uncached words agree; long words", "[tokenizer]") {
  const Tokenizer& l3 = llama("llama3");
  const std::string word(HfBpeTokenizer::kMaxCachedWordBytes + 50, 'z');
  const std::string text = "zzzz " + word + " zzzz " + word;
  const auto first = l3.encode(text, false);
  CHECK(l3.encode(text, false) == first);
  CHECK(l3.decode(first, false) == text);
  const Tokenizer& l2 = llama("llama2");
  std::string long_text;
  for (int i = 0; i < 200; ++i) long_text += "the jury said it did not find any evidence. ";
  const auto ids = l2.encode(long_text, false);
  CHECK(l2.decode(ids, false) == long_text);
  CHECK(ids.size() < long_text.size() / 3);
}

TEST_CASE("hf bpe: Llama-2 word-by-word BPE equals BPE over the whole text", "[tokenizer]") {
  // A token with "▁" inside a word turns the word split off: BPE then runs on whole segments.
  json t = json::parse(read_file(hf_dir("llama2") / "tokenizer.json"));
  t["model"]["vocab"]["x\u2581y"] = 32000;
  HfDir dir(t, read_file(hf_dir("llama2") / "tokenizer_config.json"));
  const auto whole = load_tokenizer(dir.path());
  const Tokenizer& split = llama("llama2");
  std::string all;
  for (const auto& c : reference().at("tokenizers").at("llama2")) {
    const auto text = c.at("text").get<std::string>();
    INFO("text '" << text << "'");
    CHECK(whole->encode(text, true) == split.encode(text, true));
    all += text;
  }
  CHECK(whole->encode(all, false) == split.encode(all, false));
  const std::string odd =
      "a\xE2\x96\x81"
      "b \xE2\x96\x81\xE2\x96\x81x";  // literal "▁"
  CHECK(whole->encode(odd, false) == split.encode(odd, false));
}
