#!/usr/bin/env bash
# On a multi-GPU machine (nvidia-h200-x2 and up): the multi-GPU issue's runs from a bundle in
# .device/b2 (bin: arbor, arbor_gpu_tests, arbor_bench_tree; lib: tools/bundle_gpu.sh's).
#
#   tools/device_multi_gpu.sh checks      (about 6 minutes on 2 GPUs)
#     1. GPU tests of the communicators and context parallelism (NCCL across every GPU)
#     2. bench/tree: NCCL combine for p = 1.. GPUs, shard attention, real runners at
#        32k..1M, ring vs tree over NCCL at the model table's contexts
#     3. arbor serve --context-parallel <all GPUs> (NCCL, one process), dummy 8B, a 30k-word
#        document over curl -N, then SIGTERM: the exit must be clean
#     4. two processes as two "nodes" (--nnodes 2, TCP rendezvous), NCCL forced onto its
#        network transport (NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1), a 30k-word document
#     5. bench/tree again with NCCL on its network transport: the slower-link combine
#   tools/device_multi_gpu.sh long WORDS  (1M words: about 9 minutes on 2 H200s)
#     3 alone, with a WORDS-word document (about one Llama-3 token per word)
# Logs go to $OUT.
set -uo pipefail
source "$(dirname "$0")/device_serve.sh"
mode=${1:-checks}
b=$PWD/.device/b2
lib=$b/lib:/usr/local/cuda/lib64
export ARBOR_SOURCE_DIR=$PWD
gpus=$(nvidia-smi -L | wc -l)
nvidia-smi -L
nvidia-smi topo -m 2>/dev/null | head -6

m=/tmp/llama-3.1-8b-1m
mkdir -p $m
python3 - "$m" <<'PY'
import json, sys
c = json.load(open("bench/models/llama-3.1-8b/config.json"))
c["max_position_embeddings"] = 1048576  # long-document serving; RoPE as configured
json.dump(c, open(sys.argv[1] + "/config.json", "w"))
PY
cp tests/fixtures/tokenizers/llama3/tokenizer.json tests/fixtures/tokenizers/llama3/tokenizer_config.json $m/

serve_one_process() {  # words, label, seconds to wait for the answer
  python3 tools/long_document_request.py "$1" >/tmp/doc_$2.json
  LD_LIBRARY_PATH=$lib "$b/bin/arbor" serve --port 18200 --model $m --load-format dummy \
    --context-parallel "$gpus" --max-num-seqs 4 --max-num-batched-tokens 8192 \
    >"$OUT/serve_$2.log" 2>&1 &
  local pid=$!
  wait_health 18200 300 && ask 18200 /tmp/doc_$2.json "$2" "$3"
  stop_server $pid server
  grep -E "context-parallel rank|serving|error|shut" "$OUT/serve_$2.log" | tail -6
}

if [[ $mode == long ]]; then
  words=${2:-1000000}
  echo "== arbor serve --context-parallel $gpus (NCCL), dummy 8B with a 1M context, $words words"
  serve_one_process "$words" long 560
  exit 0
fi

echo "== GPU tests [comm], [cp] on $gpus GPUs"
LD_LIBRARY_PATH=$lib timeout 240 "$b/bin/arbor_gpu_tests" "[comm],[cp]" 2>&1 |
  tee "$OUT/gpu_tests_multi.log" | grep -v "^\[" | tail -6
echo "== bench/tree"
LD_LIBRARY_PATH=$lib timeout 300 "$b/bin/arbor_bench_tree" --model $m \
  --contexts 131072,524288,1048576 --e2e-contexts 32768,131072,524288,1040000 --sim-ranks 2 \
  --project-bandwidth-gbs 4416 2>&1 | grep -v "^\[" | tee "$OUT/bench_tree_multi.log"

echo "== arbor serve --context-parallel $gpus (NCCL), 30k words, clean exit"
serve_one_process 30000 cp_nccl 120

echo "== two nodes (processes) over NCCL's network transport, 30k words"
python3 tools/long_document_request.py 30000 >/tmp/mid.json
for node in 0 1; do
  CUDA_VISIBLE_DEVICES=$node NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 NCCL_DEBUG=INFO \
    LD_LIBRARY_PATH=$lib "$b/bin/arbor" serve --port $((18300 + node)) --model $m \
    --load-format dummy --context-parallel 2 --nnodes 2 --node-rank $node \
    --master-addr 127.0.0.1 --master-port 29533 --max-num-seqs 4 --max-num-batched-tokens 8192 \
    >"$OUT/serve_node$node.log" 2>&1 &
  eval "pid$node=\$!"
done
wait_health 18300 300 && ask 18300 /tmp/mid.json two_nodes 120
stop_server "$pid0" "node 0"
await_exit "$pid1" "node 1"  # it stops on its own when the leader does
grep -hE "context-parallel rank|serving|error|leader|NET/Socket|via NET" \
  "$OUT/serve_node0.log" "$OUT/serve_node1.log" | sort -u | tail -12

echo "== bench/tree with NCCL on its network transport (sockets over loopback)"
NCCL_P2P_DISABLE=1 NCCL_SHM_DISABLE=1 LD_LIBRARY_PATH=$lib timeout 300 "$b/bin/arbor_bench_tree" \
  --model $m --contexts 131072,524288,1048576 --e2e-contexts 32768 --sim-ranks 2 2>&1 |
  grep -v "^\[" | tee "$OUT/bench_tree_sockets.log"
