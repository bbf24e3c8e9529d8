#!/usr/bin/env bash
# On the GPU machine: where decode attention's time goes, and the ring variant against the
# register loads. One bundle (.device/ab/NAME.tar.gz, see tools/device_decode_attention.sh)
# holds arbor_gpu_tests, arbor_bench_attention, arbor_bench_attention_trace and
# arbor_bench_decode; ARBOR_DECODE_RING=2 or 3 makes the same binaries plan the ring variant
# (kernels/cuda/decode_attention.cu).
#
# PARTS (default "tests trace ab e2e"; split them over two calls if one is too long):
#   tests  the decode GPU tests (the ring's own cases among them);
#   trace  block timelines (arbor_bench_attention_trace --trace), ring off and 2 stages:
#          period, compute, publish, arrive, merge, handoff per layer (bench/attention_trace.h);
#   ab     tools/device_decode_attention.sh's attention tables over ring off / 2 / 3
#          (PASSES passes, interleaved);
#   e2e    its 8B decode step over the same three settings.
#
# Usage: tools/device_attention_trace.sh NAME   env: PARTS, PASSES (2), TRACE (replays, 5),
#        EXTRA (more attention runs for ab, as tools/device_decode_attention.sh takes them;
#        default: batch 1 at 1k and 2k with 8 splits)
# Logs go to $OUT.
set -uo pipefail
name=${1:?usage: device_attention_trace.sh NAME}
parts=" ${PARTS:-tests trace ab e2e} "
mkdir -p "/tmp/ab/$name" && tar xzf ".device/ab/$name.tar.gz" -C "/tmp/ab/$name"
b=/tmp/ab/$name
echo "build $name: $(cat "$b/COMMIT" 2>/dev/null || echo "commit not recorded")"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
date -u
export ARBOR_SOURCE_DIR=$PWD

bin() {
  local seconds=$1 ring=$2 exe=$3
  shift 3
  timeout "$seconds" env LD_LIBRARY_PATH="$b/lib:/usr/local/cuda/lib64" ARBOR_DECODE_RING="$ring" \
    "$b/bin/$exe" "$@"
}

if [[ $parts == *" tests "* ]]; then
  echo "== GPU tests [decode]"
  bin 300 0 arbor_gpu_tests "[decode]" 2>&1 | tee "$OUT/tests_decode.log" | tail -3
fi

if [[ $parts == *" trace "* ]]; then
  for ring in 0 2; do
    echo "== block timelines, ARBOR_DECODE_RING=$ring"
    {
      bin 120 "$ring" arbor_bench_attention_trace --batch 1 --context 1024,4096,32768 \
        --mode graph --iters 100 --layers 32 --trace "${TRACE:-5}"
      bin 120 "$ring" arbor_bench_attention_trace --batch 8,32 --context 1024,4096,32768 \
        --mode graph --iters 100 --layers 32 --trace "${TRACE:-5}"
      # Fewer, longer splits at batch 1: fewer partials to merge, more steps per block.
      bin 60 "$ring" arbor_bench_attention_trace --batch 1 --context 1024 --splits 8 \
        --mode graph --iters 100 --layers 32 --trace "${TRACE:-5}"
    } 2>&1 | tee -a "$OUT/trace_ring$ring.log" | grep -vE "^(device|measured|shape|GB/s)"
  done
fi

variants="$name $name:ARBOR_DECODE_RING=2 $name:ARBOR_DECODE_RING=3"
if [[ $parts == *" ab "* ]]; then
  [[ $parts == *" e2e "* ]] && e2e= || e2e=none
  few_splits="--batch 1 --context 1024,2048 --splits 8"
  TESTS=none E2E=$e2e EXTRA="${EXTRA-$few_splits}" \
    tools/device_decode_attention.sh "$name" "$variants"
elif [[ $parts == *" e2e "* ]]; then
  TESTS=none PASSES=0 tools/device_decode_attention.sh "$name" "$variants"
fi
