// Safetensors loading: mmap, full header validation, sharded folders, fp32 conversion.
#include "models/safetensors.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <set>
#include <utility>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <nlohmann/json.hpp>

namespace arbor {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

std::string show(const json& value) {
  std::string s = value.dump();
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// Element size of every dtype the safetensors format knows; 0 for sub-byte or unknown ones
// (their size is then not checked).
size_t any_dtype_size(const std::string& name) {
  static const std::pair<const char*, size_t> kSizes[] = {
      {"F64", 8},  {"I64", 8},     {"U64", 8},     {"F32", 4},    {"I32", 4}, {"U32", 4},
      {"F16", 2},  {"BF16", 2},    {"I16", 2},     {"U16", 2},    {"I8", 1},  {"U8", 1},
      {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}, {"F8_E8M0", 1}};
  for (const auto& [n, size] : kSizes) {
    if (name == n) return size;
  }
  return 0;
}

bool loadable_dtype(const std::string& name, DType* out) {
  if (name == "F32")
    *out = DType::F32;
  else if (name == "F16")
    *out = DType::F16;
  else if (name == "BF16")
    *out = DType::BF16;
  else
    return false;
  return true;
}

// A non-negative JSON integer that fits in int64.
bool as_index(const json& v, uint64_t* out) {
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return *out <= uint64_t(INT64_MAX);
  }
  if (v.is_number_integer()) {
    int64_t i = v.get<int64_t>();
    *out = uint64_t(i);
    return i >= 0;
  }
  return false;
}

std::string unsupported_message(const std::string& name, const std::string& file,
                                const std::string& dtype) {
  return "tensor " + name + " in " + file + " has dtype " + dtype +
         "; arbor loads F32, F16 and BF16";
}

inline float half_to_float(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0) {
    // ±0 and subnormals: mant · 2^-24, exact in fp32.
    bits = sign | std::bit_cast<uint32_t>(float(mant) * 0x1p-24f);
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (mant << 13);  // inf, or NaN keeping its payload
  } else {
    bits = sign | ((exp + (127 - 15)) << 23) | (mant << 13);
  }
  return std::bit_cast<float>(bits);
}

constexpr size_t kParallelMin = size_t(1) << 18;
constexpr uint64_t kMaxHeader = 100'000'000;  // the limit of the reference implementation

}  // namespace

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::F16:
      return "F16";
    case DType::BF16:
      return "BF16";
  }
  return "?";
}

size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return 4;
    case DType::F16:
      return 2;
    case DType::BF16:
      return 2;
  }
  return 0;
}

std::string format_shape(std::span<const int64_t> shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(shape[i]);
  }
  return s + "]";
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// ---- MappedFile ----

MappedFile::MappedFile(const fs::path& path) : path_(path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw ModelError("cannot open " + path.string() + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    ::close(fd);
    throw ModelError("cannot stat " + path.string() + ": " + std::strerror(err));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ModelError(path.string() + " is not a regular file");
  }
  size_ = size_t(st.st_size);
  if (size_ > 0) {
    void* p = ::mmap(nullptr, size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw ModelError("cannot mmap " + path.string() + ": " + std::strerror(err));
    }
    data_ = static_cast<const std::byte*>(p);
  }
  ::close(fd);  // the mapping stays valid
}

MappedFile::~MappedFile() {
  if (data_) ::munmap(const_cast<std::byte*>(data_), size_);
}

// ---- SafetensorsFile ----

SafetensorsFile::SafetensorsFile(const fs::path& path) : file_(std::make_unique<MappedFile>(path)) {
  SafetensorsHeader h = parse_safetensors({file_->data(), file_->size()}, path.string());
  tensors_ = std::move(h.tensors);
  unsupported_ = std::move(h.unsupported);
}

