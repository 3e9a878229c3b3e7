#!/usr/bin/python3
"""shakespeare_peer.py — nanoGPT's CPU recipe for character-level
Shakespeare in plain PyTorch (the reference model of tests/ref), the peer
bench_shakespeare.sh compares gptline's trainer with.

  shakespeare_peer.py TEXT [THREADS]

90/10 split of TEXT; 4 layers, 4 heads, width 128, T=64, B=12, 2000
iterations of AdamW (beta2 0.99, weight decay 0.1 on matrices), lr 1e-3
warmed up over 100 steps and cosine-decayed to 1e-4, clipping at 1.0,
dropout 0; random training windows. Prints "ready" when the timed part
begins, then one JSON line: seconds of training plus the final evaluation
(its own clock), and the held-out loss over up to 200 batches of the
validation text.
"""
import json
import math
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import gpt2_ref  # noqa: E402

L, H, C, T, B, ITERS = 4, 4, 128, 64, 12, 2000
MAX_LR, MIN_LR, WARMUP = 1e-3, 1e-4, 100


def lr_at(it):
    if it < WARMUP:
        return MAX_LR * (it + 1) / WARMUP
    r = (it - WARMUP) / max(1, ITERS - WARMUP)
    return MIN_LR + 0.5 * (1 + math.cos(math.pi * min(r, 1.0))) * (MAX_LR - MIN_LR)


def main(argv):
    torch.manual_seed(1337)
    torch.set_num_threads(int(argv[1]) if len(argv) > 1 else 1)
    raw = open(argv[0], "rb").read()
    chars = sorted(set(raw))
    stoi = {c: i for i, c in enumerate(chars)}
    data = torch.tensor([stoi[c] for c in raw], dtype=torch.long)
    n = int(0.9 * len(data))
    train, val = data[:n], data[n:]
    V = len(chars)
    g = lambda *s: torch.randn(*s) * 0.02  # noqa: E731
    P = {"wte.weight": g(V, C), "wpe.weight": g(T, C), "ln_f.weight": torch.ones(C), "ln_f.bias": torch.zeros(C)}
    for i in range(L):
        P.update({f"h.{i}.ln_1.weight": torch.ones(C), f"h.{i}.ln_1.bias": torch.zeros(C),
                  f"h.{i}.attn.c_attn.weight": g(C, 3 * C), f"h.{i}.attn.c_attn.bias": torch.zeros(3 * C),
                  f"h.{i}.attn.c_proj.weight": g(C, C) / math.sqrt(2 * L), f"h.{i}.attn.c_proj.bias": torch.zeros(C),
                  f"h.{i}.ln_2.weight": torch.ones(C), f"h.{i}.ln_2.bias": torch.zeros(C),
                  f"h.{i}.mlp.c_fc.weight": g(C, 4 * C), f"h.{i}.mlp.c_fc.bias": torch.zeros(4 * C),
                  f"h.{i}.mlp.c_proj.weight": g(4 * C, C) / math.sqrt(2 * L),
                  f"h.{i}.mlp.c_proj.bias": torch.zeros(C)})
    for v in P.values():
        v.requires_grad_(True)
    model = gpt2_ref.Ref(P, {"n_layer": L, "n_head": H, "n_embd": C})
    decay = [v for v in P.values() if v.dim() >= 2]
    nodecay = [v for v in P.values() if v.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": nodecay, "weight_decay": 0.0}],
                            lr=MAX_LR, betas=(0.9, 0.99))

    def batch(d):
        ix = torch.randint(len(d) - T - 1, (B,))
        return torch.stack([d[i:i + T] for i in ix]), torch.stack([d[i + 1:i + T + 1] for i in ix])

    ones = torch.ones(B, T)
    print("ready", flush=True)  # the timed part starts (alternate.py does not count what came before)
    t0 = time.time()
    for it in range(ITERS):
        x, y = batch(train)
        _, loss = model.loss(x, y, ones)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), 1.0)
        for grp in opt.param_groups:
            grp["lr"] = lr_at(it)
        opt.step()
    with torch.no_grad():  # the held-out text in order, as gptline evaluates it
        losses = []
        windows = (len(val) - 1) // T
        for k in range(0, min(windows, 200 * B) - B + 1, B):
            x = torch.stack([val[(k + j) * T:(k + j) * T + T] for j in range(B)])
            y = torch.stack([val[(k + j) * T + 1:(k + j) * T + T + 1] for j in range(B)])
            losses.append(model.loss(x, y, ones)[1].item())
    print(json.dumps({"seconds": time.time() - t0, "val_loss": float(np.mean(losses)), "train_loss": loss.item()}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
