#!/usr/bin/env bash
# On the GPU machine: runs the GPU tests, the comparison with transformers bf16 and a GPU
# generate, from binaries built here and bundled by tools/bundle_gpu.sh into .device/bundle.
# Logs go to $OUT. Usage: tools/device_gpu_check.sh [TEST_FILTER]
set -uo pipefail
b=$PWD/.device/bundle
export LD_LIBRARY_PATH=$b/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}
export ARBOR_SOURCE_DIR=$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
ldd "$b/bin/arbor_gpu_tests" | grep "not found"
echo "== GPU tests"
timeout 300 "$b/bin/arbor_gpu_tests" "${1:-~[hf-bf16]}" 2>&1 | tee "$OUT/gpu_tests.log" | tail -80
echo "== arbor generate on the GPU (demo model)"
timeout 60 "$b/bin/arbor" generate --model models/demo -p "The jury said" -n 64 --temperature 0 2>&1 |
  tee "$OUT/generate.log"
if [[ -z "${SKIP_HF:-}" ]]; then
  echo "== transformers bf16 goldens"
  timeout 240 python3 tools/gpu_golden.py --out /tmp/golden 2>&1 | grep -v Warning | tail -5
  ARBOR_HF_GOLDEN_DIR=/tmp/golden timeout 120 "$b/bin/arbor_gpu_tests" "[hf-bf16]" 2>&1 |
    tee "$OUT/hf_golden.log" | tail -30
fi
