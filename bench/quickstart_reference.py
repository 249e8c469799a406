#!/usr/bin/env python3
"""Eager-PyTorch reference of the ProtoQuant quickstart pipeline on Fashion-MNIST.

Mirrors the C++ (LibTorch) quickstart so the two can be compared side by side:
  stage 0  train a small CNN (backbone f + GAP/linear head g), then freeze it
  features extract frozen feature maps Z (B x 4w x 7 x 7) once for train and test
  stage 1  learn a codebook E (cosine argmax assignment, frozen g, CE + codebook MSE)
  stage 3  interpretable head: prototypes = E, softmax(cos/tau) over prototypes, max-pool, relu(W)
  eval     test top-1 of the blackbox (f+g) and of the interpretable head
Run with Debian's python3 (torch 1.13, CPU):  /usr/bin/python3 bench/quickstart_reference.py
"""
import argparse, gzip, json, math, os, random, time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530


def load_idx(name):
    """Read a gzip IDX file (images -> N x 1 x 28 x 28 normalised fp32, labels -> int64)."""
    with gzip.open(os.path.join(DATA, name), "rb") as f:
        raw = f.read()
    if "labels" in name:
        return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=8).astype(np.int64))
    x = np.frombuffer(raw, np.uint8, offset=16).astype(np.float32).reshape(-1, 1, 28, 28)
    return torch.from_numpy((x / 255.0 - MEAN) / STD)


def block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def small_cnn(w):
    """Backbone f: 28x28 -> B x 4w x 7 x 7."""
    return nn.Sequential(*block(1, w), *block(w, w), nn.MaxPool2d(2),
                         *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
                         *block(2 * w, 4 * w), *block(4 * w, 4 * w))


class GapLinear(nn.Module):
    """Original head g: global average pool + linear."""
    def __init__(self, d, c):
        super().__init__()
        self.fc = nn.Linear(d, c)

    def forward(self, z):
        return self.fc(z.mean(dim=(2, 3)))


def warmup_cosine(opt, total, warm_frac=0.05):
    """Linear warm-up over the first 5% of steps, then cosine decay to 0 (stepped per batch)."""
    warm = max(1, int(warm_frac * total))
    def f(s):
        if s < warm:
            return (s + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (s - warm) / max(1, total - warm))))
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def train(params, step_fn, x, y, epochs, lr, gen, bs=128):
    """Generic Adam loop: shuffled mini-batches (seeded generator), warm-up + cosine LR."""
    n = x.shape[0]
    steps = epochs * math.ceil(n / bs)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=0.0)
    sched = warmup_cosine(opt, steps)
    for ep in range(epochs):
        perm = torch.randperm(n, generator=gen)
        tot, cnt = 0.0, 0
        for i in range(0, n, bs):
            idx = perm[i:i + bs]
            loss = step_fn(x[idx], y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            tot += loss.item() * idx.numel(); cnt += idx.numel()
        print(f"    epoch {ep + 1}/{epochs}  loss {tot / cnt:.4f}", flush=True)


def flat_cells(z):
    """B x D x H x W -> (B*H*W) x D."""
    return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])


def assign(z, E):
    """k* = argmax_k cos(z, e_k) as one matmul of normalised vectors; no gradient."""
    with torch.no_grad():
        return (F.normalize(flat_cells(z), dim=1, eps=1e-6) @ F.normalize(E, dim=1, eps=1e-6).t()).argmax(1)


def proto_logits(z, E, W, tau=0.1):
    """Interpretable head: S = cos, A = softmax_p(S/tau), a = max_hw A, logits = a relu(W)^T."""
    b, d, h, w = z.shape
    zn = F.normalize(z.permute(0, 2, 3, 1).reshape(b, h * w, d), dim=2, eps=1e-6)
    S = zn @ F.normalize(E, dim=1, eps=1e-6).t()          # B x HW x P
    a = torch.softmax(S / tau, dim=2).amax(dim=1)          # B x P
    return a @ F.relu(W).t()


