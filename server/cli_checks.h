// Checks for the subcommands' numeric flags (CLI11 validators) whose failures read as one
// clear line (server/main.cpp prints "arbor: error: " before them).
#pragma once

#include <climits>

#include <CLI/CLI.hpp>

namespace arbor {

// Checks for numeric flags, shared by the subcommands. A failed check says what the value
// must be and what it got, after the flag's name: main() prints
// "arbor: error: --max-num-seqs must be a positive integer, got 0".
namespace cli {

// A decimal integer in [lo, hi] (no fraction, no exponent); hi == INT_MAX reads as "no
// upper bound" in messages.
CLI::Validator integer(long long lo, long long hi = INT_MAX);
// A finite number in [lo, hi] (either may be infinite: no bound on that side).
CLI::Validator number(double lo, double hi);

}  // namespace cli

}  // namespace arbor
