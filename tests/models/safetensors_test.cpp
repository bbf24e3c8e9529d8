// Safetensors loader: round trips of f32/f16/bf16, sharded folders, every malformed-header
// case, and a cheap fuzz loop (truncations and flipped header bytes never crash).
#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "models/safetensors.h"
#include "tests/test_util.h"

namespace arbor {
namespace {

using nlohmann::json;
using test::TempDir;
using test::write_file;
namespace fs = std::filesystem;

// ---- a tiny safetensors writer ----

// 8-byte little-endian length + header + data, exactly as given (no padding).
std::string raw_safetensors(const std::string& header, const std::string& data,
                            uint64_t header_len) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[size_t(i)] = char((header_len >> (8 * i)) & 0xff);
  return out + header + data;
}
std::string raw_safetensors(const std::string& header, const std::string& data = "") {
  return raw_safetensors(header, data, header.size());
}

struct Spec {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::string bytes;
};

// Lays tensors out back to back; pads the header with spaces to `align` bytes (as the Python
// writer does with 8; 1 means no padding, so data may be misaligned).
std::string make_safetensors(const std::vector<Spec>& specs, size_t align = 8) {
  json header = json::object();
  header["__metadata__"] = {{"format", "pt"}};
  std::string data;
  for (const Spec& s : specs) {
    header[s.name] = {{"dtype", s.dtype},
                      {"shape", s.shape},
                      {"data_offsets", {data.size(), data.size() + s.bytes.size()}}};
    data += s.bytes;
  }
  std::string h = header.dump();
  while (h.size() % align != 0) h += ' ';
  return raw_safetensors(h, data);
}

template <typename T>
std::string bytes_of(const std::vector<T>& values) {
  std::string s(values.size() * sizeof(T), '\0');
  if (!values.empty()) std::memcpy(s.data(), values.data(), s.size());
  return s;
}

std::string f32_bytes(const std::vector<float>& v) {
  return bytes_of(v);
}
std::string u16_bytes(const std::vector<uint16_t>& v) {
  return bytes_of(v);
}

uint32_t bits(float f) {
  return std::bit_cast<uint32_t>(f);
}

// Opens `contents` as dir/model.safetensors through the WeightStore.
WeightStore store_of(const TempDir& dir, const std::string& contents) {
  write_file(dir.path() / "model.safetensors", contents);
  return WeightStore::open(dir.path());
}

SafetensorsFile file_of(const TempDir& dir, const std::string& contents,
                        const std::string& name = "model.safetensors") {
  write_file(dir.path() / name, contents);
  return SafetensorsFile(dir.path() / name);
}

using Catch::Contains;

// ---- round trips ----

TEST_CASE("safetensors: f32, f16 and bf16 round trip exactly", "[models][safetensors]") {
  TempDir dir;
  const std::vector<float> f32 = {1.0f, -2.5f, 0.0f, -0.0f, 3.14159274f, 1e-45f, 6.5e30f};
  // f16 bits and their exact fp32 values.
  const std::vector<uint16_t> f16 = {0x0000, 0x8000, 0x3c00, 0xc000, 0x0001, 0x03ff,
                                     0x0400, 0x7bff, 0x7c00, 0xfc00, 0x3555, 0x8001};
  const std::vector<float> f16_want = {0.0f,
                                       -0.0f,
                                       1.0f,
                                       -2.0f,
                                       0x1p-24f,
                                       1023 * 0x1p-24f,
                                       0x1p-14f,
                                       65504.0f,
                                       std::numeric_limits<float>::infinity(),
                                       -std::numeric_limits<float>::infinity(),
                                       0.333251953125f,
                                       -0x1p-24f};
  const std::vector<uint16_t> bf16 = {0x3f80, 0xc040, 0x8000, 0x7f80, 0x0001, 0x4049};
  const std::vector<float> bf16_want = {1.0f,
                                        -3.0f,
                                        -0.0f,
                                        std::numeric_limits<float>::infinity(),
                                        std::bit_cast<float>(0x00010000u),
                                        3.140625f};
  WeightStore ws = store_of(dir, make_safetensors({
                                     {"a.f32", "F32", {7}, f32_bytes(f32)},
                                     {"b.f16", "F16", {3, 4}, u16_bytes(f16)},
                                     {"c.bf16", "BF16", {2, 3}, u16_bytes(bf16)},
                                     {"d.nan", "F16", {2}, u16_bytes({0x7e00, 0xfd01})},
                                 }));
  REQUIRE(ws.names() == std::vector<std::string>{"a.f32", "b.f16", "c.bf16", "d.nan"});

  const int64_t s7[] = {7}, s34[] = {3, 4}, s23[] = {2, 3}, s2[] = {2};
  auto a = ws.load_f32("a.f32", s7);
  REQUIRE(a.size() == f32.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(bits(a[i]) == bits(f32[i]));

  auto b = ws.load_f32("b.f16", s34);
  REQUIRE(b.size() == f16_want.size());
  for (size_t i = 0; i < b.size(); ++i) {
    INFO("f16 bits " << f16[i]);
    CHECK(bits(b[i]) == bits(f16_want[i]));  // bitwise: checks the sign of zero too
  }
  CHECK(std::signbit(b[1]));

  auto c = ws.load_f32("c.bf16", s23);
  for (size_t i = 0; i < c.size(); ++i) CHECK(bits(c[i]) == bits(bf16_want[i]));

  auto d = ws.load_f32("d.nan", s2);
  CHECK(std::isnan(d[0]));
  CHECK(std::isnan(d[1]));
  CHECK(std::signbit(d[1]));

  const TensorView& v = ws.get("b.f16", s34);
  CHECK(v.dtype == DType::F16);
  CHECK(v.numel() == 12);
  CHECK(v.nbytes == 24);
  CHECK_THAT(v.file, Contains("model.safetensors"));
}

TEST_CASE("safetensors: f16 conversion matches the compiler on all 65536 values",
          "[models][safetensors]") {
#if defined(__FLT16_MAX__)
  std::vector<uint16_t> all(65536);
  for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
  std::vector<float> out(all.size());
  convert_to_f32(DType::F16, reinterpret_cast<const std::byte*>(all.data()), all.size(),
                 out.data());
  for (size_t i = 0; i < all.size(); ++i) {
    const float want = float(std::bit_cast<_Float16>(all[i]));
    if (std::isnan(want)) {
      REQUIRE(std::isnan(out[i]));
    } else {
      INFO("f16 bits " << i);
      REQUIRE(bits(out[i]) == bits(want));
    }
  }
#else
  SUCCEED("no _Float16 in this compiler");
#endif
}

TEST_CASE("safetensors: unaligned data, scalars and empty tensors load", "[models][safetensors]") {
  TempDir dir;
  // No header padding: the data block starts at an odd address inside the mapping.
  std::string contents;
  size_t pad = 0;
  do {
    std::vector<Spec> specs = {{"s", "F32", {}, f32_bytes({42.0f})},
                               {"e", "BF16", {0, 4}, ""},
                               {"w", "F32", {2, 2}, f32_bytes({1, 2, 3, 4})}};
    specs.insert(specs.begin(), {std::string(pad + 1, 'x'), "F16", {1}, u16_bytes({0x3c00})});
    contents = make_safetensors(specs, 1);
    ++pad;
  } while ((contents.size() - 16) % 4 == 0);  // w (the last 16 bytes) is not 4-aligned
  WeightStore ws = store_of(dir, contents);
  const int64_t scalar[1] = {0};
  CHECK(ws.load_f32("s", std::span<const int64_t>(scalar, 0)) == std::vector<float>{42.0f});
  const int64_t e_shape[] = {0, 4};
  CHECK(ws.load_f32("e", e_shape).empty());
  const int64_t w_shape[] = {2, 2};
  CHECK(ws.load_f32("w", w_shape) == std::vector<float>{1, 2, 3, 4});
  CHECK(ws.get("w").shape == std::vector<int64_t>{2, 2});
}

TEST_CASE("safetensors: large bf16 tensor converts in parallel", "[models][safetensors]") {
  std::vector<uint16_t> v(1 << 19);
  for (size_t i = 0; i < v.size(); ++i) v[i] = uint16_t(0x3f80 + (i % 128));
  std::vector<float> out(v.size());
  convert_to_f32(DType::BF16, reinterpret_cast<const std::byte*>(v.data()), v.size(), out.data());
  for (size_t i = 0; i < v.size(); i += 4099) {
    REQUIRE(bits(out[i]) == uint32_t(v[i]) << 16);
  }
  CHECK(bits(out.back()) == uint32_t(v.back()) << 16);
}

TEST_CASE("safetensors: get checks the name and the shape", "[models][safetensors]") {
  TempDir dir;
  WeightStore ws =
      store_of(dir, make_safetensors({{"w", "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, 6})}}));
  CHECK(ws.contains("w"));
  CHECK_FALSE(ws.contains("nope"));
  const int64_t good[] = {2, 3}, bad[] = {3, 2}, bad_rank[] = {6};
  CHECK(ws.get("w", good).numel() == 6);
  REQUIRE_THROWS_AS(ws.get("w", bad), ModelError);
  REQUIRE_THROWS_WITH(ws.get("w", bad), Contains("tensor w in ") && Contains("model.safetensors") &&
                                            Contains("has shape [2, 3], expected [3, 2]"));
  REQUIRE_THROWS_WITH(ws.load_f32("w", bad_rank), Contains("expected [6]"));
  REQUIRE_THROWS_AS(ws.get("nope", good), ModelError);
  REQUIRE_THROWS_WITH(ws.get("nope", good),
                      Contains("missing tensor nope in " + dir.path().string()));
}

TEST_CASE("safetensors: other dtypes open but cannot be loaded", "[models][safetensors]") {
  TempDir dir;
  WeightStore ws = store_of(dir, make_safetensors({
                                     {"ids", "I64", {3}, bytes_of<int64_t>({1, 2, 3})},
                                     {"q", "F8_E4M3", {4}, std::string(4, '\1')},
                                     {"w", "F32", {1}, f32_bytes({1.0f})},
                                 }));
  CHECK(ws.contains("ids"));
  CHECK(ws.names() == std::vector<std::string>{"ids", "q", "w"});
  const int64_t s3[] = {3};
  REQUIRE_THROWS_AS(ws.get("ids", s3), ModelError);
  REQUIRE_THROWS_WITH(ws.get("ids", s3),
                      Contains("tensor ids in ") && Contains("model.safetensors") &&
                          Contains("has dtype I64; arbor loads F32, F16 and BF16"));
  REQUIRE_THROWS_WITH(ws.get("q"), Contains("dtype F8_E4M3"));

  // Their sizes are still checked when the dtype's element size is known.
  TempDir dir2;
  REQUIRE_THROWS_WITH(store_of(dir2, make_safetensors({{"ids", "I64", {3}, std::string(12, 'x')}})),
                      Contains("tensor ids") && Contains("needs 24 bytes"));
  // An unknown dtype string is tolerated until asked for.
  TempDir dir3;
  WeightStore ws3 = store_of(dir3, make_safetensors({{"odd", "Q4_K", {8}, std::string(5, 'x')}}));
  REQUIRE_THROWS_WITH(ws3.get("odd"), Contains("has dtype Q4_K"));
}

// ---- sharded folders ----

void write_two_shards(const TempDir& dir) {
  write_file(dir.path() / "model-00001-of-00002.safetensors",
             make_safetensors({{"a", "F32", {2}, f32_bytes({1, 2})},
                               {"b", "BF16", {1}, u16_bytes({0x4000})},
                               {"extra", "F32", {1}, f32_bytes({9})}}));
  write_file(dir.path() / "model-00002-of-00002.safetensors",
             make_safetensors({{"c", "F16", {2}, u16_bytes({0x3c00, 0xbc00})}}));
}

std::string index_json(const json& weight_map) {
  return json{{"metadata", {{"total_size", 18}}}, {"weight_map", weight_map}}.dump(2);
}

TEST_CASE("safetensors: sharded folder with an index", "[models][safetensors]") {
  TempDir dir;
  write_two_shards(dir);
  write_file(dir.path() / "model.safetensors.index.json",
             index_json({{"a", "model-00001-of-00002.safetensors"},
                         {"b", "model-00001-of-00002.safetensors"},
                         {"c", "model-00002-of-00002.safetensors"}}));
  WeightStore ws = WeightStore::open(dir.path());
  CHECK(ws.names() == std::vector<std::string>{"a", "b", "c"});  // "extra" is not indexed
  const int64_t s2[] = {2}, s1[] = {1};
  CHECK(ws.load_f32("a", s2) == std::vector<float>{1, 2});
  CHECK(ws.load_f32("b", s1) == std::vector<float>{2});
  CHECK(ws.load_f32("c", s2) == std::vector<float>{1, -1});
  CHECK_THAT(ws.get("c").file, Contains("model-00002-of-00002.safetensors"));
  REQUIRE_THROWS_WITH(ws.get("c", s1), Contains("model-00002-of-00002.safetensors") &&
                                           Contains("has shape [2], expected [1]"));
  // The store moves without invalidating its views.
  WeightStore moved = std::move(ws);
  CHECK(moved.load_f32("a", s2) == std::vector<float>{1, 2});
}

TEST_CASE("safetensors: sharded folder errors", "[models][safetensors]") {
  TempDir dir;
  write_two_shards(dir);
  const fs::path index = dir.path() / "model.safetensors.index.json";

  SECTION("missing shard file") {
    write_file(index, index_json({{"a", "model-00001-of-00002.safetensors"},
                                  {"z", "model-00003-of-00003.safetensors"}}));
    REQUIRE_THROWS_AS(WeightStore::open(dir.path()), ModelError);
    REQUIRE_THROWS_WITH(WeightStore::open(dir.path()),
                        Contains("model.safetensors.index.json") &&
                            Contains("model-00003-of-00003.safetensors") &&
                            Contains("does not exist"));
  }
  SECTION("tensor listed but absent from its shard") {
    write_file(index, index_json({{"a", "model-00001-of-00002.safetensors"},
                                  {"c", "model-00001-of-00002.safetensors"}}));
    REQUIRE_THROWS_WITH(WeightStore::open(dir.path()),
                        Contains("model.safetensors.index.json maps tensor c") &&
                            Contains("model-00001-of-00002.safetensors has no such tensor"));
  }
  SECTION("shard outside the folder") {
    write_file(index, index_json({{"a", "../model-00001-of-00002.safetensors"}}));
    REQUIRE_THROWS_WITH(WeightStore::open(dir.path()), Contains("not a file name inside"));
    write_file(index, index_json({{"a", "/etc/passwd"}}));
    REQUIRE_THROWS_WITH(WeightStore::open(dir.path()), Contains("not a file name inside"));
  }
  SECTION("index is not valid JSON") {
    write_file(index, "{\"weight_map\": {\"a\": ");
    REQUIRE_THROWS_AS(WeightStore::open(dir.path()), ModelError);
    REQUIRE_THROWS_WITH(WeightStore::open(dir.path()),
                        Contains("model.safetensors.index.json") && Contains("invalid JSON"));
  }
  SECTION("index without weight_map, or with a non-string shard") {
    write_file(index, "{\"metadata\": {}}");
    REQUIRE_THROWS_WITH(WeightStore::open(dir.path()), Contains("no \"weight_map\""));
    write_file(index, index_json({{"a", 3}}));
    REQUIRE_THROWS_WITH(WeightStore::open(dir.path()),
                        Contains("weight_map entry for a must be a file name"));
  }
  SECTION("a broken shard names the shard") {
    write_file(dir.path() / "model-00002-of-00002.safetensors", "1234");
    write_file(index, index_json({{"c", "model-00002-of-00002.safetensors"}}));
    REQUIRE_THROWS_WITH(WeightStore::open(dir.path()),
                        Contains("model-00002-of-00002.safetensors is too short"));
  }
}

TEST_CASE("safetensors: folder without weights", "[models][safetensors]") {
  TempDir dir;
  REQUIRE_THROWS_AS(WeightStore::open(dir.path()), ModelError);
  REQUIRE_THROWS_WITH(
      WeightStore::open(dir.path()),
      Contains("no model.safetensors or model.safetensors.index.json in " + dir.path().string()));
  REQUIRE_THROWS_WITH(WeightStore::open(dir.path() / "nowhere"), Contains("no model.safetensors"));
}

// ---- malformed files ----

TEST_CASE("safetensors: malformed files give ModelError naming the file", "[models][safetensors]") {
  TempDir dir;
  auto fails_with = [&](const std::string& contents, const std::string& words) {
    INFO("expecting: " << words);
    write_file(dir.path() / "bad.safetensors", contents);
    const fs::path p = dir.path() / "bad.safetensors";
    REQUIRE_THROWS_AS(SafetensorsFile(p), ModelError);
    REQUIRE_THROWS_WITH(SafetensorsFile(p), Contains("bad.safetensors") && Contains(words));
  };
  const std::string w4 = f32_bytes({1, 2, 3, 4});

  SECTION("shorter than 8 bytes") {
    fails_with("", "too short");
    fails_with("\x10\0\0", "too short");
  }
  SECTION("header length beyond the file") {
    const std::string f = raw_safetensors("{}", "", 1000);
    fails_with(f, "header of 1000 bytes runs past the end of");
    fails_with(f, "(10 bytes)");
    fails_with(raw_safetensors("{}", "", ~uint64_t(0)), "runs past the end");
  }
  SECTION("invalid JSON") {
    fails_with(raw_safetensors("{\"a\": {\"dtype\": "), "invalid JSON header");
    fails_with(raw_safetensors(std::string("{\0}", 3)), "invalid JSON header");
    fails_with(raw_safetensors("[1, 2]"), "must be a JSON object");
  }
  SECTION("bad entries") {
    fails_with(raw_safetensors(R"({"a": 5})"), "tensor a in");
    fails_with(raw_safetensors(R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", w4),
               "has no dtype");
    fails_with(raw_safetensors(R"({"a": {"dtype": 1, "shape": [1], "data_offsets": [0, 4]}})", w4),
               "has no dtype");
    fails_with(raw_safetensors(R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", w4),
               "has no shape");
    fails_with(raw_safetensors(R"({"a": {"dtype": "F32", "shape": [1]}})", w4), "data_offsets");
    fails_with(
        raw_safetensors(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}})", w4),
        "0 <= begin <= end");
    fails_with(raw_safetensors(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0]}})", w4),
               "data_offsets");
    fails_with(
        raw_safetensors(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", w4),
        "data_offsets");
  }
  SECTION("negative or non-integer dims") {
    fails_with(raw_safetensors(
                   R"({"a": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}})", w4),
               "tensor a in");
    fails_with(raw_safetensors(
                   R"({"a": {"dtype": "F32", "shape": [-1, 4], "data_offsets": [0, 16]}})", w4),
               "negative dimension");
    fails_with(
        raw_safetensors(R"({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 16]}})", w4),
        "not a list of integers");
    fails_with(
        raw_safetensors(R"({"a": {"dtype": "F32", "shape": ["4"], "data_offsets": [0, 16]}})", w4),
        "not a list of integers");
  }
  SECTION("data offsets past the data block") {
    fails_with(
        raw_safetensors(R"({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}})", w4),
        "truncated");
    fails_with(
        raw_safetensors(R"({"a": {"dtype": "F32", "shape": [8], "data_offsets": [0, 32]}})", w4),
        "tensor a in");
    const std::string good = make_safetensors({{"a", "F32", {4}, w4}});
    fails_with(good.substr(0, good.size() - 1), "truncated");
  }
  SECTION("size does not match shape x dtype") {
    fails_with(
        raw_safetensors(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}})", w4),
        "has 16 bytes of data, but shape [3] of F32 needs 12 bytes");
    fails_with(
        raw_safetensors(R"({"a": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 16]}})", w4),
        "needs 8 bytes");
    // numel overflows 64 bits
    fails_with(raw_safetensors(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296, 16],
                                         "data_offsets": [0, 16]}})",
                               w4),
               "more than 2^64");
  }
  SECTION("overlapping tensors") {
    fails_with(raw_safetensors(R"({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 12]},
                                   "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})",
                               w4),
               "tensors a and b in");
    fails_with(raw_safetensors(R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
                                   "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                               w4),
               "overlap");
    // an I64 tensor overlapping an F32 one counts too
    fails_with(raw_safetensors(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                   "b": {"dtype": "I64", "shape": [1], "data_offsets": [4, 12]}})",
                               w4),
               "overlap");
  }
}

