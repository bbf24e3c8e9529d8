// arbor: an LLM inference server for Llama-architecture models. One executable with
// subcommands; each lives in its own file.
#include <cstdio>
#include <exception>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "server/generate_command.h"
#include "server/serve_command.h"

int main(int argc, char** argv) {
  CLI::App app{"arbor " ARBOR_VERSION ": LLM inference for Llama-architecture models"};
  app.set_version_flag("--version", ARBOR_VERSION);
  app.require_subcommand(1);
  arbor::add_generate_command(app);
  arbor::add_serve_command(app);
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  spdlog::set_default_logger(spdlog::stderr_color_mt("arbor"));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const std::exception& e) {
    // Bad model folders, bad arguments, I/O errors: one clear line, non-zero exit.
    std::fprintf(stderr, "arbor: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
