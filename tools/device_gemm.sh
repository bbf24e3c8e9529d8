#!/usr/bin/env bash
# On the GPU machine: the prefill products in one call — the GEMM GPU tests, the GEMM
# benchmark (heuristic first choice, autotuned, every candidate, torch F.linear as the peer),
# then the 8B prefill step end to end with autotuning on and off, alternating, and the rest
# of the GPU tests. Binaries come from tools/bundle_gpu.sh in .device/bundle; logs go to $OUT.
# Usage: tools/device_gemm.sh [quick]   (quick: skip the full GPU test run)
set -uo pipefail
b=$PWD/.device/bundle
export LD_LIBRARY_PATH=$b/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ARBOR_SOURCE_DIR=$PWD
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm --format=csv
date -u
echo "== GPU tests [gemm]"
timeout 120 "$b/bin/arbor_gpu_tests" "[gemm]" 2>&1 | tee "$OUT/gemm_tests.log" | tail -8
echo "== prefill GEMMs"
timeout 240 "$b/bin/arbor_bench_gemm" --m "${GEMM_M:-1024,2048,4096,8192}" --list \
  --peer "python3 tools/bench_torch_gemm.py" 2>&1 | tee "$OUT/gemm_bench.log"
echo "== 8B prefill step end to end (dummy weights): autotune on, then off"
for run in "1 8192" "0 8192" "1 2048" "0 2048" "1 8192" "0 8192" "0 8192" "1 8192"; do
  read -r tune n <<<"$run"
  {
    echo "-- gemm autotune $tune, $n tokens"
    timeout 120 "$b/bin/arbor_bench_decode" --batch 1 --context 1024 --steps 8 --warmup 2 \
      --prefill-tokens "$n" --gemm-autotune "$tune" 2>&1 | grep -i "prefill\|error"
  } | tee -a "$OUT/gemm_e2e.log"
done
if [[ "${1:-}" != quick ]]; then
  echo "== all GPU tests but the HF goldens"
  timeout 240 "$b/bin/arbor_gpu_tests" "~[hf-bf16]" 2>&1 | tee "$OUT/gpu_tests.log" | tail -6
fi
date -u