SafetensorsHeader parse_safetensors(std::span<const std::byte> bytes, const std::string& fname) {
  SafetensorsHeader out;
  const size_t size = bytes.size();
  const std::byte* base = bytes.data();
  if (size < 8) {
    throw ModelError(fname + " is too short to be a safetensors file (" + std::to_string(size) +
                     " bytes; it must start with an 8-byte header length)");
  }
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint64_t(base[i]);
  if (header_len > size - 8) {
    throw ModelError("header of " + std::to_string(header_len) + " bytes runs past the end of " +
                     fname + " (" + std::to_string(size) + " bytes)");
  }
  if (header_len > kMaxHeader) {
    throw ModelError("header of " + std::to_string(header_len) + " bytes in " + fname +
                     " is larger than the 100 MB safetensors allows");
  }
  const char* hbegin = reinterpret_cast<const char*>(base + 8);
  json header;
  try {
    header = json::parse(hbegin, hbegin + header_len);
  } catch (const json::exception& e) {
    throw ModelError(fname + ": invalid JSON header: " + e.what());
  }
  if (!header.is_object()) {
    throw ModelError(fname + ": the header must be a JSON object, found " + show(header));
  }

  const std::byte* data_block = base + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  struct Range {
    uint64_t begin, end;
    const std::string* name;
  };
  std::vector<Range> ranges;

  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") continue;
    const std::string where = "tensor " + name + " in " + fname;
    if (!entry.is_object()) {
      throw ModelError(where + " must be an object {dtype, shape, data_offsets}, found " +
                       show(entry));
    }
    auto dt = entry.find("dtype");
    if (dt == entry.end() || !dt->is_string()) {
      throw ModelError(where + " has no dtype string" +
                       (dt == entry.end() ? std::string() : ", found " + show(*dt)));
    }
    const std::string dtype_str = dt->get<std::string>();

    auto sh = entry.find("shape");
    if (sh == entry.end() || !sh->is_array()) {
      throw ModelError(where + " has no shape list" +
                       (sh == entry.end() ? std::string() : ", found " + show(*sh)));
    }
    std::vector<int64_t> shape;
    uint64_t numel = 1;
    bool overflow = false;
    for (const json& d : *sh) {
      if (d.is_number_integer() && !d.is_number_unsigned() && d.get<int64_t>() < 0) {
        throw ModelError(where + " has a negative dimension in shape " + show(*sh));
      }
      uint64_t u = 0;
      if (!as_index(d, &u)) {
        throw ModelError(where + " has a shape that is not a list of integers: " + show(*sh));
      }
      shape.push_back(int64_t(u));
      overflow = overflow || __builtin_mul_overflow(numel, u, &numel);
    }

    auto off = entry.find("data_offsets");
    uint64_t begin = 0, end = 0;
    if (off == entry.end() || !off->is_array() || off->size() != 2 ||
        !as_index((*off)[0], &begin) || !as_index((*off)[1], &end) || begin > end) {
      throw ModelError(where + " needs data_offsets [begin, end] with 0 <= begin <= end" +
                       (off == entry.end() ? std::string() : ", found " + show(*off)));
    }
    if (end > data_size) {
      throw ModelError(where + " has data_offsets [" + std::to_string(begin) + ", " +
                       std::to_string(end) + "] past the end of the data block (" +
                       std::to_string(data_size) + " bytes): the file is truncated");
    }
    const uint64_t nbytes = end - begin;
    if (const size_t esize = any_dtype_size(dtype_str); esize > 0) {
      uint64_t want = 0;
      if (overflow || __builtin_mul_overflow(numel, uint64_t(esize), &want) || want != nbytes) {
        throw ModelError(where + " has " + std::to_string(nbytes) + " bytes of data, but shape " +
                         format_shape(shape) + " of " + dtype_str + " needs " +
                         (overflow ? std::string("more than 2^64") : std::to_string(want)) +
                         " bytes");
      }
    }

    DType dtype;
    if (loadable_dtype(dtype_str, &dtype)) {
      TensorView v;
      v.name = name;
      v.dtype = dtype;
      v.shape = std::move(shape);
      v.data = data_block + begin;
      v.nbytes = size_t(nbytes);
      v.file = fname;
      auto it = out.tensors.emplace(name, std::move(v)).first;
      ranges.push_back({begin, end, &it->first});
    } else {
      auto it = out.unsupported.emplace(name, dtype_str).first;
      ranges.push_back({begin, end, &it->first});
    }
  }

  // No two non-empty tensors may share a byte.
  std::sort(ranges.begin(), ranges.end(), [](const Range& a, const Range& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  const Range* prev = nullptr;
  for (const Range& r : ranges) {
    if (r.begin == r.end) continue;
    if (prev && r.begin < prev->end) {
      throw ModelError("tensors " + *prev->name + " and " + *r.name + " in " + fname +
                       " overlap (data_offsets [" + std::to_string(prev->begin) + ", " +
                       std::to_string(prev->end) + "] and [" + std::to_string(r.begin) + ", " +
                       std::to_string(r.end) + "])");
    }
    if (!prev || r.end > prev->end) prev = &r;
  }
  return out;
}

// ---- WeightStore ----

WeightStore WeightStore::open(const fs::path& model_dir) {
  WeightStore ws;
  ws.dir_ = model_dir;
  const fs::path index_path = model_dir / "model.safetensors.index.json";
  const fs::path single_path = model_dir / "model.safetensors";
  std::error_code ec;

  if (fs::exists(index_path, ec)) {
    const std::string iname = index_path.string();
    const json index = read_json_file(index_path);
    const json* weight_map = nullptr;
    if (index.is_object()) {
      auto it = index.find("weight_map");
      if (it != index.end() && it->is_object()) weight_map = &*it;
    }
    if (!weight_map) throw ModelError(iname + " has no \"weight_map\" object");

    std::map<std::string, const SafetensorsFile*> shards;
    for (const auto& [name, shard_json] : weight_map->items()) {
      if (!shard_json.is_string()) {
        throw ModelError(iname + ": weight_map entry for " + name + " must be a file name, found " +
                         show(shard_json));
      }
      const std::string shard = shard_json.get<std::string>();
      auto sit = shards.find(shard);
      if (sit == shards.end()) {
        const fs::path rel(shard);
        bool escapes = shard.empty() || rel.is_absolute();
        for (const auto& part : rel) escapes = escapes || part == "..";
        if (escapes) {
          throw ModelError(iname + " maps tensor " + name + " to shard '" + shard +
                           "', which is not a file name inside " + model_dir.string());
        }
        const fs::path shard_path = model_dir / rel;
        if (!fs::exists(shard_path, ec)) {
          throw ModelError(iname + " maps tensor " + name + " to shard " + shard + ", but " +
                           shard_path.string() + " does not exist");
        }
        ws.files_.push_back(std::make_unique<SafetensorsFile>(shard_path));
        sit = shards.emplace(shard, ws.files_.back().get()).first;
      }
      const SafetensorsFile& file = *sit->second;
      if (auto t = file.tensors().find(name); t != file.tensors().end()) {
        ws.index_[name] = &t->second;
      } else if (auto u = file.unsupported().find(name); u != file.unsupported().end()) {
        ws.unsupported_[name] = {u->second, file.path().string()};
      } else {
        throw ModelError(iname + " maps tensor " + name + " to shard " + shard + ", but " +
                         file.path().string() + " has no such tensor");
      }
    }
    return ws;
  }

  if (fs::exists(single_path, ec)) {
    ws.files_.push_back(std::make_unique<SafetensorsFile>(single_path));
    const SafetensorsFile& file = *ws.files_.back();
    for (const auto& [name, view] : file.tensors()) ws.index_[name] = &view;
    for (const auto& [name, dtype] : file.unsupported()) {
      ws.unsupported_[name] = {dtype, file.path().string()};
    }
    return ws;
  }
  throw ModelError("no model.safetensors or model.safetensors.index.json in " + model_dir.string());
}

bool WeightStore::contains(const std::string& name) const {
  return index_.count(name) > 0 || unsupported_.count(name) > 0;
}

const TensorView& WeightStore::get(const std::string& name) const {
  if (auto it = index_.find(name); it != index_.end()) return *it->second;
  if (auto u = unsupported_.find(name); u != unsupported_.end()) {
    throw ModelError(unsupported_message(name, u->second.file, u->second.dtype));
  }
  throw ModelError("missing tensor " + name + " in " + dir_.string());
}

const TensorView& WeightStore::get(const std::string& name,
                                   std::span<const int64_t> expected_shape) const {
  const TensorView& v = get(name);
  if (!std::equal(v.shape.begin(), v.shape.end(), expected_shape.begin(), expected_shape.end())) {
    throw ModelError("tensor " + name + " in " + v.file + " has shape " + format_shape(v.shape) +
                     ", expected " + format_shape(expected_shape));
  }
  return v;
}

std::vector<float> WeightStore::load_f32(const std::string& name,
                                         std::span<const int64_t> expected_shape) const {
  const TensorView& v = get(name, expected_shape);
  std::vector<float> out(size_t(v.numel()));
  convert_to_f32(v.dtype, v.data, out.size(), out.data());
  return out;
}

std::vector<std::string> WeightStore::names() const {
  std::vector<std::string> out;
  out.reserve(index_.size() + unsupported_.size());
  for (const auto& [name, view] : index_) out.push_back(name);
  for (const auto& [name, u] : unsupported_) out.push_back(name);
  std::sort(out.begin(), out.end());
  return out;
}

// ---- conversion ----

void convert_to_f32(DType dtype, const std::byte* src, size_t n, float* dst) {
  if (n == 0) return;
  const int64_t count = int64_t(n);
  switch (dtype) {
    case DType::F32:
      std::memcpy(dst, src, n * sizeof(float));
      return;
    case DType::BF16:
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = std::bit_cast<float>(uint32_t(h) << 16);
      }
      return;
    case DType::F16:
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
      for (int64_t i = 0; i < count; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);
        dst[i] = half_to_float(h);
      }
      return;
  }
}

}  // namespace arbor
