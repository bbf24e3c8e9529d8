// Where `arbor` finds a model when --model is not given.
#pragma once

#include <filesystem>
#include <string>

namespace arbor {

// $ARBOR_MODEL if set; else the demo model installed next to the executable
// (<exe dir>/../share/arbor/demo, as in the Docker image); else the demo model in the
// source tree this binary was built from.
std::filesystem::path default_model_dir();

// The model id `serve` reports without --served-model-name: the folder's own name however
// the path spells it ("models/demo/", "." inside it, "demo/../demo" all give "demo"). Links
// are not followed, so a linked folder keeps the link's name; "/" gives "arbor".
std::string default_served_model_name(const std::filesystem::path& model_dir);

}  // namespace arbor
