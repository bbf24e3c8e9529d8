// `arbor generate`: one prompt in, streamed text out, speed on stderr.
#pragma once

#include <CLI/CLI.hpp>

namespace arbor {

// Adds the subcommand to `app`; running it calls run_generate() with the parsed options.
void add_generate_command(CLI::App& app);

}  // namespace arbor
