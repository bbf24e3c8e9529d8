#!/usr/bin/env python3
"""Prints a streamed /v1/completions request whose prompt is a long synthetic document.

Usage: tools/long_document_request.py WORDS > body.json
WORDS random common English words (about one Llama-3 token each), then a question; greedy,
64 tokens, ignore_eos, usage in the last chunk. The same seed every time, so runs compare.
"""
import json
import random
import sys

random.seed(1)
vocab = "the of and to in a is that for it as was with be by on not he this are or his from".split()
doc = " ".join(random.choice(vocab) for _ in range(int(sys.argv[1])))
print(json.dumps({"prompt": "Document: " + doc + "\nQuestion: what is it about?\nAnswer:",
                  "max_tokens": 64, "temperature": 0, "ignore_eos": True, "stream": True,
                  "stream_options": {"include_usage": True}}))
