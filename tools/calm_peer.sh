#!/usr/bin/env bash
# zeux/calm, the single-batch C/CUDA engine bench/RESULTS.md compares against, on the GPU
# machine. Nothing of calm is committed here; it is fetched, patched for CUDA 13 and built.
#
#   tools/calm_peer.sh build CALM_CHECKOUT BUNDLE   (here: builds BUNDLE/bin/calm_run for sm_90a)
#   tools/calm_peer.sh run BUNDLE                   (GPU machine, from the repository root)
#
# `run` writes a random Llama-3.1-8B-shaped model in Hugging Face layout (tools/calm_model.py),
# converts it with calm's tools/convert.py to fp16 weights, and prints calm's throughput for
# 256, 1024 and 2048 generated tokens (average contexts of about 128, 512 and 1024).
set -euo pipefail
case "${1:-}" in
  build)
    src=${2:?calm checkout}
    bundle=${3:?bundle dir}
    work=$(mktemp -d)
    cp -r "$src"/. "$work"
    # CUDA 13 dropped the _ALIGNAS macro and cudaDeviceProp::memoryClockRate.
    sed -i 's/union _ALIGNAS(sizeof(T) \* N) ablock/union alignas(sizeof(T) * N) ablock/' \
      "$work/src/helpers.cuh"
    sed -i 's|(double)devprop.memoryClockRate \* (devprop.memoryBusWidth / 8) \* 2 / 1e6|0.0|' \
      "$work/src/infer.cu"
    make -C "$work" CUARCH=sm_90a LDFLAGS="-lm -fopenmp -lcudart -lstdc++ -L/usr/local/cuda/lib64"
    mkdir -p "$bundle/bin"
    cp "$work/build/run" "$bundle/bin/calm_run"
    cp "$work/tools/convert.py" "$bundle/calm_convert.py"
    rm -rf "$work"
    ;;
  run)
    bundle=${2:?bundle dir}
    python3 tools/calm_model.py bench/models/llama-3.1-8b/config.json \
      tests/fixtures/tokenizers/llama3/tokenizer.json /tmp/calm-8b
    python3 "$bundle/calm_convert.py" /tmp/calm-8b.calm /tmp/calm-8b --dtype fp16 | tail -n 1
    rm -rf /tmp/calm-8b
    for n in 256 1024 2048; do
      "$bundle/bin/calm_run" /tmp/calm-8b.calm -n "$n" -i "Once upon a time" -t 0 2>&1 >/dev/null |
        grep throughput
    done
    ;;
  *)
    echo "usage: calm_peer.sh build CALM_CHECKOUT BUNDLE | run BUNDLE" >&2
    exit 2
    ;;
esac
