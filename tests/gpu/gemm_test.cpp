// cuBLASLt GEMM (kernels/cuda/gemm.h) against cpu::matmul on bf16-rounded inputs.
//
// Tolerances. Products of two bf16 values are exact in fp32, so the GPU and the CPU
// reference differ only in how the k products are summed in fp32 (tile order, split-k),
// plus the final bf16 rounding for bf16 output. With S[i][j] = Σ_k |x[i][k]|·|w[j][k]|:
//   fp32 out: |err| <= 2^-14 · S. Each fp32 addition errs by at most 2^-24 of the partial
//             sum (<= S); k of them as a random walk give ~√k · 2^-24 · S (2^-18 S at
//             k = 4096), so 2^-14 is a ≥ 16× margin, and it is still ≈ 1/300 of a typical
//             output (S ≈ k/4, |out| ≈ √k/3 for inputs uniform in [-1, 1]), far below any
//             indexing error.
//   bf16 out: additionally the output rounding, at most u = 2^-8 of |ref| (bf16 keeps 8
//             significant bits); allowed 2u = 2^-7 |ref|.
// And globally ‖out − ref‖ / ‖ref‖ <= 1e-4 (fp32 out; fp32 accumulation lands near 1e-6)
// and <= 4e-3 (bf16 out; rounding alone gives ≈ 1.1e-3).
#include <catch2/catch.hpp>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "kernels/cpu/ops.h"
#include "kernels/cuda/gemm.h"
#include "kernels/cuda/gemv.h"
#include "tests/gpu/bf16_check.h"
#include "tests/test_util.h"

using arbor::cuda::bf16;
using arbor::cuda::DeviceArray;
using arbor::cuda::Gemm;
using arbor::cuda::Stream;
using arbor::test::random_floats;
using namespace arbor::test::gpu;

namespace {

struct Problem {
  int m, n, k;
  std::vector<float> x, w;      // bf16-rounded
  std::vector<float> ref, abs;  // cpu::matmul of x·wᵀ and of |x|·|w|ᵀ
};

Problem make_problem(int m, int n, int k, uint64_t seed) {
  Problem p{m, n, k, {}, {}, {}, {}};
  p.x = bf16_rounded(random_floats(size_t(m) * k, seed));
  p.w = bf16_rounded(random_floats(size_t(n) * k, seed + 1));
  p.ref.resize(size_t(m) * n);
  p.abs.resize(size_t(m) * n);
  arbor::cpu::matmul(p.x.data(), p.w.data(), m, n, k, p.ref.data());
  std::vector<float> ax(p.x), aw(p.w);
  for (auto& v : ax) v = std::fabs(v);
  for (auto& v : aw) v = std::fabs(v);
  arbor::cpu::matmul(ax.data(), aw.data(), m, n, k, p.abs.data());
  return p;
}

void check_result(const Problem& p, const std::vector<float>& got, bool f32_out) {
  std::vector<double> tol(got.size());
  for (size_t i = 0; i < got.size(); ++i) {
    tol[i] = std::ldexp(double(p.abs[i]), -14) +
             (f32_out ? 0.0 : std::ldexp(std::fabs(double(p.ref[i])), -7));
  }
  require_within(
      std::string("gemm out [m][n] vs cpu::matmul, ") + (f32_out ? "fp32" : "bf16") + " output",
      got, p.ref, tol);
  const double rel = relative_l2(got, p.ref);
  INFO("relative L2 error " << rel);
  CHECK(rel <= (f32_out ? 1e-4 : 4e-3));
}

// Runs the GEMM into a poisoned output and returns it as floats.
std::vector<float> run_gemm(Gemm& gemm, const DeviceArray<bf16>& x, const DeviceArray<bf16>& w,
                            int m, int n, int k, bool f32_out, cudaStream_t stream) {
  if (f32_out) {
    DeviceArray<float> out(size_t(m) * n);
    poison(out);
    gemm.run(x.data(), w.data(), m, n, k, out.data(), stream);
    CUDA_CHECK(cudaStreamSynchronize(stream));
    return from_device(out.data(), out.size());
  }
  DeviceArray<bf16> out(size_t(m) * n);
  poison(out);
  gemm.run(x.data(), w.data(), m, n, k, out.data(), stream);
  CUDA_CHECK(cudaStreamSynchronize(stream));
  return from_device_bf16(out);
}

}  // namespace

