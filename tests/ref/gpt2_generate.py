#!/usr/bin/python3
"""gpt2_generate.py — generation with the PyTorch reference model.

  gpt2_generate.py MODEL N ID [ID ...]
      prints N greedily generated ids after the prompt ids, one line,
      recomputing the whole sequence each step (no cache) in float64.
  gpt2_generate.py bench MODEL B PROMPT NEW THREADS REPEATS
      greedy generation of NEW tokens for B rows of PROMPT tokens each with
      a key/value cache, float32, in plain torch: the generation loop a
      PyTorch user writes (one batched forward over the prompts, then one
      position per step over the cache). Row b's prompt is token
      (7 b + 13 i + 1) mod vocab at position i, as bench/bench_generate
      makes it. Prints the best tokens/s (B * NEW / seconds, prompt
      included) of REPEATS runs by wall clock and per CPU-second, then row
      0's generated ids.
"""
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_ref  # noqa: E402


def greedy(argv):
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


class Cached:
    """GPT-2 with a key/value cache, float32, over Hugging Face-named tensors."""

    def __init__(self, path):
        arrs, meta = gpt2_ref.st_read(path)
        self.P = {k: torch.tensor(v, dtype=torch.float32) for k, v in arrs.items()}
        self.L, self.H, self.C = int(meta["n_layer"]), int(meta["n_head"]), int(meta["n_embd"])

    def step(self, x, pos, K, V):
        """x: (B, T, C) embeddings of positions pos..pos+T-1; fills the cache."""
        P, C, H = self.P, self.C, self.H
        B, T, _ = x.shape
        hs = C // H
        for i in range(self.L):
            p = lambda n: P[f"h.{i}.{n}"]
            h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), 1e-5)
            q, k, v = torch.addmm(p("attn.c_attn.bias"), h.view(B * T, C), p("attn.c_attn.weight")) \
                .view(B, T, 3 * C).split(C, dim=2)
            q, k, v = (z.view(B, T, H, hs).transpose(1, 2) for z in (q, k, v))
            K[i][:, :, pos:pos + T] = k
            V[i][:, :, pos:pos + T] = v
            kk, vv = K[i][:, :, :pos + T], V[i][:, :, :pos + T]
            att = (q @ kk.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
            if T > 1:
                mask = torch.ones(T, pos + T, dtype=torch.bool).tril(diagonal=pos)
                att = att.masked_fill(~mask, float("-inf"))
            y = (att.softmax(dim=-1) @ vv).transpose(1, 2).reshape(B * T, C)
            x = x + torch.addmm(p("attn.c_proj.bias"), y, p("attn.c_proj.weight")).view(B, T, C)
            h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), 1e-5)
            h = F.gelu(torch.addmm(p("mlp.c_fc.bias"), h.view(B * T, C), p("mlp.c_fc.weight")), approximate="tanh")
            x = x + torch.addmm(p("mlp.c_proj.bias"), h, p("mlp.c_proj.weight")).view(B, T, C)
        x = F.layer_norm(x[:, -1], (C,), P["ln_f.weight"], P["ln_f.bias"], 1e-5)
        return x @ P["wte.weight"].T

    def generate(self, idx, new):
        P, B, T0 = self.P, idx.shape[0], idx.shape[1]
        hs = self.C // self.H
        K = [torch.empty(B, self.H, T0 + new, hs) for _ in range(self.L)]
        V = [torch.empty(B, self.H, T0 + new, hs) for _ in range(self.L)]
        logits = self.step(P["wte.weight"][idx] + P["wpe.weight"][:T0], 0, K, V)
        out = []
        for s in range(new):
            nxt = logits.argmax(dim=-1)
            out.append(nxt)
            if s + 1 < new:
                pos = T0 + s
                logits = self.step((P["wte.weight"][nxt] + P["wpe.weight"][pos]).unsqueeze(1), pos, K, V)
        return torch.stack(out, dim=1)


def bench(argv):
    path, B, T0, new, threads, repeats = argv[0], *(int(a) for a in argv[1:6])
    torch.set_num_threads(threads)
    m = Cached(path)
    vocab = m.P["wte.weight"].shape[0]
    idx = torch.tensor([[(7 * b + 13 * i + 1) % vocab for i in range(T0)] for b in range(B)])
    best = best_cpu = 0.0
    with torch.inference_mode():
        for _ in range(repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            out = m.generate(idx, new)
            best = max(best, B * new / (time.perf_counter() - t0))
            best_cpu = max(best_cpu, B * new / (time.process_time() - c0))
    print(f"{best:.1f} {best_cpu:.1f}")
    print(" ".join(str(int(t)) for t in out[0]))
    return 0


def main(argv):
    if len(argv) >= 7 and argv[0] == "bench":
        return bench(argv[1:])
    if len(argv) >= 3:
        return greedy(argv)
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
