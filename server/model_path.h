// Where `arbor` finds a model when --model is not given.
#pragma once

#include <filesystem>

namespace arbor {

// $ARBOR_MODEL if set; else the demo model installed next to the executable
// (<exe dir>/../share/arbor/demo, as in the Docker image); else the demo model in the
// source tree this binary was built from.
std::filesystem::path default_model_dir();

}  // namespace arbor
