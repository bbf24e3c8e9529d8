# A random Llama-3.1-8B-shaped model in Hugging Face layout (bf16 safetensors), for the
# zeux/calm peer (tools/calm_peer.sh), which needs its own converted file.
# Usage: calm_model.py CONFIG TOKENIZER OUT
import json, os, shutil, sys, time
import torch, transformers
config_path, tokenizer_path, out = sys.argv[1:4]
t = time.time()
cfg = transformers.AutoConfig.from_pretrained(os.path.dirname(config_path))
torch.set_default_dtype(torch.bfloat16)
with torch.device("cuda"):
    model = transformers.LlamaForCausalLM(cfg)
model.save_pretrained(out, safe_serialization=True)
c = json.load(open(os.path.join(out, "config.json")))
c["eos_token_id"] = 128009  # calm reads one id
json.dump(c, open(os.path.join(out, "config.json"), "w"))
shutil.copy(tokenizer_path, os.path.join(out, "tokenizer.json"))
print(f"model written in {time.time() - t:.1f} s", flush=True)
