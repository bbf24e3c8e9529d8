// tokenizer/utf8.h against the tests' own validator.
#include <catch2/catch.hpp>

#include <random>

#include "tests/tokenizer/tokenizer_fixtures.h"
#include "tokenizer/utf8.h"

using namespace arbor;

TEST_CASE("utf8: validity of known sequences", "[tokenizer]") {
  CHECK(is_valid_utf8(""));
  CHECK(is_valid_utf8("plain ascii"));
  CHECK(is_valid_utf8("\xC3\xA9\xE2\x98\x83\xF0\x9F\x98\x80\xF4\x8F\xBF\xBF"));
  CHECK_FALSE(is_valid_utf8("\x80"));              // stray continuation
  CHECK_FALSE(is_valid_utf8("\xE2\x98"));          // truncated
  CHECK_FALSE(is_valid_utf8("\xC0\x80"));          // overlong NUL
  CHECK_FALSE(is_valid_utf8("\xE0\x80\xAF"));      // overlong '/'
  CHECK_FALSE(is_valid_utf8("\xED\xA0\x80"));      // surrogate
  CHECK_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(is_valid_utf8("\xFF"));
  CHECK(utf8_char_length("\xE2\x98\x83x") == 3);
  CHECK(utf8_char_length("") == 0);
}

TEST_CASE("utf8: sanitize replaces each bad byte with U+FFFD", "[tokenizer]") {
  const std::string r = "\xEF\xBF\xBD";
  CHECK(sanitize_utf8("ok") == "ok");
  CHECK(sanitize_utf8("\xE2\x98") == r + r);
  CHECK(sanitize_utf8("a\x80"
                      "b") == "a" + r + "b");
  CHECK(sanitize_utf8("\xE2\xC3\xA9") == r + "\xC3\xA9");
}

TEST_CASE("utf8: random bytes agree with the independent validator", "[tokenizer]") {
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> len(0, 12);
  // Bias towards bytes that make up multi-byte sequences.
  const std::vector<unsigned char> pool = {'a',  0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC2,
                                           0xDF, 0xE0, 0xED, 0xEF, 0xF0, 0xF4, 0xF5, 0xFF};
  std::uniform_int_distribution<size_t> pick(0, pool.size() - 1);
  for (int trial = 0; trial < 20000; ++trial) {
    std::string s(size_t(len(rng)), '\0');
    for (auto& c : s) c = char(pool[pick(rng)]);
    INFO("trial " << trial);
    REQUIRE(is_valid_utf8(s) == arbor::test::valid_utf8(s));
    const std::string clean = sanitize_utf8(s);
    REQUIRE(arbor::test::valid_utf8(clean));
    if (is_valid_utf8(s)) REQUIRE(clean == s);
  }
}
