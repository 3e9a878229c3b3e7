#!/usr/bin/python3
"""gpt2_ref.py — the PyTorch reference the C trainer is tested against.

An independent GPT-2 written in plain torch (not transformers), reading and
writing safetensors with its own few lines of code, so the tests also check
that the C checkpoints are readable by a third party. Computes in float64
by default, so it is the "true" value the float32 C code is compared to.

  gpt2_ref.py grads MODEL BATCH OUTDIR
      forward + backward on BATCH; writes OUTDIR/logits.f64 (raw float64),
      OUTDIR/loss.f64 and OUTDIR/grads.safetensors (float32, same names).
  gpt2_ref.py train MODEL BATCH OUTDIR HPARAMS_JSON
      AdamW steps with warmup + cosine schedule, clipping and gradient
      accumulation over the micro-batches of BATCH; writes the loss of each
      step to OUTDIR/losses.f64.
  gpt2_ref.py greedy MODEL IDS N
      greedy continuation of the comma-separated prompt IDS by N tokens
      (full forward at each step, no cache); prints the N ids.
  gpt2_ref.py bench L H C T B V THREADS
      a training step (float32) for bench/bench_trainer: prints "ready",
      then for each line read runs one step and prints its wall-clock and
      CPU seconds, until the end of its input.

BATCH is raw little-endian: int32 nmicro, B, T; then per micro-batch
tokens int32[B*T], targets int32[B*T] (-1 = not counted), weights float32[B*T].
"""
import json
import math
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F

