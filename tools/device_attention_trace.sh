#!/usr/bin/env bash
# On the GPU machine: where decode attention's time goes, and the ring variant against the
# register loads, in one call. One bundle (.device/ab/NAME.tar.gz, see
# tools/device_decode_attention.sh) holds arbor_gpu_tests, arbor_bench_attention,
# arbor_bench_attention_trace and arbor_bench_decode; ARBOR_DECODE_RING=2 or 3 switches the
# same binaries to the ring variant (kernels/cuda/decode_attention.cu).
#
#  1. The decode GPU tests with the ring off, 2 and 3 stages.
#  2. The block timelines (arbor_bench_attention_trace --trace), ring off and 2 stages:
#     period, compute, publish, arrive, merge, handoff per layer (bench/attention_trace.h).
#  3. tools/device_decode_attention.sh over the three settings (attention tables, PASSES
#     passes interleaved, and the 8B decode step).
#
# Usage: tools/device_attention_trace.sh NAME   env: PASSES (2), TRACE (replays, 5)
# Logs go to $OUT.
set -uo pipefail
name=${1:?usage: device_attention_trace.sh NAME}
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

for ring in 0 2 3; do
  echo "== GPU tests [decode], ARBOR_DECODE_RING=$ring"
  bin 240 "$ring" arbor_gpu_tests "[decode]" 2>&1 | tee "$OUT/tests_ring$ring.log" | tail -3
done

for ring in 0 2; do
  echo "== block timelines, ARBOR_DECODE_RING=$ring"
  {
    bin 120 "$ring" arbor_bench_attention_trace --batch 1 --context 1024,4096,32768 --mode graph \
      --iters 100 --layers 32 --trace "${TRACE:-5}"
    bin 120 "$ring" arbor_bench_attention_trace --batch 8,32 --context 1024,4096,32768 \
      --mode graph --iters 100 --layers 32 --trace "${TRACE:-5}"
  } 2>&1 | tee -a "$OUT/trace_ring$ring.log" | grep -vE "^(device|measured|shape|GB/s)"
done

TESTS=none tools/device_decode_attention.sh "$name" \
  "$name $name:ARBOR_DECODE_RING=2 $name:ARBOR_DECODE_RING=3"
