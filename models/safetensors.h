// Memory-mapped safetensors files, single or sharded (model.safetensors.index.json).
//
// Format: 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data
// block; offsets are relative to the start of the data block. Every malformed input gets a
// ModelError naming the file (and tensor) — never a crash or an out-of-bounds read.
//
// Tensors of dtypes arbor cannot load (I64, I32, U8, BOOL, F64, F8_*, ... — legitimate in
// real files, e.g. buffers) do not fail the open: their offsets are still validated, they are
// listed by unsupported() / contains() / names(), and only asking for one (WeightStore::get)
// throws "tensor X in FILE has dtype I64; arbor loads F32, F16 and BF16".
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "models/config.h"

namespace arbor {

enum class DType { F32, F16, BF16 };
const char* dtype_name(DType dtype);
size_t dtype_size(DType dtype);

// A read-only memory mapping of a whole file (RAII).
class MappedFile {
 public:
  explicit MappedFile(const std::filesystem::path& path);  // throws ModelError
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const std::byte* data() const { return data_; }
  size_t size() const { return size_; }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

// "[a, b, c]" — the shape format used in error messages.
std::string format_shape(std::span<const int64_t> shape);

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // points into the mapping; NOT necessarily aligned to the
                                    // element size (read with memcpy / convert_to_f32)
  size_t nbytes = 0;
  std::string file;  // file name, for error messages

  int64_t numel() const;
};

// A parsed and validated safetensors header (see SafetensorsFile).
struct SafetensorsHeader {
  std::map<std::string, TensorView> tensors;       // loadable (F32, F16, BF16)
  std::map<std::string, std::string> unsupported;  // name → dtype as written
};
// Parses the header of a whole safetensors file in memory, validated as SafetensorsFile does;
// the views point into `bytes`. `name` names the file in errors. Throws ModelError.
SafetensorsHeader parse_safetensors(std::span<const std::byte> bytes, const std::string& name);

// One .safetensors file. The header is fully validated on open: dtype a string, shape
// non-negative, offsets inside the data block, size == numel * dtype size (when the dtype's
// size is known), no overlapping tensors. "__metadata__" is ignored.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);  // throws ModelError
  // Loadable tensors (F32, F16, BF16).
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  // Tensors of other dtypes: name → dtype as written in the file ("I64", ...).
  const std::map<std::string, std::string>& unsupported() const { return unsupported_; }
  const std::filesystem::path& path() const { return file_->path(); }

 private:
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
  std::map<std::string, std::string> unsupported_;
};

// All weights of a model folder: model.safetensors, or the shards listed by
// model.safetensors.index.json (weight_map: tensor name → shard file; the index wins when
// both exist). Each shard is mapped once; the index is authoritative: a listed tensor absent
// from its shard is an error, a shard's tensors the index does not list are ignored, and a
// shard name must stay inside the folder (no absolute paths, no "..").
class WeightStore {
 public:
  static WeightStore open(const std::filesystem::path& model_dir);  // throws ModelError

  // True for every tensor of the folder, loadable or not (see unsupported dtypes above).
  bool contains(const std::string& name) const;
  // Throws ModelError "missing tensor NAME in DIR" or "tensor NAME in FILE has shape [a, b],
  // expected [c, d]" (or the unsupported-dtype message). An empty expected_shape means a
  // scalar (shape []), not "any shape": use the overload below for that.
  const TensorView& get(const std::string& name, std::span<const int64_t> expected_shape) const;
  // Same without the shape check.
  const TensorView& get(const std::string& name) const;
  // get() + conversion of f32/f16/bf16 data to fp32.
  std::vector<float> load_f32(const std::string& name,
                              std::span<const int64_t> expected_shape) const;
  std::vector<std::string> names() const;  // sorted; includes unsupported-dtype tensors
  const std::filesystem::path& dir() const { return dir_; }

 private:
  struct Unsupported {
    std::string dtype;
    std::string file;
  };
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
  std::map<std::string, Unsupported> unsupported_;
  std::filesystem::path dir_;
};

// Converts `n` values of `dtype` at `src` (any alignment, little-endian) to fp32, exactly:
// bf16 is the upper half of an f32; f16 keeps subnormals, ±0, ±inf and NaN.
void convert_to_f32(DType dtype, const std::byte* src, size_t n, float* dst);

}  // namespace arbor
