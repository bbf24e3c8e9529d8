#!/usr/bin/env bash
# On a multi-GPU machine (nvidia-h200-x2 and up): the multi-GPU issue's runs from a bundle in
# .device/b2 (bin: arbor, arbor_gpu_tests, arbor_bench_tree; lib: tools/bundle_gpu.sh's).
#   1. GPU tests of the communicators and context parallelism (NCCL across every GPU)
#   2. bench/tree: NCCL combine for p = 2.. GPUs, ring vs tree over NCCL, real runners
#   3. arbor serve --context-parallel <all GPUs> (NCCL, one process), dummy 8B, a long
#      document (PROMPT_WORDS words) over curl -N
#   4. two processes as two "nodes" (--nnodes 2, TCP rendezvous), NCCL forced onto its
#      network transport (NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1), a 32k-token prompt
# Logs go to $OUT. Usage: tools/device_multi_gpu.sh [PROMPT_WORDS]
set -uo pipefail
b=$PWD/.device/b2
lib=$b/lib:/usr/local/cuda/lib64
export ARBOR_SOURCE_DIR=$PWD
words=${1:-200000}
gpus=$(nvidia-smi -L | wc -l)
nvidia-smi -L
nvidia-smi topo -m 2>/dev/null | head -6
echo "== GPU tests [comm], [cp] on $gpus GPUs"
LD_LIBRARY_PATH=$lib timeout 240 "$b/bin/arbor_gpu_tests" "[comm],[cp]" 2>&1 |
  tee "$OUT/gpu_tests_multi.log" | grep -v "^\[" | tail -6
echo "== bench/tree"
LD_LIBRARY_PATH=$lib timeout 240 "$b/bin/arbor_bench_tree" --model bench/models/llama-3.1-8b \
  --contexts 131072,524288,1048576 --sim-ranks 2 --project-bandwidth-gbs 4416 2>&1 |
  grep -v "^\[" | tee "$OUT/bench_tree_multi.log"

m=/tmp/llama-3.1-8b-1m
mkdir -p $m
python3 - "$m" <<'PY'
import json, sys
c = json.load(open("bench/models/llama-3.1-8b/config.json"))
c["max_position_embeddings"] = 1048576  # long-document serving; RoPE as configured
json.dump(c, open(sys.argv[1] + "/config.json", "w"))
PY
cp tests/fixtures/tokenizers/llama3/tokenizer.json tests/fixtures/tokenizers/llama3/tokenizer_config.json $m/
wait_health() {
  for _ in $(seq 300); do
    curl -sf "localhost:$1/health" >/dev/null && return 0
    sleep 1
  done
  return 1
}
ask() {  # port, body, label
  local t0 t1
  t0=$(date +%s.%N)
  curl -sN "localhost:$1/v1/completions" -H 'Content-Type: application/json' -d @"$2" >"$OUT/stream_$3.txt"
  t1=$(date +%s.%N)
  echo "-- $3: $(grep -c '^data: {' "$OUT/stream_$3.txt") chunks in $(python3 -c "print(round($t1 - $t0, 1))") s; usage:"
  grep -o '"usage":{[^}]*}' "$OUT/stream_$3.txt" | tail -1
  tail -c 20 "$OUT/stream_$3.txt"
}

echo "== arbor serve --context-parallel $gpus (NCCL), dummy 8B with a 1M context, $words words"
python3 tools/long_document_request.py "$words" >/tmp/long.json
LD_LIBRARY_PATH=$lib "$b/bin/arbor" serve --port 18200 --model $m --load-format dummy \
  --context-parallel "$gpus" --max-num-seqs 4 --max-num-batched-tokens 8192 \
  >"$OUT/serve_cp_nccl.log" 2>&1 &
pid=$!
wait_health 18200 && ask 18200 /tmp/long.json cp_nccl
kill -TERM $pid
wait $pid
echo "exit $?"
grep -E "context-parallel rank|serving|prompt_tokens|error" "$OUT/serve_cp_nccl.log" | tail -6

echo "== two nodes (processes) over NCCL's network transport, 32k-token prompt"
python3 tools/long_document_request.py 30000 >/tmp/mid.json
for node in 0 1; do
  CUDA_VISIBLE_DEVICES=$node NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 LD_LIBRARY_PATH=$lib \
    "$b/bin/arbor" serve --port $((18300 + node)) --model $m --load-format dummy \
    --context-parallel 2 --nnodes 2 --node-rank $node --master-addr 127.0.0.1 \
    --master-port 29533 --max-num-seqs 4 --max-num-batched-tokens 8192 \
    >"$OUT/serve_node$node.log" 2>&1 &
  eval "pid$node=\$!"
done
wait_health 18300 && ask 18300 /tmp/mid.json two_nodes
kill -TERM "$pid0"
wait "$pid0"
echo "node 0 exit $?"
timeout 60 tail --pid="$pid1" -f /dev/null
wait "$pid1"
echo "node 1 exit $?"
grep -E "context-parallel rank|serving|prompt_tokens|error|leader|NCCL INFO NET" \
  "$OUT/serve_node0.log" "$OUT/serve_node1.log" | tail -10