DT = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def st_read(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    base = 8 + n
    out = {}
    for name, t in header.items():
        a, b = t["data_offsets"]
        if t["dtype"] == "BF16":
            raw = np.frombuffer(data[base + a:base + b], dtype=np.uint16).astype(np.uint32) << 16
            arr = raw.view(np.float32)
        else:
            arr = np.frombuffer(data[base + a:base + b], dtype=DT[t["dtype"]])
        out[name] = arr.reshape(t["shape"]).astype(np.float64)
    return out, meta


def st_write(path, tensors, meta=None):
    header, blobs, off = {}, [], 0
    if meta:
        header["__metadata__"] = meta
    for name, arr in tensors.items():
        b = np.ascontiguousarray(arr, dtype=np.float32).tobytes()
        header[name] = {"dtype": "F32", "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_batch(path):
    with open(path, "rb") as f:
        data = f.read()
    nm, B, T = struct.unpack("<3i", data[:12])
    pos, micro = 12, []
    for _ in range(nm):
        n = B * T
        tok = np.frombuffer(data[pos:pos + 4 * n], dtype=np.int32).reshape(B, T); pos += 4 * n
        tgt = np.frombuffer(data[pos:pos + 4 * n], dtype=np.int32).reshape(B, T); pos += 4 * n
        w = np.frombuffer(data[pos:pos + 4 * n], dtype=np.float32).reshape(B, T); pos += 4 * n
        micro.append((torch.from_numpy(tok.astype(np.int64)), torch.from_numpy(tgt.astype(np.int64)),
                      torch.from_numpy(w.astype(np.float64))))
    return micro


class Ref:
    """GPT-2 over a dict of Hugging Face-named tensors (Conv1D layout)."""

    def __init__(self, P, meta):
        self.P = P
        self.L = int(meta["n_layer"])
        self.H = int(meta["n_head"])
        self.C = int(meta["n_embd"])

    def forward(self, idx):
        P, C, H = self.P, self.C, self.H
        B, T = idx.shape
        x = P["wte.weight"][idx] + P["wpe.weight"][:T]
        mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
        for i in range(self.L):
            p = lambda n: P[f"h.{i}.{n}"]
            h = F.layer_norm(x, (C,), p("ln_1.weight"), p("ln_1.bias"), 1e-5)
            qkv = h @ p("attn.c_attn.weight") + p("attn.c_attn.bias")
            q, k, v = qkv.split(C, dim=2)
            q, k, v = (z.view(B, T, H, C // H).transpose(1, 2) for z in (q, k, v))
            att = (q @ k.transpose(-2, -1)) / math.sqrt(C // H)
            att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
            y = (att @ v).transpose(1, 2).reshape(B, T, C)
            x = x + y @ p("attn.c_proj.weight") + p("attn.c_proj.bias")
            h = F.layer_norm(x, (C,), p("ln_2.weight"), p("ln_2.bias"), 1e-5)
            h = F.gelu(h @ p("mlp.c_fc.weight") + p("mlp.c_fc.bias"), approximate="tanh")
            x = x + h @ p("mlp.c_proj.weight") + p("mlp.c_proj.bias")
        x = F.layer_norm(x, (C,), P["ln_f.weight"], P["ln_f.bias"], 1e-5)
        return x @ P["wte.weight"].T

    def loss(self, idx, tgt, w):
        logits = self.forward(idx)
        V = logits.shape[-1]
        ce = F.cross_entropy(logits.reshape(-1, V), tgt.reshape(-1).clamp(min=0), reduction="none")
        w = (w * (tgt >= 0)).reshape(-1).to(logits.dtype)
        return logits, (ce * w).sum() / w.sum()


def load(path, dtype):
    arrs, meta = st_read(path)
    P = {k: torch.tensor(v, dtype=dtype, requires_grad=True) for k, v in arrs.items()}
    return Ref(P, meta), meta


def cmd_grads(model, batch, outdir):
    ref, meta = load(model, torch.float64)
    tok, tgt, w = read_batch(batch)[0]
    logits, loss = ref.loss(tok, tgt, w)
    loss.backward()
    logits.detach().numpy().astype("<f8").tofile(f"{outdir}/logits.f64")
    np.array([loss.item()], dtype="<f8").tofile(f"{outdir}/loss.f64")
    st_write(f"{outdir}/grads.safetensors", {k: v.grad.numpy() for k, v in ref.P.items()}, meta)


def cmd_greedy(model, ids, n):
    ref, _ = load(model, torch.float64)
    seq = [int(x) for x in ids.split(",")]
    out = []
    with torch.no_grad():
        for _ in range(int(n)):
            logits = ref.forward(torch.tensor([seq]))
            nxt = int(logits[0, -1].argmax())
            seq.append(nxt)
            out.append(nxt)
    print(",".join(str(x) for x in out))


def lr_at(h, step):
    if step < h["warmup"]:
        return h["max_lr"] * (step + 1) / h["warmup"]
    if step >= h["max_steps"]:
        return h["min_lr"]
    r = (step - h["warmup"]) / (h["max_steps"] - h["warmup"])
    return h["min_lr"] + 0.5 * (1 + math.cos(math.pi * r)) * (h["max_lr"] - h["min_lr"])


def cmd_train(model, batch, outdir, hjson):
    h = json.loads(hjson)
    dtype = torch.float64 if h.get("dtype", "f64") == "f64" else torch.float32
    ref, _ = load(model, dtype)
    micro = read_batch(batch)
    decay = [v for v in ref.P.values() if v.dim() >= 2]
    nodecay = [v for v in ref.P.values() if v.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": h["weight_decay"]},
                             {"params": nodecay, "weight_decay": 0.0}],
                            lr=h["max_lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"])
    losses = []
    for step in range(h["steps"]):
        opt.zero_grad()
        total = 0.0
        for tok, tgt, w in micro:
            _, loss = ref.loss(tok, tgt, w)
            (loss / len(micro)).backward()
            total += loss.item() / len(micro)
        torch.nn.utils.clip_grad_norm_(list(ref.P.values()), h["clip"])
        for g in opt.param_groups:
            g["lr"] = lr_at(h, step)
        opt.step()
        losses.append(total)
    np.array(losses, dtype="<f8").tofile(f"{outdir}/losses.f64")


def cmd_bench(L, H, C, T, B, V, threads):
    import time
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = {"n_layer": L, "n_head": H, "n_embd": C}
    P = {"wte.weight": torch.randn(V, C) * 0.02, "wpe.weight": torch.randn(T, C) * 0.02,
         "ln_f.weight": torch.ones(C), "ln_f.bias": torch.zeros(C)}
    for i in range(L):
        for n, shape in (("ln_1.weight", (C,)), ("ln_1.bias", (C,)), ("attn.c_attn.weight", (C, 3 * C)),
                         ("attn.c_attn.bias", (3 * C,)), ("attn.c_proj.weight", (C, C)),
                         ("attn.c_proj.bias", (C,)), ("ln_2.weight", (C,)), ("ln_2.bias", (C,)),
                         ("mlp.c_fc.weight", (C, 4 * C)), ("mlp.c_fc.bias", (4 * C,)),
                         ("mlp.c_proj.weight", (4 * C, C)), ("mlp.c_proj.bias", (C,))):
            P[f"h.{i}.{n}"] = torch.randn(*shape) * 0.02 if n.endswith("weight") and "ln" not in n \
                else (torch.ones(*shape) if "ln" in n and n.endswith("weight") else torch.zeros(*shape))
    for v in P.values():
        v.requires_grad_(True)
    ref = Ref(P, cfg)
    opt = torch.optim.AdamW(list(P.values()), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    tok = torch.randint(0, V, (B, T), generator=g)
    tgt = torch.randint(0, V, (B, T), generator=g)
    w = torch.ones(B, T)
    print("ready", flush=True)
    for _ in sys.stdin:
        t0, c0 = time.perf_counter(), time.process_time()
        opt.zero_grad()
        _, loss = ref.loss(tok, tgt, w)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(P.values()), 1.0)
        opt.step()
        print(f"{time.perf_counter() - t0:.6f} {time.process_time() - c0:.6f}", flush=True)


def main(argv):
    if len(argv) >= 4 and argv[0] == "grads":
        cmd_grads(*argv[1:4])
    elif len(argv) >= 5 and argv[0] == "train":
        cmd_train(*argv[1:5])
    elif len(argv) >= 4 and argv[0] == "greedy":
        cmd_greedy(*argv[1:4])
    elif len(argv) >= 8 and argv[0] == "bench":
        cmd_bench(*(int(a) for a in argv[1:8]))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
