// Helpers shared by the tests.
#pragma once

#include <cstdint>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

namespace arbor::test {

// Folder of committed fixtures (tests/fixtures) and the demo model (models/demo). Both come
// from the source tree the tests were built from, or from $ARBOR_SOURCE_DIR when set (tests
// built here and run on another machine, e.g. the GPU host).
std::filesystem::path fixtures_dir();
std::filesystem::path demo_model_dir();

// A fresh empty directory under the system temp dir, removed when the object dies.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

void write_file(const std::filesystem::path& path, const std::string& contents);
std::string read_file(const std::filesystem::path& path);

// n values uniform in [lo, hi) from a seeded generator.
std::vector<float> random_floats(size_t n, uint64_t seed, float lo = -1.0f, float hi = 1.0f);

// max |a - b| over two equally long vectors.
float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b);

}  // namespace arbor::test
