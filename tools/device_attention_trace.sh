#!/usr/bin/env bash
# On the GPU machine: where decode attention's time goes, and the ring variant against the
# register loads. One bundle (.device/ab/NAME.tar.gz, see tools/device_decode_attention.sh)
# holds arbor_gpu_tests, arbor_bench_attention, arbor_bench_attention_trace and
# arbor_bench_decode; ARBOR_DECODE_RING=2 or 3 makes the same binaries plan the ring variant
# wherever there is no prologue (kernels/cuda/decode_attention.cu).
#
# PARTS (default "tests trace ab e2e"; all of it runs past one call's 10 minutes: give each
# call one or two, e.g. "tests trace", then "ab", then "e2e"; or "quick" alone):
#   tests  the decode GPU tests (the ring's own cases among them);
#   trace  block timelines (arbor_bench_attention_trace --trace) as planned and with the
#          ring (2 stages) wherever there is no prologue: period, compute, publish, arrive,
#          merge, handoff per layer (bench/attention_trace.h);
#   ab     tools/device_decode_attention.sh's attention tables as planned and with ring 2 / 3
#          (PASSES passes, interleaved);
#   e2e    its 8B decode step over the same three settings;
#   quick  for a call with little device time left (under 5 minutes in all): the timelines
#          at batch 1 and 8 as planned, the ring (2 stages) at 4k and 32k, then the
#          [decode] tests. Sessions have often got one late machine start and no more, so
#          the most telling numbers come first.
#   sweep  what the short-context rule of the plan left open (plan_decode_attention): 4097 to
#          8192 tokens at batch 1-2, planned and with forced split counts with and without
#          the rings; GQA 8 (64 query heads), planned against the split counts the rule
#          replaced (about 2 minutes).
#   copy   batch 1-32 x 1k-128k with the register loads as planned and with the ring (3
#          stages) wherever there is no prologue, PASSES passes (about 3 minutes each); the
#          benchmark's header gives the read bandwidth of each load path.
#
# Usage: tools/device_attention_trace.sh NAME   env: PARTS, PASSES (2), TRACE (replays, 5),
#        EXTRA (more attention runs for ab, as tools/device_decode_attention.sh takes them;
#        default: batch 1 at 1k and 2k with 17 splits, the plan before the short-context rule)
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

# bin SECONDS SETTING EXE ARGS...: SETTING is VAR=VALUE for the run (several joined by
# commas), or "-" for none.
bin() {
  local seconds=$1 setting=$2 exe=$3
  shift 3
  [[ $setting == - ]] && setting=
  local -a vars
  IFS=, read -ra vars <<<"$setting"
  timeout "$seconds" env LD_LIBRARY_PATH="$b/lib:/usr/local/cuda/lib64" "${vars[@]}" \
    "$b/bin/$exe" "$@"
}

# Every timed run: per layer inside a CUDA graph of 32 layers, as the issue's targets are.
graph=(--mode graph --iters 100 --layers 32)

if [[ $parts == *" tests "* ]]; then
  echo "== GPU tests [decode]"
  bin 300 - arbor_gpu_tests "[decode]" 2>&1 | tee "$OUT/tests_decode.log" | tail -3
fi

if [[ $parts == *" quick "* ]]; then
  for run in "- --batch 1,8 --context 1024,4096,32768" \
    "ARBOR_DECODE_RING=2 --batch 1,8 --context 4096,32768"; do
    setting=${run%% *} shape=${run#* }
    echo "== block timelines, $setting"
    # shellcheck disable=SC2086  # the shape's arguments, split on spaces
    bin 60 "$setting" arbor_bench_attention_trace $shape "${graph[@]}" --trace 3 2>&1 |
      tee -a "$OUT/trace_quick.log" | grep -vE "^(device|measured|shape|GB/s)"
  done
  echo "== GPU tests [decode]"
  bin 150 - arbor_gpu_tests "[decode]" 2>&1 | tee "$OUT/tests_decode.log" | tail -3
fi

if [[ $parts == *" sweep "* ]]; then
  {
    echo "== 4097-8192 tokens, batch 1-2: as planned, then forced splits, rings off / 3 stages"
    bin 60 - arbor_bench_attention --batch 1,2 --context 4096,5120,6144,7168,8192 "${graph[@]}"
    for splits in 16 24 32 48 64; do
      for ring in 0 3; do
        echo "-- splits $splits, ARBOR_DECODE_RING=$ring"
        bin 60 "ARBOR_DECODE_RING=$ring" arbor_bench_attention --batch 1,2 \
          --context 5120,6144,7168 --splits "$splits" "${graph[@]}"
      done
    done
    echo "== GQA 8: as planned, then the split counts the rule replaced (17; 32 at 4k)"
    bin 60 - arbor_bench_attention --hq 64 --hkv 8 --batch 1,2 --context 512,1024,2048,4096 \
      "${graph[@]}"
    bin 60 - arbor_bench_attention --hq 64 --hkv 8 --batch 1 --context 512,1024,2048 \
      --splits 17 "${graph[@]}"
    bin 60 - arbor_bench_attention --hq 64 --hkv 8 --batch 1,2 --context 4096 --splits 32 \
      "${graph[@]}"
  } 2>&1 | tee -a "$OUT/sweep.log" | grep -E "^ +[0-9]|^(==|--)"
fi

if [[ $parts == *" copy "* ]]; then
  {
    for pass in $(seq "${PASSES:-2}"); do
      for setting in - ARBOR_DECODE_RING=3; do
        echo "-- pass $pass, $setting"
        bin 120 "$setting" arbor_bench_attention --batch 1,4,8,16,32 \
          --context 1024,2048,4096,8192,16384,32768,131072 "${graph[@]}"
      done
    done
  } 2>&1 | tee -a "$OUT/copy.log" | grep -E "^ +[0-9]|^(--|measured)"
fi

if [[ $parts == *" trace "* ]]; then
  for setting in - ARBOR_DECODE_RING=2; do
    [[ $setting == - ]] && label=planned || label=${setting#ARBOR_DECODE_} label=${label//=/}
    echo "== block timelines, $label"
    {
      bin 120 "$setting" arbor_bench_attention_trace --batch 1 --context 1024,4096,32768 \
        "${graph[@]}" --trace "${TRACE:-5}"
      bin 120 "$setting" arbor_bench_attention_trace --batch 8,32 --context 1024,4096,32768 \
        "${graph[@]}" --trace "${TRACE:-5}"
      # The split count the plan once took at batch 1 x 1k (one block per SM).
      bin 60 "$setting" arbor_bench_attention_trace --batch 1 --context 1024 --splits 17 \
        "${graph[@]}" --trace "${TRACE:-5}"
    } 2>&1 | tee -a "$OUT/trace_$label.log" | grep -vE "^(device|measured|shape|GB/s)"
  done
fi

variants="$name $name:ARBOR_DECODE_RING=2 $name:ARBOR_DECODE_RING=3"
if [[ $parts == *" ab "* ]]; then
  [[ $parts == *" e2e "* ]] && e2e= || e2e=none
  few_splits="--batch 1 --context 1024,2048 --splits 17"
  TESTS=none E2E=$e2e EXTRA="${EXTRA-$few_splits}" \
    tools/device_decode_attention.sh "$name" "$variants"
elif [[ $parts == *" e2e "* ]]; then
  TESTS=none PASSES=0 tools/device_decode_attention.sh "$name" "$variants"
fi