@torch.no_grad()
def batched(fn, x, bs=128):
    """Apply fn over x in chunks (128: larger chunks were slower on CPU, cache-bound)."""
    return torch.cat([fn(x[i:i + bs]) for i in range(0, x.shape[0], bs)])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--codes", type=int, default=256)
    ap.add_argument("--epochs0", type=int, default=2)
    ap.add_argument("--epochs1", type=int, default=2)
    ap.add_argument("--epochs3", type=int, default=2)
    ap.add_argument("--lr0", type=float, default=2e-3)
    ap.add_argument("--lr1", type=float, default=5e-3)
    ap.add_argument("--lr3", type=float, default=5e-3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(args.seed); np.random.seed(args.seed); torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    secs = {}
    t_all = time.perf_counter()

    xtr, ytr = load_idx("train-images-idx3-ubyte.gz"), load_idx("train-labels-idx1-ubyte.gz")
    xte, yte = load_idx("t10k-images-idx3-ubyte.gz"), load_idx("t10k-labels-idx1-ubyte.gz")
    D, C = 4 * args.width, 10

    # Stage 0: blackbox backbone f + head g, plain CE; then freeze both (eval mode).
    t = time.perf_counter()
    f, g = small_cnn(args.width), GapLinear(D, C)
    f.train(); g.train()
    print("stage0 (blackbox)", flush=True)
    train(list(f.parameters()) + list(g.parameters()), lambda x, y: F.cross_entropy(g(f(x)), y),
          xtr, ytr, args.epochs0, args.lr0, gen, args.batch)
    f.eval(); g.eval()
    for p in list(f.parameters()) + list(g.parameters()):
        p.requires_grad_(False)
    secs["stage0"] = time.perf_counter() - t

    # Feature extraction: frozen backbone -> cached fp32 feature maps B x D x 7 x 7.
    t = time.perf_counter()
    ztr, zte = batched(f, xtr), batched(f, xte)
    secs["features"] = time.perf_counter() - t

    # Stage 1: codebook E (K x D), orthogonal init; only E is trained.
    t = time.perf_counter()
    E = torch.empty(args.codes, D)
    nn.init.orthogonal_(E)
    E.requires_grad_(True)

    def stage1_loss(z, y):
        k = assign(z, E)
        q = E[k]                                              # raw codewords, (B*49) x D
        b, d, h, w = z.shape
        zq = q.view(b, h, w, d).permute(0, 3, 1, 2)          # back to B x D x 7 x 7
        return (F.cross_entropy(g(zq), y, label_smoothing=0.1)
                + F.mse_loss(q, flat_cells(z).detach()))

    print("stage1 (codebook)", flush=True)
    train([E], stage1_loss, ztr, ytr, args.epochs1, args.lr1, gen, args.batch)
    E = E.detach()
    usage = torch.bincount(batched(lambda z: assign(z, E), zte), minlength=args.codes)
    codes_used = int((usage > 0).sum())
    secs["stage1"] = time.perf_counter() - t

    # Stage 3: interpretable head; prototypes initialised from E (trainable), W ~ N(1, 0.1).
    t = time.perf_counter()
    P = E.clone().requires_grad_(True)
    W = torch.empty(C, args.codes).normal_(1.0, 0.1).requires_grad_(True)
    print("stage3 (head)", flush=True)
    train([P, W], lambda z, y: F.cross_entropy(proto_logits(z, P, W), y, label_smoothing=0.1),
          ztr, ytr, args.epochs3, args.lr3, gen, args.batch)
    secs["stage3"] = time.perf_counter() - t

    # Evaluation: blackbox f+g on the images, interpretable head on cached test features.
    t = time.perf_counter()
    bb_acc = (batched(lambda x: g(f(x)), xte).argmax(1) == yte).float().mean().item()
    acc = (batched(lambda z: proto_logits(z, P, W), zte).argmax(1) == yte).float().mean().item()
    secs["eval"] = time.perf_counter() - t
    total = time.perf_counter() - t_all

    for k, v in secs.items():
        print(f"{k:>9s}: {v:8.2f} s")
    print(f"    total: {total:8.2f} s  (threads {args.threads}, load avg at end {os.getloadavg()[0]:.2f})")
    print(f"blackbox accuracy {bb_acc:.4f}  head accuracy {acc:.4f}  codes used {codes_used}/{args.codes}")
    print(json.dumps({"blackbox_accuracy": round(bb_acc, 4), "accuracy": round(acc, 4),
                      "codes_used": codes_used, "seconds": {k: round(v, 3) for k, v in secs.items()},
                      "total_seconds": round(total, 3), "threads": args.threads,
                      "loadavg_1min_end": round(os.getloadavg()[0], 2), "config": vars(args)}))


if __name__ == "__main__":
    main()
