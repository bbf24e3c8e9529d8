// libFuzzer target: bytes as a whole .safetensors file through the header parser. A malformed
// file must end in a ModelError; in a file that parses, every tensor's bytes lie inside the
// input and convert to f32 (ASan checks every read).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <span>
#include <vector>

#include "models/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  // A copy of exactly `size` bytes, so any read past the end is an ASan report.
  std::vector<std::byte> bytes(size);
  if (size) std::memcpy(bytes.data(), data, size);
  arbor::SafetensorsHeader h;
  try {
    h = arbor::parse_safetensors(bytes, "fuzz.safetensors");
  } catch (const arbor::ModelError&) {
    return 0;
  }
  const std::byte* begin = bytes.data();
  const std::byte* end = begin + bytes.size();
  std::vector<float> out;
  for (const auto& [name, t] : h.tensors) {
    if (t.nbytes && (t.data < begin || t.data + t.nbytes > end)) std::abort();
    const size_t n = t.nbytes / arbor::dtype_size(t.dtype);
    if (int64_t(n) != t.numel()) std::abort();
    out.resize(n);
    arbor::convert_to_f32(t.dtype, t.data, n, out.data());
  }
  return 0;
}
