#!/usr/bin/env python3
"""Peer numbers for bench/attention.cu: torch scaled_dot_product_attention for one decode
token per sequence (q [B, Hq, 1, D] over dense K/V [B, Hkv, L, D], bf16) with the flash and
cuDNN backends. Prints one JSON object per line:

  {"batch": 1, "context": 4096, "backend": "flash", "us": 12.3, "graph_us": 5.1, ...}

or, when a backend cannot run the shape, the same keys with "error" instead of "us".
Both times rotate over enough K/V copies that they exceed L2, like the arbor benchmark:
"us" is the median of single calls timed with CUDA events (launch latency included);
"graph_us" the median time per call of a CUDA graph that replays --layers calls back to
back, as arbor's "graph_us/ly" (when capture fails, "graph_error" says why).

  python3 tools/bench_sdpa.py --batch 1,8 --context 1024,4096 --hq 32 --hkv 8 --head-dim 128
"""
import argparse
import json
import math
import sys


def ints(s):
    return [int(x) for x in s.split(",") if x]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=ints, default=[1, 8])
    ap.add_argument("--context", type=ints, default=[1024, 4096, 32768])
    ap.add_argument("--hq", type=int, default=32)
    ap.add_argument("--hkv", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--layers", type=int, default=32, help="most K/V copies to rotate over")
    ap.add_argument("--backends", default="flash,cudnn")
    a = ap.parse_args()

    try:
        import torch
        import torch.nn.functional as F
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except Exception as e:  # report, so the caller's table says why the column is empty
        for b in a.batch:
            for c in a.context:
                for name in a.backends.split(","):
                    emit(b, c, name, error=f"torch unavailable: {e}")
        return 0

    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}
    dev = torch.device("cuda")
    props = torch.cuda.get_device_properties(dev)
    l2 = getattr(props, "L2_cache_size", 50 << 20)
    print(f"torch {torch.__version__}, {props.name}", file=sys.stderr)
    group = a.hq // a.hkv
    scale = 1.0 / math.sqrt(a.head_dim)

    for b in a.batch:
        for c in a.context:
            kv_bytes = 2 * b * a.hkv * c * a.head_dim * 2
            free, _ = torch.cuda.mem_get_info()
            copies = max(1, min(a.layers, math.ceil(4 * l2 / kv_bytes)))
            copies = min(copies, int(0.4 * free // kv_bytes))
            if copies == 0:
                for name in a.backends.split(","):
                    emit(b, c, name, error="K/V does not fit")
                continue
            q = torch.randn(b, a.hq, 1, a.head_dim, device=dev, dtype=torch.bfloat16)
            ks = [torch.randn(b, a.hkv, c, a.head_dim, device=dev, dtype=torch.bfloat16)
                  for _ in range(copies)]
            vs = [torch.randn_like(k) for k in ks]
            for name in a.backends.split(","):
                if name not in backends:
                    emit(b, c, name, error="unknown backend")
                    continue
                try:
                    us, graph = time_backend(torch, F, sdpa_kernel, backends[name], q, ks, vs,
                                             scale, True, a)
                    emit(b, c, name, us=us, **graph, gqa="native", copies=copies)
                except Exception as e_native:
                    # Some backends lack native GQA: repeat the KV heads (more bytes read).
                    try:
                        if 2 * group * kv_bytes > 0.4 * free:
                            raise RuntimeError("expanded K/V does not fit") from e_native
                        kx = [k.repeat_interleave(group, dim=1) for k in ks[:1]]
                        vx = [v.repeat_interleave(group, dim=1) for v in vs[:1]]
                        us, graph = time_backend(torch, F, sdpa_kernel, backends[name], q, kx,
                                                 vx, scale, False, a)
                        emit(b, c, name, us=us, **graph, gqa="expanded", copies=1)
                        del kx, vx
                    except Exception as e:
                        emit(b, c, name, error=one_line(e_native) + " / " + one_line(e))
            del q, ks, vs
            torch.cuda.empty_cache()
    return 0


def time_backend(torch, F, sdpa_kernel, backend, q, ks, vs, scale, gqa, a):
    """Median µs of a single call, and {"graph_us": ...} or {"graph_error": ...}."""
    kw = {"enable_gqa": True} if gqa else {}
    with sdpa_kernel(backend):
        call = lambda i: F.scaled_dot_product_attention(  # noqa: E731
            q, ks[i % len(ks)], vs[i % len(vs)], scale=scale, **kw)
        for i in range(a.warmup):
            call(i)
        torch.cuda.synchronize()
        single = median_us(torch, call, a.iters)
        try:
            graph = {"graph_us": time_graph(torch, call, a)}
        except Exception as e:  # a backend that cannot be captured keeps its single-call time
            graph = {"graph_error": one_line(e)}
    return single, graph


def median_us(torch, run, n, calls_per_run=1):
    """Median µs per call of run(i), i = 0..n-1, each run timed alone with CUDA events."""
    start = torch.cuda.Event(enable_timing=True)
    stop = torch.cuda.Event(enable_timing=True)
    times = []
    for i in range(n):
        start.record()
        run(i)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1e3 / calls_per_run)
    return sorted(times)[len(times) // 2]


def time_graph(torch, call, a):
    """Median µs per call of a CUDA graph of a.layers calls, each on the next K/V copy."""
    side = torch.cuda.Stream()  # warm up off the default stream, as capture requires
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for i in range(3):
            call(i)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        outs = [call(i) for i in range(a.layers)]  # noqa: F841 (kept alive with the graph)
    for _ in range(max(3, a.warmup // 4)):
        graph.replay()
    torch.cuda.synchronize()
    us = median_us(torch, lambda _: graph.replay(), max(5, a.iters // 4), a.layers)
    del graph, outs
    return us


def one_line(e):
    return (type(e).__name__ + ": " + str(e)).splitlines()[0][:200]


def emit(batch, context, backend, **kw):
    print(json.dumps({"batch": batch, "context": context, "backend": backend, **kw}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
