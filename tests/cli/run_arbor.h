// Running the built `arbor` executable from the CLI tests, as a user would.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "tests/test_util.h"

extern char** environ;

namespace arbor::test {

inline std::string arbor_binary() {
  return std::string(ARBOR_BINARY_DIR) + "/server/arbor";
}

struct RunResult {
  int exit_code = -1;  // -1: killed by a signal
  std::string out;     // stdout
  std::string err;     // stderr
};

// Runs `arbor ARGS` through the shell; `env` (e.g. "ARBOR_PORT=x") goes before it.
inline RunResult run_arbor(const std::string& args, const std::string& env = "") {
  TempDir tmp;
  const auto err_path = tmp.path() / "stderr";
  const std::string cmd = env + " " + arbor_binary() + " " + args + " 2>" + err_path.string();
  RunResult r;
  FILE* pipe = ::popen(cmd.c_str(), "r");
  REQUIRE(pipe != nullptr);
  std::array<char, 4096> buf;
  size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int status = ::pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.err = read_file(err_path);
  return r;
}

// `sh -c SCRIPT` in the background (the script should `exec` arbor, so signals reach it),
// stdout and stderr to files; the destructor kills it if it still runs.
class Background {
 public:
  explicit Background(const std::string& script) {
    const std::string out = (tmp_.path() / "stdout").string();
    const std::string err = (tmp_.path() / "stderr").string();
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    std::vector<std::string> argv_s = {"/bin/sh", "-c", script};
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    const int rc = posix_spawn(&pid_, "/bin/sh", &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    REQUIRE(rc == 0);
  }
  ~Background() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  Background(const Background&) = delete;
  Background& operator=(const Background&) = delete;

  std::string out() const { return read_file(tmp_.path() / "stdout"); }
  std::string err() const { return read_file(tmp_.path() / "stderr"); }

  // Polls until done(*this) or the timeout; false on timeout or when the process exited.
  template <typename Pred>
  bool wait_until(Pred done, std::chrono::seconds timeout = std::chrono::seconds(60)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
      if (done(*this)) return true;
      if (::waitpid(pid_, &status_, WNOHANG) == pid_) {
        pid_ = -1;
        return done(*this);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

  // Sends `sig` and returns at once.
  void signal(int sig) const {
    if (pid_ > 0) ::kill(pid_, sig);
  }

  // Sends `sig` and waits; the exit code, or -1 when a signal killed it.
  int signal_and_wait(int sig) {
    if (pid_ > 0) {
      ::kill(pid_, sig);
      ::waitpid(pid_, &status_, 0);
      pid_ = -1;
    }
    return WIFEXITED(status_) ? WEXITSTATUS(status_) : -1;
  }

 private:
  TempDir tmp_;
  pid_t pid_ = -1;
  int status_ = 0;
};

}  // namespace arbor::test
