#include "server/cli_checks.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <system_error>

namespace arbor {
namespace cli {
namespace {

std::string number_text(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", v);
  return buf;
}

}  // namespace

CLI::Validator integer(long long lo, long long hi) {
  std::string what;
  if (lo <= INT_MIN && hi >= INT_MAX)
    what = "an integer";
  else if (hi >= INT_MAX)
    what = lo == 1   ? "a positive integer"
           : lo == 0 ? "a non-negative integer"
                     : "an integer >= " + std::to_string(lo);
  else
    what = "an integer in " + std::to_string(lo) + ".." + std::to_string(hi);
  return CLI::Validator(
      [lo, hi, what](std::string& s) -> std::string {
        long long v = 0;
        const char* end = s.data() + s.size();
        const auto r = std::from_chars(s.data(), end, v);
        const bool parsed = !s.empty() && r.ec == std::errc() && r.ptr == end;
        if (parsed && v > hi && hi >= INT_MAX)
          return "must be at most " + std::to_string(hi) + ", got " + s;
        if (!parsed || v < lo || v > hi) return "must be " + what + ", got " + s;
        return "";
      },
      hi >= INT_MAX ? (lo <= INT_MIN ? "" : ">= " + std::to_string(lo))
                    : std::to_string(lo) + ".." + std::to_string(hi));
}

CLI::Validator number(double lo, double hi) {
  std::string what;
  if (std::isinf(lo) && std::isinf(hi))
    what = "a number";
  else if (std::isinf(hi))
    what = "a number >= " + number_text(lo);
  else
    what = "a number in [" + number_text(lo) + ", " + number_text(hi) + "]";
  return CLI::Validator(
      [lo, hi, what](std::string& s) -> std::string {
        char* end = nullptr;
        const double v = s.empty() ? NAN : std::strtod(s.c_str(), &end);
        if (!std::isfinite(v) || end != s.c_str() + s.size() || v < lo || v > hi)
          return "must be " + what + ", got " + s;
        return "";
      },
      std::isinf(lo) && std::isinf(hi) ? ""
      : std::isinf(hi)                 ? ">= " + number_text(lo)
                                       : "in [" + number_text(lo) + ", " + number_text(hi) + "]");
}

}  // namespace cli

}  // namespace arbor
