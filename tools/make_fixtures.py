#!/usr/bin/env python3
"""Makes the tiny random Llama test fixtures and their golden values with HF transformers.

Runs where torch + transformers + sentencepiece are installed (the GPU machine; the
computation itself runs on the CPU in float32 so the goldens are deterministic).

For each fixture it writes, under OUT/<name>/:
  config.json, generation_config.json, model.safetensors (or shards + index),
  tokenizer.model, tokenizer_config.json       — an ordinary HF model folder
  golden.json   prompts (text, ids), per-prompt offsets into golden.logits.f32,
                32 greedy tokens per prompt and the top-2 logit gap at each greedy step
  golden.logits.f32   float32 little-endian logits, [prompt][position][vocab]

Fixtures:
  tiny-llama            fp32 weights, untied, GQA 4:2, default rope
  tiny-llama-tied-bf16  bf16 weights, tied embeddings, saved in several shards
  tiny-llama3-rope-f16  f16 weights, llama3 rope scaling, head_dim 32 ≠ hidden/heads
Usage: make_fixtures.py --tokenizer brown512.model --out tests/fixtures/models
"""
import argparse
import json
import os
import shutil

import numpy as np
import sentencepiece as spm
import torch
from transformers import LlamaConfig, LlamaForCausalLM

PROMPTS = [
    "The jury said",
    "In the beginning of the year, the city council met to discuss the new budget and "
    "the plans for the schools.",
    "1234 + 5678 = ?",
    # Long enough to span several KV blocks of 16 and to exercise many positions.
    "It was a bright cold day in April, and the clocks were striking thirteen. " * 6,
]
GREEDY_STEPS = 32


def base_config(**overrides):
    cfg = dict(
        vocab_size=512,
        hidden_size=64,
        intermediate_size=160,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        initializer_range=0.08,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
    )
    cfg.update(overrides)
    return LlamaConfig(**cfg)


FIXTURES = [
    dict(name="tiny-llama", dtype=torch.float32, shard=None, config=base_config()),
    dict(name="tiny-llama-tied-bf16", dtype=torch.bfloat16, shard="40KB",
         config=base_config(tie_word_embeddings=True)),
    dict(name="tiny-llama3-rope-f16", dtype=torch.float16, shard=None,
         config=base_config(head_dim=32, rope_theta=500000.0, eos_token_id=[2, 5],
                            max_position_embeddings=4096,
                            rope_scaling=dict(rope_type="llama3", factor=8.0, low_freq_factor=1.0,
                                              high_freq_factor=4.0,
                                              original_max_position_embeddings=64))),
]


def make_model(spec, seed):
    torch.manual_seed(seed)
    model = LlamaForCausalLM(spec["config"]).float().eval()
    with torch.no_grad():
        # HF initializes norm weights to 1; randomize them so a wrong norm weight shows.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
        # Round the weights to the storage dtype now, so the fp32 goldens are computed
        # from exactly the values the file holds.
        for p in model.parameters():
            p.copy_(p.to(spec["dtype"]).float())
    return model


@torch.no_grad()
def goldens(model, sp):
    out = {"prompts": []}
    logits_blobs = []
    offset = 0
    for text in PROMPTS:
        ids = [sp.bos_id()] + sp.encode(text)
        logits = model(torch.tensor([ids])).logits[0].float()
        blob = logits.numpy().astype("<f4")
        logits_blobs.append(blob.tobytes())
        seq = list(ids)
        greedy, gaps = [], []
        for _ in range(GREEDY_STEPS):
            last = model(torch.tensor([seq])).logits[0, -1].float()
            top2 = torch.topk(last, 2)
            tok = int(top2.indices[0])
            greedy.append(tok)
            gaps.append(float(top2.values[0] - top2.values[1]))
            seq.append(tok)
        out["prompts"].append(dict(text=text, ids=ids, logits_offset=offset,
                                   num_positions=len(ids), greedy=greedy, greedy_top2_gap=gaps))
        offset += blob.size
    return out, b"".join(logits_blobs)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    torch.set_num_threads(4)
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    for seed, spec in enumerate(FIXTURES):
        d = os.path.join(args.out, spec["name"])
        shutil.rmtree(d, ignore_errors=True)
        model = make_model(spec, 1234 + seed)
        save_kwargs = {}
        if spec["shard"]:
            save_kwargs["max_shard_size"] = spec["shard"]
        model.to(spec["dtype"]).save_pretrained(d, **save_kwargs)
        # Goldens come from the saved files, loaded the way any user of transformers would
        # (in float32). Reusing the in-memory model would be wrong: .to(bf16) also rounds
        # the rotary inv_freq buffer, which from_pretrained computes afresh in float32.
        model = LlamaForCausalLM.from_pretrained(d, dtype=torch.float32).eval()
        shutil.copy(args.tokenizer, os.path.join(d, "tokenizer.model"))
        with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
            json.dump({"add_bos_token": True, "add_eos_token": False,
                       "tokenizer_class": "LlamaTokenizer"}, f, indent=2)
        g, blob = goldens(model, sp)
        g["fixture"] = spec["name"]
        g["vocab_size"] = spec["config"].vocab_size
        g["note"] = "HF transformers %s, torch %s, float32 on CPU" % (
            __import__("transformers").__version__, torch.__version__)
        with open(os.path.join(d, "golden.json"), "w") as f:
            json.dump(g, f, indent=1)
        with open(os.path.join(d, "golden.logits.f32"), "wb") as f:
            f.write(blob)
        min_gap = min(min(p["greedy_top2_gap"]) for p in g["prompts"])
        print(f"{spec['name']}: {sorted(os.listdir(d))} min greedy top-2 gap {min_gap:.2e}")


if __name__ == "__main__":
    main()
