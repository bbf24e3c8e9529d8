// `arbor serve`: the OpenAI-compatible HTTP server (flags, env vars ARBOR_<FLAG>, --config).
#pragma once

#include <CLI/CLI.hpp>

namespace arbor {

void add_serve_command(CLI::App& app);

}  // namespace arbor
