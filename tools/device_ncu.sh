#!/usr/bin/env bash
# On the GPU machine: Nsight Compute's counters for decode attention and for torch SDPA's cuDNN
# backend at the same shapes, one single launch each, to see where arbor's streaming falls
# short of cuDNN's (bench/RESULTS.md: cuDNN reads long contexts 2.6-5.4% faster). One bundle
# (.device/ab/NAME.tar.gz, as tools/device_attention_trace.sh takes it) holds
# arbor_bench_attention. The clocks are left alone (--clock-control none, METHOD.md).
#
# Usage: tools/device_ncu.sh NAME   env: SHAPES ("BATCH:CONTEXT ...", default "8:32768
#        1:131072"), RING (also profile ARBOR_DECODE_RING=RING, default 3; 0: no).
# Logs go to $OUT.
set -uo pipefail
name=${1:?usage: device_ncu.sh NAME}
mkdir -p "/tmp/ab/$name" && tar xzf ".device/ab/$name.tar.gz" -C "/tmp/ab/$name"
b=/tmp/ab/$name
echo "build $name: $(cat "$b/COMMIT" 2>/dev/null || echo "commit not recorded")"
export ARBOR_SOURCE_DIR=$PWD
ncu_bin=$(command -v ncu)
for f in /opt/nvidia/nsight-compute/*/ncu; do [[ -z $ncu_bin && -x $f ]] && ncu_bin=$f; done
[[ -n $ncu_bin ]] || { echo "ncu not found"; exit 1; }

sections=(--section SpeedOfLight --section MemoryWorkloadAnalysis --section WarpStateStats
  --section Occupancy --section LaunchStats --section SchedulerStats)
metrics=dram__bytes_read.sum,dram__throughput.avg.pct_of_peak_sustained_elapsed
metrics+=,lts__t_sector_op_read_hit_rate.pct,l1tex__t_bytes_pipe_lsu_mem_global_op_ld.sum
metrics+=,smsp__inst_executed.sum,sm__cycles_active.avg,gpu__time_duration.sum
# ncu_run LOG KERNEL_REGEX SKIP CMD...: one profiled launch of the first kernel matching.
ncu_run() {
  local log=$1 kernel=$2 skip=$3
  shift 3
  timeout 180 "$ncu_bin" --clock-control none --kernel-name "regex:$kernel" \
    --launch-skip "$skip" --launch-count 1 "${sections[@]}" --metrics "$metrics" "$@" \
    >"$OUT/$log" 2>&1
  echo "== $log (rc $?)"
  grep -E "^  [a-z_]|Duration|DRAM Throughput|Memory Throughput|L2 Hit|Achieved Occupancy|\
Registers Per|Stall|Warp Cycles Per Issued|Issued Warp|No Eligible|Block Limit|dram__|lts__t|\
l1tex__t|smsp__inst|sm__cycles|gpu__time" "$OUT/$log" | head -60
}

for shape in ${SHAPES:-8:32768 1:131072}; do
  batch=${shape%%:*} context=${shape#*:}
  args=(--batch "$batch" --context "$context" --mode single --iters 20 --warmup 5 --layers 4)
  ncu_run "ncu_arbor_b${batch}_c${context}.log" decode_attention 10 \
    env LD_LIBRARY_PATH="$b/lib:/usr/local/cuda/lib64" "$b/bin/arbor_bench_attention" "${args[@]}"
  if [[ ${RING:-3} != 0 ]]; then
    ncu_run "ncu_arbor_ring${RING:-3}_b${batch}_c${context}.log" decode_attention 10 \
      env LD_LIBRARY_PATH="$b/lib:/usr/local/cuda/lib64" ARBOR_DECODE_RING="${RING:-3}" \
      "$b/bin/arbor_bench_attention" "${args[@]}"
  fi
  ncu_run "ncu_cudnn_b${batch}_c${context}.log" "sdpa|fmha|flash|attn|cudnn" 8 \
    python3 tools/bench_sdpa.py --batch "$batch" --context "$context" --backends cudnn \
    --iters 20 --warmup 5 --layers 4
done
