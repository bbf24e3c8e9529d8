#!/usr/bin/env python3
"""Trains arbor's embedded demo model: a ~5.5M-parameter Llama on the Brown corpus.

Runs on a GPU host with torch + transformers + sentencepiece. Input: the corpus text made
by tools/train_tokenizer.sh (one document per line) and its 4096-piece SentencePiece model.
Output: an ordinary Hugging Face model folder (bf16 safetensors, tokenizer.model, configs),
plus metrics.json (validation loss / perplexity of the saved bf16 weights evaluated in fp32,
as arbor computes) and golden.json/golden.logits.f32 for the demo model's golden test.

Usage: train_demo.py --train train.txt --valid valid.txt --tokenizer brown4096.model \
           --out models/demo [--seconds 240]
"""
import argparse
import json
import math
import os
import shutil
import time

import sentencepiece as spm
import torch
import torch.nn.functional as F
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

SEQ_LEN = 256


def encode_docs(path, sp):
    ids = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                ids += [sp.bos_id()] + sp.encode(line) + [sp.eos_id()]
    return torch.tensor(ids, dtype=torch.long)


def batches(data, batch, gen):
    while True:
        starts = torch.randint(0, len(data) - SEQ_LEN - 1, (batch,), generator=gen)
        x = torch.stack([data[s:s + SEQ_LEN] for s in starts])
        y = torch.stack([data[s + 1:s + SEQ_LEN + 1] for s in starts])
        yield x, y


