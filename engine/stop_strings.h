// Stop strings over streamed text: text that could be the start of a stop string is held
// back until the next increments show whether it is one. On a match the text before it is
// released and the sequence stops (the stop string itself is not sent, as in OpenAI's API).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace arbor {

class StopStringMatcher {
 public:
  // Empty stop strings are ignored.
  explicit StopStringMatcher(std::vector<std::string> stops);

  struct Result {
    std::string text;      // safe to send now
    bool stopped = false;  // a stop string was found; text is everything before it
  };
  // Adds the next text increment.
  Result push(std::string_view increment);
  // End of the sequence: everything still held back.
  std::string flush();
  bool empty() const { return stops_.empty(); }

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // not yet sent: may be the start of a stop string
};

}  // namespace arbor