TEST_CASE("safetensors: edge cases that are fine", "[models][safetensors]") {
  TempDir dir;
  // Empty header object, and metadata of any shape.
  CHECK(file_of(dir, raw_safetensors("{}")).tensors().empty());
  CHECK(file_of(dir, raw_safetensors(R"({"__metadata__": {"x": [1, 2]}})")).tensors().empty());
  // Zero-size tensors may share an offset; unused bytes between tensors are tolerated.
  auto f = file_of(dir, raw_safetensors(
                            R"({"e1": {"dtype": "F32", "shape": [0], "data_offsets": [4, 4]},
                                "e2": {"dtype": "F16", "shape": [0, 3], "data_offsets": [4, 4]},
                                "a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 12]}})",
                            f32_bytes({1, 2, 3, 4})));
  CHECK(f.tensors().size() == 3);
  CHECK(f.tensors().at("a").nbytes == 4);
  // A directory is not a file.
  fs::create_directories(dir.path() / "d.safetensors");
  REQUIRE_THROWS_WITH(SafetensorsFile(dir.path() / "d.safetensors"),
                      Contains("d.safetensors is not a regular file"));
  REQUIRE_THROWS_WITH(SafetensorsFile(dir.path() / "absent.safetensors"),
                      Contains("cannot open") && Contains("absent.safetensors"));
}

