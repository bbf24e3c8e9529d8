#!/usr/bin/env bash
# On the GPU machine: makes the test fixtures and trains the demo model, then packs both
# into $OUT/assets.tar.gz. Expects the corpus text in .device/brown/ (carried) and the
# tokenizers in tests/fixtures/tokenizers/.
set -euo pipefail
export PYTHONUNBUFFERED=1
mkdir -p /tmp/assets/fixtures /tmp/assets/demo
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
python3 -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'
python3 tools/make_fixtures.py --tokenizer tests/fixtures/tokenizers/brown512.model \
  --out /tmp/assets/fixtures 2>&1 | tee "$OUT/fixtures.log" || echo "FIXTURES FAILED"
python3 tools/train_demo.py --train .device/brown/train.txt --valid .device/brown/valid.txt \
  --tokenizer tests/fixtures/tokenizers/brown4096.model --out /tmp/assets/demo \
  --seconds "${DEMO_SECONDS:-240}" 2>&1 | tee "$OUT/demo.log" || echo "DEMO FAILED"
tar czf "$OUT/assets.tar.gz" -C /tmp/assets fixtures demo
ls -la "$OUT"
