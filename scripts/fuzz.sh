#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz: request JSON, tokenizer.json, safetensors header)
# with clang + AddressSanitizer + UndefinedBehaviorSanitizer into build-fuzz/, then runs each
# for SECONDS (default 20) on its seed corpus (tests/fuzz/corpus/TARGET, read only; what the
# fuzzer adds goes to build-fuzz/corpus/TARGET and is reused by the next run).
# Fails when any target crashes, leaks, trips a sanitizer or an assertion, or hangs; the
# input that did it is left in build-fuzz/artifacts/. Usage: scripts/fuzz.sh [SECONDS]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-20}
build=${FUZZ_BUILD_DIR:-$root/build-fuzz}

CC=clang CXX=clang++ cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" -DARBOR_CUDA=OFF -DARBOR_FUZZ=ON -DARBOR_WERROR=ON >/dev/null
cmake --build "$build" -j"$(nproc)"

failed=()
for target in request tokenizer_json safetensors; do
  echo "== fuzz_$target: ${seconds} s"
  mkdir -p "$build/corpus/$target" "$build/artifacts"
  if ! ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "$build/tests/fuzz/fuzz_$target" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$build/artifacts/$target-" \
    "$build/corpus/$target" "$root/tests/fuzz/corpus/$target" 2>"$build/fuzz_$target.log"; then
    tail -n 60 "$build/fuzz_$target.log"
    failed+=("$target")
  else
    grep -E "^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)" \
      "$build/fuzz_$target.log" || true
  fi
done
if ((${#failed[@]})); then
  echo "fuzzing FAILED: ${failed[*]} (inputs in $build/artifacts/, logs in $build/fuzz_*.log)"
  exit 1
fi
echo "fuzzing ok"
