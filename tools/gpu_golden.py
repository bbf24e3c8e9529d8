#!/usr/bin/env python3
"""Golden greedy runs of Hugging Face transformers in bf16 on the GPU, for arbor's CUDA model.

Writes OUT/<name>/golden.json with the prompt ids, 64 greedy token ids and, per step, HF's
top-5 (id, logit) so a divergence can be shown to be a near-tie. Models:
  demo        the shipped demo model (models/demo)
  llama8b-2l  a Llama-3.1-8B-shaped model (bench/models/llama-3.1-8b/config.json) cut to 2
              layers, random weights (seeded), saved to OUT/llama8b-2l/model (bf16, ~3 GB)
Usage: gpu_golden.py --out DIR [--steps 64]
"""
import argparse
import json
import os

import torch
from transformers import LlamaConfig, LlamaForCausalLM


@torch.no_grad()
def greedy(model, ids, steps):
    seq = torch.tensor([ids], device="cuda")
    out, tops = [], []
    for _ in range(steps):
        logits = model(seq).logits[0, -1].float()
        v, i = torch.topk(logits, 5)
        tops.append([[int(a), float(b)] for a, b in zip(i.tolist(), v.tolist())])
        tok = int(i[0])
        out.append(tok)
        seq = torch.cat([seq, torch.tensor([[tok]], device="cuda")], dim=1)
    return out, tops


def write(out_dir, model_dir, prompts, model, steps):
    os.makedirs(out_dir, exist_ok=True)
    runs = []
    for ids in prompts:
        g, tops = greedy(model, ids, steps)
        runs.append(dict(prompt_ids=ids, greedy=g, top5=tops))
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(dict(model_dir=model_dir, runs=runs,
                       note="transformers %s bf16 on %s" % (
                           __import__("transformers").__version__,
                           torch.cuda.get_device_name())), f)
    print(out_dir, [r["greedy"][:8] for r in runs], flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--steps", type=int, default=64)
    ap.add_argument("--repo", default=".")
    args = ap.parse_args()

    demo = os.path.join(args.repo, "models/demo")
    model = LlamaForCausalLM.from_pretrained(demo, dtype=torch.bfloat16).cuda().eval()
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=os.path.join(demo, "tokenizer.model"))
    prompts = [[1] + sp.encode(t) for t in ["The jury said", "It was a cold morning, and"]]
    write(os.path.join(args.out, "demo"), os.path.abspath(demo), prompts, model, args.steps)
    del model

    with open(os.path.join(args.repo, "bench/models/llama-3.1-8b/config.json")) as f:
        cfg = json.load(f)
    cfg["num_hidden_layers"] = 2
    torch.manual_seed(0)
    config = LlamaConfig(**cfg)
    model = LlamaForCausalLM(config).to(torch.bfloat16).cuda().eval()
    model_dir = os.path.join(args.out, "llama8b-2l", "model")
    model.save_pretrained(model_dir)
    del model
    # Reload from the files, as any user would (fresh float32 rotary frequencies).
    model = LlamaForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16).cuda().eval()
    g = torch.Generator().manual_seed(1)
    prompts = [[128000] + torch.randint(0, 128000, (n,), generator=g).tolist() for n in (7, 300)]
    write(os.path.join(args.out, "llama8b-2l"), os.path.abspath(model_dir), prompts, model,
          args.steps)


if __name__ == "__main__":
    main()