TEST_CASE("Gemm matches cpu::matmul for decode and prefill shapes", "[gpu][gemm]") {
  const int m = GENERATE(1, 7, 64, 333);
  const auto nk = GENERATE(std::pair{768, 256}, std::pair{1000, 520}, std::pair{128, 4096});
  const int n = nk.first, k = nk.second;
  INFO("m " << m << ", n " << n << ", k " << k);
  const Problem p = make_problem(m, n, k, 100 + m + n);
  auto d_x = to_device_bf16(p.x);
  auto d_w = to_device_bf16(p.w);
  Gemm gemm;
  Stream stream;
  SECTION("bf16 output") {
    check_result(p, run_gemm(gemm, d_x, d_w, m, n, k, false, stream.get()), false);
  }
  SECTION("fp32 output") {
    check_result(p, run_gemm(gemm, d_x, d_w, m, n, k, true, stream.get()), true);
  }
}

TEST_CASE("Gemm handles a 16384-token prefill", "[gpu][gemm]") {
  const int m = 16384, n = 256, k = 128;
  const Problem p = make_problem(m, n, k, 200);
  auto d_x = to_device_bf16(p.x);
  auto d_w = to_device_bf16(p.w);
  Gemm gemm;
  Stream stream;
  check_result(p, run_gemm(gemm, d_x, d_w, m, n, k, false, stream.get()), false);
  check_result(p, run_gemm(gemm, d_x, d_w, m, n, k, true, stream.get()), true);
}

TEST_CASE("Gemm caches one plan per shape and repeats results exactly", "[gpu][gemm]") {
  const Problem a = make_problem(5, 768, 256, 300), b = make_problem(33, 1000, 520, 301);
  auto ax = to_device_bf16(a.x), aw = to_device_bf16(a.w);
  auto bx = to_device_bf16(b.x), bw = to_device_bf16(b.w);
  Gemm gemm;
  Stream stream;
  const auto a1 = run_gemm(gemm, ax, aw, a.m, a.n, a.k, false, stream.get());
  const auto b1 = run_gemm(gemm, bx, bw, b.m, b.n, b.k, false, stream.get());
  const auto a2 = run_gemm(gemm, ax, aw, a.m, a.n, a.k, false, stream.get());
  const auto a3 = run_gemm(gemm, ax, aw, a.m, a.n, a.k, true, stream.get());
  CHECK(gemm.num_plans() == 3);  // (a, bf16), (b, bf16), (a, fp32)
  require_mostly_equal("same shape, same inputs, run twice", a2, a1, 0.0);
  check_result(a, a1, false);
  check_result(b, b1, false);
  check_result(a, a3, true);
}

TEST_CASE("Gemm works on sub-buffer views (16-byte aligned, not 256)", "[gpu][gemm]") {
  // Rows 3.. of x and an output placed 8 elements into its buffer: pointers aligned to 16
  // bytes only, which must select a plan that does not assume cuBLASLt's default 256.
  const int m = 7, n = 1000, k = 520, skip = 3;
  const Problem p = make_problem(m, n, k, 400);
  std::vector<float> x_big(size_t(m + skip) * k, 0.5f);
  std::copy(p.x.begin(), p.x.end(), x_big.begin() + size_t(skip) * k);
  auto d_x = to_device_bf16(x_big);
  auto d_w = to_device_bf16(p.w);
  DeviceArray<bf16> d_out(size_t(m) * n + 8);
  poison(d_out);
  Gemm gemm;
  Stream stream;
  gemm.run(d_x.data() + size_t(skip) * k, d_w.data(), m, n, k, d_out.data() + 8, stream.get());
  stream.sync();
  check_result(p, from_device_bf16(d_out.data() + 8, size_t(m) * n), false);
}

TEST_CASE("Gemm validates its arguments", "[gpu][gemm]") {
  Gemm gemm;
  Stream stream;
  DeviceArray<bf16> buf(1024);
  bf16* p = buf.data();
  CHECK_THROWS_AS(gemm.run(p, p, -1, 8, 8, p, stream.get()), std::invalid_argument);
  CHECK_THROWS_AS(gemm.run(p, p, 2, 0, 8, p, stream.get()), std::invalid_argument);
  CHECK_THROWS_AS(gemm.run(p, nullptr, 2, 8, 8, p, stream.get()), std::invalid_argument);
  const bf16* odd = reinterpret_cast<const bf16*>(reinterpret_cast<const char*>(p) + 1);
  CHECK_THROWS_AS(gemm.run(odd, p, 2, 8, 8, p, stream.get()), std::invalid_argument);
  CHECK_NOTHROW(gemm.run(nullptr, nullptr, 0, 8, 8, static_cast<bf16*>(nullptr), stream.get()));
  CHECK(gemm.num_plans() == 0);
}

