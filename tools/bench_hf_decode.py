#!/usr/bin/env python3
"""Peer for bench/decode: Hugging Face transformers' own decode speed on the same GPU.

Builds a Llama with random bf16 weights from a config.json (as arbor's --load-format dummy),
prefills `context` random tokens per sequence and times greedy decoding of `steps` tokens
with transformers' default (dynamic) KV cache, eager, as most users run it. Prints one JSON
line per (batch, context): {"batch", "context", "tok_s", "impl"}.
Usage: bench_hf_decode.py --model bench/models/llama-3.1-8b --batch 1,64 --context 1024
"""
import argparse
import json
import os
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--batch", default="1")
    ap.add_argument("--context", default="1024")
    ap.add_argument("--steps", type=int, default=32)
    args = ap.parse_args()
    with open(os.path.join(args.model, "config.json")) as f:
        config = LlamaConfig(**json.load(f))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    for ctx in map(int, args.context.split(",")):
        for batch in map(int, args.batch.split(",")):
            ids = torch.randint(0, config.vocab_size, (batch, ctx), device="cuda")
            with torch.no_grad():
                model.generate(ids, max_new_tokens=2, min_new_tokens=2, do_sample=False)  # warm-up
                torch.cuda.synchronize()
                t0 = time.time()
                out = model.generate(ids, max_new_tokens=1, min_new_tokens=1, do_sample=False)
                torch.cuda.synchronize()
                prefill = time.time() - t0
                t0 = time.time()
                out = model.generate(ids, max_new_tokens=args.steps + 1,
                                     min_new_tokens=args.steps + 1, do_sample=False)
                torch.cuda.synchronize()
                total = time.time() - t0
            decode = max(total - prefill, 1e-9)
            print(json.dumps(dict(batch=batch, context=ctx, tok_s=batch * args.steps / decode,
                                  impl="transformers %s eager, torch %s" % (
                                      __import__("transformers").__version__,
                                      torch.__version__))), flush=True)
            del out


if __name__ == "__main__":
    main()
