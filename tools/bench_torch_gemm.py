#!/usr/bin/env python3
"""Peer numbers for bench/gemm.cu: torch.nn.functional.linear(x, w) for x [m, k] and
w [n, k] in bf16 (the product a Hugging Face Llama layer runs), timed with CUDA events.
Prints one JSON object per line:

  {"m": 8192, "n": 6144, "k": 4096, "us": 512.3}

or, when the shape cannot run, the same keys with "error" instead of "us". The time is the
median of 3 timings of --iters back-to-back calls, after a warm-up.

  python3 tools/bench_torch_gemm.py --shapes 8192:6144:4096,8192:4096:4096 --iters 20
"""
import argparse
import json
import sys


def shapes(s):
    return [tuple(int(v) for v in item.split(":")) for item in s.split(",") if item]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shapes", type=shapes, required=True, help="m:n:k,...")
    ap.add_argument("--iters", type=int, default=20)
    a = ap.parse_args()
    try:
        import torch
        import torch.nn.functional as F
    except Exception as e:  # report, so the caller's table says why the column is empty
        for m, n, k in a.shapes:
            print(json.dumps({"m": m, "n": n, "k": k, "error": f"torch unavailable: {e}"}))
        return 0
    dev = torch.device("cuda")
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(dev)}", file=sys.stderr)
    for m, n, k in a.shapes:
        try:
            x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
            w = torch.randn(n, k, device=dev, dtype=torch.bfloat16) * 0.02
            for _ in range(3):
                F.linear(x, w)
            times = []
            for _ in range(3):
                start = torch.cuda.Event(enable_timing=True)
                stop = torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(a.iters):
                    F.linear(x, w)
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop) * 1e3 / a.iters)
            times.sort()
            print(json.dumps({"m": m, "n": n, "k": k, "us": times[1]}), flush=True)
            del x, w
        except Exception as e:
            print(json.dumps({"m": m, "n": n, "k": k, "error": str(e)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
