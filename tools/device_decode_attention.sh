#!/usr/bin/env bash
# On the GPU machine: decode-attention checks and in-run A/B measurements in one call.
#
# Builds travel as .device/ab/NAME.tar.gz, each a bundle from tools/bundle_gpu.sh packed with
# `tar czf .device/ab/NAME.tar.gz -C BUNDLE .` (compressed, so that several fit in one call's
# carry). NAME is the build under test (its GPU tests run); the others are measured beside it.
# A variant is NAME or NAME:VAR=VALUE (an environment setting for that run, e.g. an A/B switch).
# Every variant's attention benchmark runs PASSES times, interleaved, then the 8B decode step
# for each variant. Logs go to $OUT.
#
# Usage: tools/device_decode_attention.sh NAME "VARIANT..."   env: PASSES (2), TESTS (a Catch2
#        filter, default "[decode],[cp]"; "none" skips), E2E ("none" skips the 8B decode step),
#        EXTRA (more arbor_bench_attention runs per variant and pass, graph mode: argument
#        lists separated by ';', e.g. "--hq 64 --batch 1 --context 32768 --splits 66"),
#        E2E_VARIANTS (the 8B decode step's variants, default VARIANT...: e.g. add
#        "NAME:ARBOR_FUSED_GEMV=0" there only, as it does not change the attention kernel)
set -uo pipefail
main=${1:?usage: device_decode_attention.sh NAME "VARIANT..."}
variants=${2:-$main}
export ARBOR_SOURCE_DIR=$PWD
for t in .device/ab/*.tar.gz; do
  n=$(basename "$t" .tar.gz)
  mkdir -p "/tmp/ab/$n" && tar xzf "$t" -C "/tmp/ab/$n"
  echo "build $n: $(cat "/tmp/ab/$n/COMMIT" 2>/dev/null || echo "commit not recorded")"
done
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
date -u

# run SECONDS VARIANT BINARY ARGS...: the variant's binary with its lib/ and environment
# setting, stopped after SECONDS.
run() {
  local seconds=$1 name=${2%%:*} setting=
  [[ $2 == *:* ]] && setting=${2#*:}
  local b=/tmp/ab/$name bin=$3
  shift 3
  timeout "$seconds" env LD_LIBRARY_PATH="$b/lib:/usr/local/cuda/lib64" ${setting:+"$setting"} \
    "$b/bin/$bin" "$@"
}

if [[ ${TESTS:-} != none ]]; then
  echo "== GPU tests ${TESTS:-[decode],[cp]} ($main)"
  run 300 "$main" arbor_gpu_tests "${TESTS:-[decode],[cp]}" 2>&1 |
    tee "$OUT/gpu_tests.log" | tail -6
fi

IFS=';' read -ra extra <<<"${EXTRA:-}"
for pass in $(seq "${PASSES:-2}"); do
  for v in $variants; do
    echo "== decode attention, $v, pass $pass"
    {
      run 150 "$v" arbor_bench_attention --batch 1,8 --context 1024,4096,16384,32768,131072 \
        --mode graph --iters 100 --layers 32
      run 100 "$v" arbor_bench_attention --batch 32 --context 1024,4096,32768 --mode graph \
        --iters 100 --layers 32 | tail -3
      for args in "${extra[@]}"; do
        echo "-- $args"
        # shellcheck disable=SC2086  # one argument list per entry, split on spaces
        run 100 "$v" arbor_bench_attention $args --mode graph --iters 100 --layers 32
      done
    } 2>&1 | tee -a "$OUT/attention_$pass.log" | grep -E "^ +[0-9]|^-- |rror"
  done
done

if [[ ${E2E:-} != none ]]; then
  for v in ${E2E_VARIANTS:-$variants}; do
    echo "== 8B decode step (dummy weights), $v"
    run 150 "$v" arbor_bench_decode --model bench/models/llama-3.1-8b --batch 1,2,8 \
      --context 1024,32768 2>&1 | tee -a "$OUT/decode_e2e.log" | grep -E "^\|? *[0-9]|rror"
  done
fi
date -u
