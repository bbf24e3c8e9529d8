// `arbor serve`: the OpenAI-compatible HTTP server (flags, env vars ARBOR_<FLAG>, --config).
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "models/config.h"

namespace arbor {

void add_serve_command(CLI::App& app);

// The CPU backend's KV cache without --kv-cache-tokens: 4 × the model's context, but no
// more than fits in 4 GiB (fp32 K and V of every layer), and at least one block.
int default_cpu_kv_cache_tokens(const LlamaConfig& config, int block_size);

// "http://127.0.0.1:8000", "http://[::1]:8000".
std::string http_url(const std::string& host, int port);

}  // namespace arbor
