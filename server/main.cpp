// arbor: an LLM inference server for Llama-architecture models. One executable with
// subcommands; each lives in its own file.
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <CLI/CLI.hpp>

#include "server/generate_command.h"
#include "server/serve_command.h"

namespace {

// "arbor foo": the first word that is not a flag, when it names no subcommand (CLI11 would
// only say that a subcommand is required).
std::string unknown_command(const CLI::App& app, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    if (word.empty() || word[0] == '-') continue;  // arbor's own flags take no values
    for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; }))
      if (sub->check_name(word)) return "";
    return word;
  }
  return "";
}

bool on_command_line(const CLI::Option& opt, int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string word = argv[i];
    for (const std::string& n : opt.get_lnames())
      if (word == "--" + n || word.rfind("--" + n + "=", 0) == 0) return true;
    for (const std::string& n : opt.get_snames())
      if (word.rfind("-" + n, 0) == 0) return true;
  }
  return false;
}

// CLI11's message for a usage error as one line that names what is wrong.
std::string usage_error(const CLI::App& app, const CLI::ParseError& e, int argc, char** argv) {
  std::string msg = e.what();
  msg = msg.substr(0, msg.find('\n'));
  const std::vector<CLI::App*> used = app.get_subcommands();
  const std::string help =
      used.empty() ? "arbor --help" : "arbor " + used.front()->get_name() + " --help";
  if (dynamic_cast<const CLI::RequiredError*>(&e) && used.empty())
    return "give a command: generate or serve (see arbor --help)";
  if (dynamic_cast<const CLI::ExtrasError*>(&e)) {
    const std::string args = msg.substr(msg.find(": ") + 2);
    if (args[0] == '-' && args.find(' ') == std::string::npos)
      return "unknown option " + args + " (see " + help + ")";
    if (args.find(' ') == std::string::npos)
      return "unexpected argument '" + args + "' (see " + help + ")";
    return "unexpected arguments " + args + " (see " + help + ")";
  }
  const std::string name = msg.substr(0, msg.find_first_of(": "));
  if (msg.find(": At Most 1 required but received") != std::string::npos)
    return name + " is given more than once";
  if (msg.rfind(name + ": 1 required", 0) == 0 && msg.find(" missing") != std::string::npos)
    return name + " needs a value";
  // Our checks (cli::integer, ...) say "must be ...": "--port: must" → "--port must".
  if (msg.rfind(name + ": must ", 0) == 0) msg.erase(name.size(), 1);
  // A bad value from the environment names its variable.
  for (const CLI::App* sub : used) {
    const CLI::Option* opt = sub->get_option_no_throw(name);
    if (opt && !opt->get_envname().empty() && std::getenv(opt->get_envname().c_str()) &&
        !on_command_line(*opt, argc, argv))
      return opt->get_envname() + ": " + msg;
  }
  return msg;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"arbor " ARBOR_VERSION ": LLM inference for Llama-architecture models"};
  app.set_version_flag("--version", ARBOR_VERSION);
  app.require_subcommand(1);
  arbor::add_generate_command(app);
  arbor::add_serve_command(app);
  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S.%e] [%^%l%$] %v");
  spdlog::set_default_logger(spdlog::stderr_color_mt("arbor"));
  // Usage errors, bad model folders, I/O errors: one clear line, exit code 1.
  try {
    if (const std::string word = unknown_command(app, argc, argv); !word.empty()) {
      std::fprintf(stderr, "arbor: error: unknown command '%s' (commands: generate, serve)\n",
                   word.c_str());
      return 1;
    }
    app.parse(argc, argv);
  } catch (const CLI::Success& e) {  // --help, --version
    return app.exit(e);
  } catch (const CLI::RuntimeError& e) {  // a command's own exit code (generate: 130 on SIGINT)
    return e.get_exit_code();
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "arbor: error: %s\n", usage_error(app, e, argc, argv).c_str());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "arbor: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