@torch.no_grad()
def evaluate(model, data, device, dtype=torch.bfloat16):
    model.eval()
    n = (len(data) - 1) // SEQ_LEN
    x = data[:n * SEQ_LEN].view(n, SEQ_LEN)
    y = data[1:n * SEQ_LEN + 1].view(n, SEQ_LEN)
    total, count = 0.0, 0
    for i in range(0, n, 64):
        xb, yb = x[i:i + 64].to(device), y[i:i + 64].to(device)
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            logits = model(xb).logits.float()
        total += F.cross_entropy(logits.view(-1, logits.size(-1)), yb.view(-1), reduction="sum").item()
        count += yb.numel()
    model.train()
    return total / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", required=True)
    ap.add_argument("--valid", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seconds", type=float, default=240)
    ap.add_argument("--max-steps", type=int, default=6000)
    ap.add_argument("--golden-only", action="store_true",
                    help="skip training; re-measure the model in --out and remake its goldens")
    args = ap.parse_args()
    device = "cuda"
    torch.manual_seed(0)
    sp = spm.SentencePieceProcessor(model_file=args.tokenizer)
    train, valid = encode_docs(args.train, sp), encode_docs(args.valid, sp)
    if args.golden_only:
        with open(os.path.join(args.out, "metrics.json")) as f:
            metrics = json.load(f)
        finish(args.out, valid, sp, metrics)
        return
    print(f"train tokens {len(train)}, valid tokens {len(valid)}", flush=True)

    config = LlamaConfig(vocab_size=sp.get_piece_size(), hidden_size=256, intermediate_size=704,
                         num_hidden_layers=6, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, rms_norm_eps=1e-5, rope_theta=10000.0,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         attention_dropout=0.1, initializer_range=0.02)
    model = LlamaForCausalLM(config).to(device)
    # Residual-branch dropout (HF Llama has none): Brown is ~1.3M tokens, far less than a
    # 5.5M-parameter model would like, so regularize and keep the best validation checkpoint.
    for layer in model.model.layers:
        for m in (layer.self_attn.o_proj, layer.mlp.down_proj):
            m.register_forward_hook(lambda mod, inp, out: F.dropout(out, 0.1, mod.training))
    params = sum(p.numel() for p in model.parameters())
    print(f"parameters {params / 1e6:.2f}M", flush=True)

    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=2e-3, betas=(0.9, 0.95), fused=True)
    warmup, total_steps = 200, args.max_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * max(0.1, 0.5 * (1 + math.cos(math.pi * min(1.0, s / total_steps)))))
    gen = torch.Generator().manual_seed(0)
    it = batches(train, 64, gen)
    best, best_state, best_step = float("inf"), None, 0
    t0 = time.time()
    step = 0
    while step < total_steps and time.time() - t0 < args.seconds:
        x, y = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits = model(x).logits
        loss = F.cross_entropy(logits.float().view(-1, logits.size(-1)), y.view(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        step += 1
        if step % 200 == 0:
            vl = evaluate(model, valid, device)
            if vl < best:
                best, best_step = vl, step
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            print(f"step {step} train {loss.item():.3f} valid {vl:.3f} ppl {math.exp(vl):.1f} "
                  f"({time.time() - t0:.0f}s)", flush=True)
    vl = evaluate(model, valid, device)
    if vl < best:
        best, best_step, best_state = vl, step, None
    if best_state is not None:
        model.load_state_dict(best_state)

    model.to(torch.bfloat16).save_pretrained(args.out)
    GenerationConfig(bos_token_id=1, eos_token_id=2, do_sample=True, temperature=0.8,
                     top_p=0.95).save_pretrained(args.out)
    shutil.copy(args.tokenizer, os.path.join(args.out, "tokenizer.model"))
    with open(os.path.join(args.out, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": True, "add_eos_token": False,
                   "tokenizer_class": "LlamaTokenizer"}, f, indent=2)
    finish(args.out, valid, sp, dict(parameters=params, train_tokens=len(train), steps=step,
                                     best_step=best_step, seconds=time.time() - t0))


def finish(out, valid, sp, metrics):
    """Measures what arbor will compute: the saved bf16 weights, loaded by transformers in
    float32 (a fresh load, so the rotary frequencies are float32 as in any HF run), on the
    validation split; writes metrics.json, golden values, and prints a few samples."""
    device = "cuda"
    model = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32).to(device).eval()
    vl = evaluate(model, valid, device, dtype=torch.float32)
    metrics.update(valid_tokens=len(valid), valid_loss=vl, valid_perplexity=math.exp(vl),
                   seq_len=SEQ_LEN, device=torch.cuda.get_device_name())
    with open(os.path.join(out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    print(json.dumps(metrics), flush=True)

    # Golden values for the demo model (fp32 on CPU), and a few samples to look at.
    # evaluate() leaves the model in training mode (dropout on): back to eval first.
    model.cpu().eval()
    vocab = model.config.vocab_size
    prompts = ["The jury said", "It was a cold morning, and"]
    golden, blobs, offset = {"prompts": []}, [], 0
    with torch.no_grad():
        for text in prompts:
            ids = [1] + sp.encode(text)
            logits = model(torch.tensor([ids])).logits[0]
            blobs.append(logits.numpy().astype("<f4").tobytes())
            seq, greedy, gaps = list(ids), [], []
            for _ in range(32):
                last = model(torch.tensor([seq])).logits[0, -1]
                top2 = torch.topk(last, 2)
                greedy.append(int(top2.indices[0]))
                gaps.append(float(top2.values[0] - top2.values[1]))
                seq.append(greedy[-1])
            golden["prompts"].append(dict(text=text, ids=ids, logits_offset=offset,
                                          num_positions=len(ids), greedy=greedy,
                                          greedy_top2_gap=gaps))
            offset += len(ids) * vocab
            print(f"greedy: {text!r} -> {sp.decode(greedy)!r}", flush=True)
            try:
                sample = model.generate(torch.tensor([ids]), do_sample=True, temperature=0.8,
                                        top_p=0.95, max_new_tokens=60)
                print(f"sample: {sp.decode(sample[0].tolist())!r}", flush=True)
            except Exception as e:  # samples are only for looking at
                print(f"sample failed: {e}", flush=True)
    golden["vocab_size"] = vocab
    with open(os.path.join(out, "golden.json"), "w") as f:
        json.dump(golden, f, indent=1)
    with open(os.path.join(out, "golden.logits.f32"), "wb") as f:
        f.write(b"".join(blobs))


if __name__ == "__main__":
    main()
