// libFuzzer target: tokenizer.json text through HfBpeTokenizer's loader. A malformed file must
// end in a TokenizerError; a file that loads must encode and decode any text without crashing
// (ids in range, decode of its own ids, id_to_piece of every id).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/hf_bpe_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  std::unique_ptr<arbor::HfBpeTokenizer> tok;
  try {
    tok =
        std::make_unique<arbor::HfBpeTokenizer>(text, "fuzz/tokenizer.json", arbor::HfBpeOptions{});
  } catch (const arbor::TokenizerError& e) {
    static const bool verbose = std::getenv("ARBOR_FUZZ_VERBOSE") != nullptr;
    if (verbose) std::fprintf(stderr, "rejected: %s\n", e.what());
    return 0;
  }
  // Encode a fixed sample and the input's own tail (arbitrary bytes, invalid UTF-8 included).
  const std::string samples[] = {"Hello world! <|bos|> 123 héllo\n\t  x",
                                 std::string(text.substr(text.size() / 2))};
  const int vocab = tok->vocab_size();
  for (const std::string& s : samples) {
    try {
      for (bool special : {false, true}) {
        const std::vector<int32_t> ids = tok->encode(s, special);
        for (int32_t id : ids)
          if (id < 0 || id >= vocab) std::abort();
        (void)tok->decode(ids, false);
        (void)tok->decode(ids, true);
      }
    } catch (const arbor::TokenizerError&) {
      // e.g. a vocabulary without the pieces the text needs and no unk token
    }
  }
  for (int32_t id = 0; id < vocab && id < 4096; ++id) {
    try {
      (void)tok->id_to_piece(id);
      (void)tok->is_special(id);
      const int32_t one[] = {id};
      (void)tok->decode(one, false);
    } catch (const arbor::TokenizerError&) {
    }
  }
  if (auto b = tok->bos_id(); b && (*b < 0 || *b >= vocab)) std::abort();
  if (auto e = tok->eos_id(); e && (*e < 0 || *e >= vocab)) std::abort();
  return 0;
}
