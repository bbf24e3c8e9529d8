#include "server/model_path.h"

#include <cstdlib>
#include <system_error>

namespace arbor {

std::filesystem::path default_model_dir() {
  if (const char* env = std::getenv("ARBOR_MODEL"); env && *env) return env;
  std::error_code ec;
  const std::filesystem::path exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const std::filesystem::path installed = exe.parent_path() / ".." / "share" / "arbor" / "demo";
    if (std::filesystem::exists(installed / "config.json", ec)) return installed.lexically_normal();
  }
  return ARBOR_DEMO_MODEL_DIR;
}

std::string default_served_model_name(const std::filesystem::path& model_dir) {
  std::error_code ec;
  std::filesystem::path p = std::filesystem::absolute(model_dir, ec);
  if (ec) p = model_dir;
  p = p.lexically_normal();
  if (p.filename().empty()) p = p.parent_path();  // "models/demo/" → "models/demo"
  std::string name = p.filename().string();
  return name.empty() || name == "." || name == ".." ? "arbor" : name;
}

}  // namespace arbor
