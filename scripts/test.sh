#!/usr/bin/env bash
# Second README command: install what is missing, build, and run every test.
#   1. formatting check (clang-format)
#   2. the normal build (with the CUDA backend when nvcc exists) and all its tests, incl. the
#      end-to-end test of `arbor serve` with the official `openai` npm client; GPU tests
#      report "Skipped" on a machine without a GPU
#   3. a CPU-only build under AddressSanitizer + UndefinedBehaviorSanitizer and the CPU tests,
#      then the libFuzzer targets for 20 s each (scripts/fuzz.sh; ARBOR_FUZZ_SECONDS)
#   4. the Docker deployment: the CPU image built and served with docker-compose
#      (tests/docker/docker_test.sh)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh

echo "== clang-format check"
git ls-files -- '*.h' '*.cpp' '*.cu' '*.cuh' | xargs clang-format --dry-run --Werror
echo "formatting ok"

echo "== end-to-end test client (npm: openai)"
npm ci --prefix tests/e2e --no-audit --no-fund --loglevel=error

jobs=$(nproc)
echo "== build (Release, warnings are errors)"
BUILD_DIR="$root/build" scripts/build.sh -DARBOR_WERROR=ON
echo "== tests"
(cd build && ctest --output-on-failure -j"$jobs")

echo "== AddressSanitizer + UndefinedBehaviorSanitizer build (CPU only)"
BUILD_DIR="$root/build-asan" BUILD_TYPE=Debug scripts/build.sh -DARBOR_CUDA=OFF \
  -DARBOR_SANITIZE=ON -DARBOR_WERROR=ON -DCMAKE_CXX_FLAGS_DEBUG="-g -O1"
echo "== tests under sanitizers"
(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure -j"$jobs" -L cpu)

echo "== fuzzing (libFuzzer + ASan/UBSan, clang; request JSON, tokenizer.json, safetensors)"
scripts/fuzz.sh "${ARBOR_FUZZ_SECONDS:-20}"

echo "== docker (CPU image on a debootstrapped Debian base, served with docker-compose)"
tests/docker/docker_test.sh
