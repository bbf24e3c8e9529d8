// Peers of the benchmarks (tools/bench_*.py) run as a child process that prints one JSON
// object per result line; everything else it prints (versions, warnings) is passed through
// to stderr, so the benchmark's own table on stdout stays clean.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdio>
#include <functional>
#include <string>

namespace arbor::bench {

// Runs `cmd` and calls on_result for every line that is a JSON object containing `key`.
inline void run_peer_command(const std::string& cmd, const char* key,
                             const std::function<void(const nlohmann::json&)>& on_result) {
  std::fprintf(stderr, "peer: %s\n", cmd.c_str());
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) {
    std::fprintf(stderr, "peer: cannot start the command\n");
    return;
  }
  char line[4096];
  while (std::fgets(line, sizeof line, pipe)) {
    const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object() || !j.contains(key)) {
      std::fprintf(stderr, "peer: %s", line);  // not a result line: pass it through
      continue;
    }
    on_result(j);
  }
  const int rc = pclose(pipe);
  if (rc != 0) std::fprintf(stderr, "peer: exited with status %d\n", rc);
}

}  // namespace arbor::bench
