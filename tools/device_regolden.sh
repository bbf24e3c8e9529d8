#!/usr/bin/env bash
# On the GPU machine: remakes the test fixtures' goldens and the demo model's goldens and
# metrics from the committed model files (no training), packed into $OUT/assets.tar.gz.
set -euo pipefail
export PYTHONUNBUFFERED=1
mkdir -p /tmp/assets/fixtures
cp -r models/demo /tmp/assets/demo
python3 tools/make_fixtures.py --tokenizer tests/fixtures/tokenizers/brown512.model \
  --out /tmp/assets/fixtures 2>&1 | tee "$OUT/fixtures.log"
python3 tools/train_demo.py --golden-only --train .device/brown/train.txt \
  --valid .device/brown/valid.txt --tokenizer tests/fixtures/tokenizers/brown4096.model \
  --out /tmp/assets/demo 2>&1 | tee "$OUT/demo.log"
tar czf "$OUT/assets.tar.gz" -C /tmp/assets fixtures demo
