// The Prometheus text that /metrics serves (server/metrics.h), without HTTP.
#include <catch2/catch.hpp>

#include <regex>
#include <sstream>
#include <string>

#include "server/metrics.h"

namespace arbor {

TEST_CASE("metric label values are escaped for the Prometheus text format", "[server]") {
  CHECK(prometheus_label_value("demo") == "demo");
  CHECK(prometheus_label_value(R"(a"b\c)") == R"(a\"b\\c)");
  CHECK(prometheus_label_value("two\nlines") == R"(two\nlines)");

  // Every sample line of a render with an awkward --served-model-name parses: a metric name,
  // labels whose values are quoted strings with only \\, \" and \n escapes, and a number.
  ServerMetrics metrics;
  metrics.observe_request(0.01, 0.02, 0.5, {0.01, 0.02}, "stop");
  const std::string text = metrics.render(EngineStats{}, "we\"ird\\model\nname", 0);
  const std::regex sample(
      R"re([a-zA-Z_:][a-zA-Z0-9_:]*\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\[\\"n])*",?)*\} [-+0-9.eEInf]+)re");
  std::istringstream lines(text);
  std::string line;
  int samples = 0;
  while (std::getline(lines, line)) {
    if (line.empty() || line[0] == '#') continue;
    INFO(line);
    CHECK(std::regex_match(line, sample));
    CHECK(line.find(R"(model_name="we\"ird\\model\nname")") != std::string::npos);
    ++samples;
  }
  CHECK(samples > 20);
}

}  // namespace arbor
