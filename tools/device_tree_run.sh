#!/usr/bin/env bash
# On the GPU machine: tree attention (context parallelism) checks and measurements from the
# bundle (tools/bundle_gpu.sh → .device/bundle). Logs go to $OUT.
#   1. GPU tests of the context-parallel kernels, runners and communicators
#   2. bench/tree (combine latency, shard attention, end-to-end runners, the analytic model)
#   3. `arbor serve --context-parallel`: NCCL with one rank on the demo model, then two
#      simulated ranks on one GPU with a dummy Llama-3.1-8B and a long document via curl -N
# Usage: tools/device_tree_run.sh [PROMPT_WORDS]
set -uo pipefail
source "$(dirname "$0")/device_serve.sh"
b=$PWD/.device/bundle
lib=$b/lib:/usr/local/cuda/lib64
export ARBOR_SOURCE_DIR=$PWD
words=${1:-60000}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
echo "== GPU tests [cp], [comm]"
LD_LIBRARY_PATH=$lib timeout 240 "$b/bin/arbor_gpu_tests" "[cp],[comm]" 2>&1 |
  tee "$OUT/gpu_cp_tests.log" | tail -25
echo "== bench/tree"
LD_LIBRARY_PATH=$lib timeout 300 "$b/bin/arbor_bench_tree" --model bench/models/llama-3.1-8b \
  --project-bandwidth-gbs 4416 2>&1 | tee "$OUT/bench_tree.log"

serve_and_ask() {  # port, json file, label, arbor args...
  local port=$1 body=$2 label=$3
  shift 3
  LD_LIBRARY_PATH=$lib "$b/bin/arbor" serve --port "$port" "$@" >"$OUT/serve_$label.log" 2>&1 &
  local pid=$!
  wait_health "$port" 240 && ask "$port" "$body" "$label" 300
  stop_server $pid server
  grep -E "context-parallel|serving|tok/s|finished|error" "$OUT/serve_$label.log" | tail -8
}
echo "== arbor serve --context-parallel 1 --cp-backend nccl (demo model)"
echo '{"prompt":"The jury said","max_tokens":32,"temperature":0,"stream":true}' >/tmp/short.json
serve_and_ask 18100 /tmp/short.json nccl1 --context-parallel 1 --cp-backend nccl
echo "== arbor serve (plain, demo model) for comparison"
serve_and_ask 18101 /tmp/short.json plain
echo "== arbor serve --context-parallel 2 --cp-backend local, dummy Llama-3.1-8B, long document"
m=/tmp/llama-3.1-8b-dummy
mkdir -p $m
cp bench/models/llama-3.1-8b/config.json tests/fixtures/tokenizers/llama3/tokenizer.json \
  tests/fixtures/tokenizers/llama3/tokenizer_config.json $m/
python3 tools/long_document_request.py "$words" >/tmp/long.json
serve_and_ask 18102 /tmp/long.json cp2_long --model $m --load-format dummy --context-parallel 2 \
  --cp-backend local --max-num-seqs 4 --max-num-batched-tokens 8192