// ---- the demo model shipped in the repository (written by Python safetensors) ----

TEST_CASE("safetensors: the demo model folder loads", "[models][safetensors][demo]") {
  const fs::path dir = ARBOR_DEMO_MODEL_DIR;
  if (!fs::exists(dir / "model.safetensors")) {
    WARN("no demo model at " << dir.string() << "; skipped");
    return;
  }
  const LlamaConfig c = load_llama_config(dir);
  const WeightStore ws = WeightStore::open(dir);
  const int64_t h = c.hidden_size, kv = int64_t(c.num_kv_heads) * c.head_dim;
  const int64_t embed[] = {c.vocab_size, h}, norm[] = {h}, k_proj[] = {kv, h};
  CHECK(ws.load_f32("model.embed_tokens.weight", embed).size() == size_t(c.vocab_size * h));
  CHECK(ws.load_f32("model.norm.weight", norm).size() == size_t(h));
  CHECK(ws.get("model.layers.0.self_attn.k_proj.weight", k_proj).numel() == kv * h);
  CHECK(ws.contains("lm_head.weight") == !c.tie_word_embeddings);
  size_t total = 0, nonfinite = 0;
  for (const std::string& name : ws.names()) {
    const TensorView& v = ws.get(name);
    std::vector<float> out(size_t(v.numel()));
    convert_to_f32(v.dtype, v.data, out.size(), out.data());
    for (float x : out) nonfinite += std::isfinite(x) ? 0 : 1;
    total += out.size();
  }
  CHECK(total > 0);
  CHECK(nonfinite == 0);
}

