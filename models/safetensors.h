// Memory-mapped safetensors files, single or sharded (model.safetensors.index.json).
//
// Format: 8-byte little-endian header length N, N bytes of JSON
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {...}}, then the data
// block; offsets are relative to the start of the data block. Every malformed input gets a
// ModelError naming the file (and tensor) — never a crash or an out-of-bounds read.
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

struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  const std::byte* data = nullptr;  // points into the mapping
  size_t nbytes = 0;
  std::string file;  // file name, for error messages

  int64_t numel() const;
};

// One .safetensors file. The header is fully validated on open: dtype known, offsets
// inside the data block, size == numel * dtype size, no overlapping tensors.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::filesystem::path& path);  // throws ModelError
  const std::map<std::string, TensorView>& tensors() const { return tensors_; }
  const std::filesystem::path& path() const { return file_->path(); }

 private:
  std::unique_ptr<MappedFile> file_;
  std::map<std::string, TensorView> tensors_;
};

// All weights of a model folder: model.safetensors, or the shards listed by
// model.safetensors.index.json (weight_map: tensor name → shard file).
class WeightStore {
 public:
  static WeightStore open(const std::filesystem::path& model_dir);  // throws ModelError

  bool contains(const std::string& name) const;
  // Throws ModelError "missing tensor NAME in DIR" or "tensor NAME in FILE has shape [a, b],
  // expected [c, d]".
  const TensorView& get(const std::string& name, std::span<const int64_t> expected_shape) const;
  // get() + conversion of f32/f16/bf16 data to fp32.
  std::vector<float> load_f32(const std::string& name,
                              std::span<const int64_t> expected_shape) const;
  std::vector<std::string> names() const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, const TensorView*> index_;
  std::filesystem::path dir_;
};

// Converts `n` values of `dtype` at `src` to fp32.
void convert_to_f32(DType dtype, const std::byte* src, size_t n, float* dst);

}  // namespace arbor