TEST_CASE("gemv matches cpu::matmul and cuBLASLt on Llama shapes; Gemm routes m <= 2 to it",
          "[gpu][gemm][gemv]") {
  // Same tolerances as the GEMM (only the fp32 summation order differs: the gemv sums each
  // lane's products in order, then a butterfly over the 32 lanes).
  const int m = GENERATE(1, 2, 3, 4);
  // n >= 16384: the wide configuration of two-row products (kernels/cuda/gemv.cu), with a
  // partial last block.
  const auto nk =
      GENERATE(std::pair{4096, 4096}, std::pair{3, 14336}, std::pair{6144, 4096}, std::pair{37, 8},
               std::pair{1000, 520}, std::pair{16390, 264}, std::pair{28672, 4096});
  const int n = nk.first, k = nk.second;
  INFO("m " << m << ", n " << n << ", k " << k);
  const Problem p = make_problem(m, n, k, 500 + m + n);
  auto d_x = to_device_bf16(p.x);
  auto d_w = to_device_bf16(p.w);
  Stream stream;
  // x must fit shared memory: 4 rows of k = 14336 do not (96 KiB), Gemm falls back.
  const bool supported = arbor::cuda::gemv_supported(d_x.data(), d_w.data(), m, k);
  CHECK(supported == (size_t(m) * k * 2 <= 96 * 1024));
  if (supported) {
    DeviceArray<bf16> out(size_t(m) * n);
    poison(out);
    arbor::cuda::gemv(d_x.data(), d_w.data(), m, n, k, out.data(), stream.get());
    stream.sync();
    check_result(p, from_device_bf16(out), false);
  }
  Gemm routed;  // the decode path: gemv for m <= kGemvMaxRowsRouted when supported
  check_result(p, run_gemm(routed, d_x, d_w, m, n, k, false, stream.get()), false);
  CHECK(routed.num_plans() == (m <= Gemm::kGemvMaxRowsRouted && supported ? 0u : 1u));
  Gemm cublas;
  cublas.set_small_m_gemv(false);
  check_result(p, run_gemm(cublas, d_x, d_w, m, n, k, false, stream.get()), false);
  CHECK(cublas.num_plans() == 1);
}

TEST_CASE("gemv refuses what it does not support", "[gpu][gemm][gemv]") {
  DeviceArray<bf16> buf(4096);
  bf16* p = buf.data();
  using arbor::cuda::gemv;
  using arbor::cuda::gemv_supported;
  CHECK_FALSE(gemv_supported(p, p, 5, 64));        // too many rows
  CHECK_FALSE(gemv_supported(p, p, 1, 12));        // k not a multiple of 8
  CHECK_FALSE(gemv_supported(p + 1, p, 1, 64));    // x not 16-byte aligned
  CHECK_FALSE(gemv_supported(p, nullptr, 1, 64));  // null
  CHECK_FALSE(gemv_supported(p, p, 4, 1 << 20));   // x does not fit shared memory
  CHECK_THROWS_AS(gemv(p, p, 5, 8, 64, p, nullptr), std::invalid_argument);
  CHECK_THROWS_AS(gemv(p, p, 1, 0, 64, p, nullptr), std::invalid_argument);
}