// ---- fuzz ----

// Opens `contents`; returns true if it opened. Any exception but ModelError fails the test;
// every tensor of a file that opens is converted (so ASan sees every read).
bool open_and_touch(const TempDir& dir, const std::string& contents) {
  const fs::path p = dir.path() / "fuzz.safetensors";
  write_file(p, contents);
  try {
    SafetensorsFile f(p);
    for (const auto& [name, v] : f.tensors()) {
      std::vector<float> out(size_t(v.numel()));
      REQUIRE(v.nbytes == out.size() * dtype_size(v.dtype));
      convert_to_f32(v.dtype, v.data, out.size(), out.data());
    }
    return true;
  } catch (const ModelError&) {
    return false;
  }
}

TEST_CASE("safetensors: truncations and flipped header bytes never crash",
          "[models][safetensors][fuzz]") {
  TempDir dir;
  const std::string good = make_safetensors({
      {"a", "F32", {2, 3}, f32_bytes({1, 2, 3, 4, 5, 6})},
      {"b", "F16", {4}, u16_bytes({1, 2, 3, 4})},
      {"c", "BF16", {1, 1, 2}, u16_bytes({5, 6})},
      {"i", "I64", {1}, bytes_of<int64_t>({7})},
  });
  REQUIRE(open_and_touch(dir, good));

  // Every cut point fails with ModelError (data are laid out to the last byte).
  for (size_t cut = 0; cut < good.size(); ++cut) {
    INFO("cut at " << cut);
    const fs::path p = dir.path() / "fuzz.safetensors";
    write_file(p, good.substr(0, cut));
    REQUIRE_THROWS_AS(SafetensorsFile(p), ModelError);
  }

  // Random byte changes in the length and header: open or ModelError, nothing else.
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; --i) header_len = (header_len << 8) | uint8_t(good[size_t(i)]);
  std::mt19937 rng(12345);
  std::uniform_int_distribution<size_t> pos(0, size_t(8 + header_len - 1));
  const std::string alphabet = "0123456789-[]{},:\" .eE+FBI";
  int opened = 0;
  for (int iter = 0; iter < 1000; ++iter) {
    std::string mutated = good;
    const int flips = 1 + int(rng() % 3);
    for (int k = 0; k < flips; ++k) {
      const size_t at = pos(rng);
      if (rng() % 2) {
        mutated[at] = char(rng() & 0xff);
      } else {
        mutated[at] = alphabet[rng() % alphabet.size()];
      }
    }
    INFO("iteration " << iter);
    opened += open_and_touch(dir, mutated) ? 1 : 0;
  }
  CHECK(opened < 1000);  // most mutations are caught
}

}  // namespace
}  // namespace arbor
