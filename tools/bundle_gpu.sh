#!/usr/bin/env bash
# Packs binaries built here (Debian) for the GPU machine (Ubuntu, no Debian libraries):
# BUNDLE/bin gets the executables, BUNDLE/lib the non-CUDA shared libraries they link that
# the GPU machine lacks (CUDA's own libraries are there, same major version).
# Usage: tools/bundle_gpu.sh BUILD_DIR BUNDLE_DIR
set -euo pipefail
build=${1:?usage: bundle_gpu.sh BUILD_DIR BUNDLE_DIR}
bundle=${2:?usage: bundle_gpu.sh BUILD_DIR BUNDLE_DIR}
rm -rf "$bundle"
mkdir -p "$bundle/bin" "$bundle/lib"
# What was built: the source commit (and whether the tree had changes), shown on the GPU
# machine by tools/device_decode_attention.sh.
git -C "$(dirname "$0")/.." describe --always --dirty >"$bundle/COMMIT"
for exe in server/arbor tests/arbor_gpu_tests bench/arbor_bench_attention \
  bench/arbor_bench_attention_trace \
  bench/arbor_bench_prefill_attention bench/arbor_bench_decode bench/arbor_bench_serve_offline \
  bench/arbor_bench_tree bench/arbor_bench_gemv bench/arbor_bench_gemm; do
  [[ -x "$build/$exe" ]] && cp "$build/$exe" "$bundle/bin/"
done
for exe in "$bundle"/bin/*; do
  ldd "$exe" | awk '/=> \// {print $3}'
done | sort -u | while read -r lib; do
  case "$(basename "$lib")" in
    libc.so* | libm.so* | libdl.so* | libpthread.so* | librt.so* | ld-linux* | libcuda* | \
      libcublas* | libnccl* | libstdc++* | libgcc_s*) ;;
    *) cp -L "$lib" "$bundle/lib/" ;;
  esac
done
du -sh "$bundle"
ls "$bundle/lib"