TEST_CASE("Gemm autotunes prefill shapes and keeps a correct algorithm", "[gpu][gemm]") {
  const int m = Gemm::kAutotuneMinRows * 2, n = 1024, k = 512;
  const Problem p = make_problem(m, n, k, 500);
  auto d_x = to_device_bf16(p.x);
  auto d_w = to_device_bf16(p.w);
  Stream stream;

  Gemm tuned;  // autotuning is the default
  check_result(p, run_gemm(tuned, d_x, d_w, m, n, k, false, stream.get()), false);
  REQUIRE(tuned.plans().size() == 1);
  const Gemm::PlanInfo info = tuned.plans()[0];
  INFO("kept candidate " << info.rank << ": " << info.algorithm);
  CHECK(info.m == m);
  CHECK(info.rank >= 0);
  CHECK(info.rank < Gemm::kAutotuneCandidates);
  // The kept algorithm is what later calls run: same result, bit for bit.
  const auto again = run_gemm(tuned, d_x, d_w, m, n, k, false, stream.get());
  require_mostly_equal("tuned plan, run again", again,
                       run_gemm(tuned, d_x, d_w, m, n, k, false, stream.get()), 0.0);

  // Every candidate the heuristic offers is timed, in its order; the last one timed leaves a
  // correct product in out.
  DeviceArray<bf16> out(size_t(m) * n);
  poison(out);
  const auto timings = tuned.time_algorithms(d_x.data(), d_w.data(), m, n, k, out.data(),
                                             Gemm::kAutotuneCandidates, 2, stream.get());
  REQUIRE(!timings.empty());
  CHECK(timings.size() <= size_t(Gemm::kAutotuneCandidates));
  CHECK(timings[0].rank == 0);
  for (size_t i = 0; i < timings.size(); ++i) {
    INFO("candidate " << timings[i].rank << ": " << timings[i].algorithm);
    CHECK(timings[i].us > 0);
    if (i > 0) CHECK(timings[i].rank > timings[i - 1].rank);
  }
  stream.sync();
  check_result(p, from_device_bf16(out), false);
  CHECK_THROWS_AS(
      tuned.time_algorithms(d_x.data(), d_w.data(), m, n, k, out.data(), 4, 0, stream.get()),
      std::invalid_argument);

  // Another m of the same bucket (2048-4095) reuses the tuned algorithm; one of another
  // bucket is tuned on its own.
  CHECK(tuned.num_tuned() == 1);
  const Problem same_bucket = make_problem(m + 64, n, k, 502);
  auto bx = to_device_bf16(same_bucket.x), bw = to_device_bf16(same_bucket.w);
  check_result(same_bucket, run_gemm(tuned, bx, bw, m + 64, n, k, false, stream.get()), false);
  CHECK(tuned.num_tuned() == 1);
  for (const auto& plan : tuned.plans())
    if (plan.m == m + 64) CHECK(plan.algorithm == info.algorithm);
  const Problem other_bucket = make_problem(Gemm::kAutotuneMinRows + 5, n, k, 503);
  auto ox = to_device_bf16(other_bucket.x), ow = to_device_bf16(other_bucket.w);
  check_result(other_bucket, run_gemm(tuned, ox, ow, other_bucket.m, n, k, false, stream.get()),
               false);
  CHECK(tuned.num_tuned() == 2);

  Gemm untuned;
  untuned.set_autotune(false);
  check_result(p, run_gemm(untuned, d_x, d_w, m, n, k, false, stream.get()), false);
  REQUIRE(untuned.plans().size() == 1);
  CHECK(untuned.plans()[0].rank == 0);

  // Below kAutotuneMinRows nothing is timed.
  const Problem small = make_problem(Gemm::kAutotuneMinRows - 1, 256, 128, 501);
  auto sx = to_device_bf16(small.x), sw = to_device_bf16(small.w);
  check_result(small, run_gemm(tuned, sx, sw, small.m, 256, 128, false, stream.get()), false);
  for (const auto& plan : tuned.plans())
    if (plan.m == small.m) CHECK(plan.rank == 0);
  CHECK(tuned.num_tuned() == 2);
  CHECK(untuned.num_tuned() == 0);
}

TEST_CASE("Gemm makes a prefill plan inside graph capture without timing", "[gpu][gemm]") {
  // Timing needs synchronization, which capture forbids: a plan first made while capturing,
  // in a bucket not tuned yet, takes the heuristic's choice, and the captured product is
  // correct.
  const int m = Gemm::kAutotuneMinRows, n = 512, k = 256;
  const Problem p = make_problem(m, n, k, 600);
  auto d_x = to_device_bf16(p.x);
  auto d_w = to_device_bf16(p.w);
  DeviceArray<bf16> out(size_t(m) * n);
  poison(out);
  Stream stream;
  Gemm gemm;
  arbor::cuda::Graph graph;
  graph.capture(stream.get(),
                [&] { gemm.run(d_x.data(), d_w.data(), m, n, k, out.data(), stream.get()); });
  REQUIRE(gemm.plans().size() == 1);
  CHECK(gemm.plans()[0].rank == 0);
  CHECK(gemm.num_tuned() == 0);
  graph.launch(stream.get());
  stream.sync();
  check_result(p, from_device_bf16(out), false);

  // Once a bucket is tuned (outside capture), a plan made while capturing reuses its choice.
  Gemm tuned_first;
  const Problem q = make_problem(m + 32, n, k, 601);
  auto q_x = to_device_bf16(q.x), q_w = to_device_bf16(q.w);
  check_result(q, run_gemm(tuned_first, q_x, q_w, m + 32, n, k, false, stream.get()), false);
  REQUIRE(tuned_first.num_tuned() == 1);
  const std::string tuned_algorithm = tuned_first.plans()[0].algorithm;
  poison(out);
  arbor::cuda::Graph graph2;
  graph2.capture(stream.get(), [&] {
    tuned_first.run(d_x.data(), d_w.data(), m, n, k, out.data(), stream.get());
  });
  REQUIRE(tuned_first.plans().size() == 2);
  for (const auto& plan : tuned_first.plans()) CHECK(plan.algorithm == tuned_algorithm);
  graph2.launch(stream.get());
  stream.sync();
  check_result(p, from_device_bf16(out), false);
}
