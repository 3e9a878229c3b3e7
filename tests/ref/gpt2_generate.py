#!/usr/bin/python3
"""gpt2_generate.py — greedy continuation with the PyTorch reference model.

  gpt2_generate.py MODEL N ID [ID ...]
      prints N greedily generated ids after the prompt ids, one line,
      recomputing the whole sequence each step (no cache) in float64.
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_ref  # noqa: E402


def main(argv):
    model, _ = gpt2_ref.load(argv[0], torch.float64)
    n = int(argv[1])
    ids = [int(a) for a in argv[2:]]
    out = []
    with torch.no_grad():
        for _ in range(n):
            logits = model.forward(torch.tensor([ids + out]))
            out.append(int(logits[0, -1].argmax()))
    print(" ".join(str(i) for i in out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
