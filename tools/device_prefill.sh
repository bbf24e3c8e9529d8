#!/usr/bin/env bash
# On the GPU machine: the prefill-attention checks and measurements in one call — the GPU
# tests of prefill attention (both kernels where the device has wgmma), the kernel benchmark
# (mma.sync and wgmma side by side), the whole 8B prefill step end to end with each kernel
# (ARBOR_PREFILL_KERNEL=mma for the old one), then the rest of the GPU tests. Binaries come
# from tools/bundle_gpu.sh in .device/bundle; logs go to $OUT.
# Usage: tools/device_prefill.sh [quick]   (quick: skip the full GPU test run)
set -uo pipefail
b=$PWD/.device/bundle
export LD_LIBRARY_PATH=$b/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ARBOR_SOURCE_DIR=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
date -u
echo "== GPU tests [prefill_attention],[cp]"
timeout 120 "$b/bin/arbor_gpu_tests" "[prefill_attention],[cp]" 2>&1 | tee "$OUT/prefill_tests.log" | tail -25
for ab in ${AB_ENV:-}; do  # e.g. AB_ENV="X=1 Y=0": each setting alone, tests and kernels
  echo "== GPU tests [prefill_attention] with $ab"
  env "$ab" timeout 120 "$b/bin/arbor_gpu_tests" "[prefill_attention]" 2>&1 | tail -3
done
echo "== prefill attention kernels"
timeout 120 "$b/bin/arbor_bench_prefill_attention" --lens 1024,2048,4096,8192,16384 2>&1 |
  tee "$OUT/prefill_bench.log"
for ab in ${AB_ENV:-}; do
  echo "== prefill attention kernels with $ab"
  env "$ab" timeout 120 "$b/bin/arbor_bench_prefill_attention" --lens 1024,2048,4096,8192,16384 \
    2>&1 | grep -v "^mma.sync" | tee -a "$OUT/prefill_bench_ab.log"
done
echo "== 8B prefill step end to end (dummy weights): wgmma, then mma.sync; 8k twice"
for run in "wgmma 8192" "mma 8192" "wgmma 2048" "mma 2048" "wgmma 8192" "mma 8192"; do
  read -r k n <<<"$run"
  {
    echo "-- kernel $k, $n tokens"
    ARBOR_PREFILL_KERNEL=$k timeout 120 "$b/bin/arbor_bench_decode" --batch 1 --context 1024 \
      --steps 8 --warmup 2 --prefill-tokens "$n" 2>&1 | grep -i "prefill\|error"
  } | tee -a "$OUT/prefill_e2e.log"
done
if [[ "${1:-}" != quick ]]; then
  echo "== all GPU tests but the HF goldens"
  timeout 240 "$b/bin/arbor_gpu_tests" "~[hf-bf16]" 2>&1 | tee "$OUT/gpu_tests.log" | tail -6
fi
date -u
