#include "engine/stop_strings.h"

#include <catch2/catch.hpp>

namespace arbor {

TEST_CASE("stop strings: text that may start a stop string is held back", "[stop]") {
  StopStringMatcher m({"END", "\n\n"});
  CHECK(m.push("hello E").text == "hello ");
  auto r = m.push("N");
  CHECK(r.text.empty());
  CHECK_FALSE(r.stopped);
  r = m.push("D of it");
  CHECK(r.stopped);
  CHECK(r.text.empty());
}

TEST_CASE("stop strings: a false start is released", "[stop]") {
  StopStringMatcher m({"END"});
  CHECK(m.push("EN").text.empty());
  auto r = m.push("TER");
  CHECK(r.text == "ENTER");
  CHECK(m.push("xE").text == "x");
  CHECK(m.flush() == "E");
}

TEST_CASE("stop strings: the earliest match wins, text before it is sent", "[stop]") {
  StopStringMatcher m({"bc", "abcd"});
  auto r = m.push("xxabcd");
  CHECK(r.stopped);
  CHECK(r.text == "xx");  // "abcd" starts before "bc"
}

TEST_CASE("stop strings: none or empty ones pass text through", "[stop]") {
  StopStringMatcher m({""});
  CHECK(m.empty());
  CHECK(m.push("abc").text == "abc");
  CHECK(m.flush().empty());
}

TEST_CASE("stop strings: multi-byte UTF-8 prefixes", "[stop]") {
  StopStringMatcher m({"é!"});
  CHECK(m.push("caf\xC3\xA9").text == "caf");
  auto r = m.push("!");
  CHECK(r.stopped);
  CHECK(r.text.empty());
}

}  // namespace arbor
