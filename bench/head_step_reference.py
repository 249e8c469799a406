#!/usr/bin/python3
"""Eager-PyTorch reference of one stage-3 training step of the ProtoQuant head (METHOD.md):
cosine similarity of every cell to every prototype, softmax over prototypes (tau), max over
cells, non-negative class layer, label-smoothed cross-entropy, backward, Adam step. Written the
way a PyTorch user writes it; `protoquant bench head` runs it with the same arguments and prints
the ratio. Prints `steps_per_s: X`.

usage: head_step_reference.py --batch 64 --dim 768 --grid 7 --prototypes 2048 --classes 200
                              [--dtype fp32|bf16] [--steps 10] [--threads N]
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class ProtoQuantHead(nn.Module):
    def __init__(self, prototypes, classes, tau):
        super().__init__()
        self.prototypes = nn.Parameter(prototypes.clone())
        self.weight = nn.Parameter(torch.randn(classes, prototypes.shape[0]) * 0.1 + 1.0)
        self.tau = tau

    def forward(self, z):  # B x D x H x W
        # Every cell as a row of one 2-D GEMM (B*H*W x D) (D x P), whose output the softmax (over
        # prototypes, the last axis) and the max over cells read without a layout change: the
        # fastest way found to write it in eager PyTorch here. (A 3-D `zn @ en.t()` becomes 64
        # small batched GEMMs, ~7x slower; an einsum to B x P x H x W, ~2.5x slower.)
        b, d = z.shape[:2]
        zn = F.normalize(z.permute(0, 2, 3, 1).reshape(-1, d), dim=1, eps=1e-6)  # B*H*W x D
        en = F.normalize(self.prototypes, dim=1, eps=1e-6)
        s = (zn @ en.t()).view(b, -1, en.shape[0])  # B x HW x P
        presence = torch.softmax(s / self.tau, dim=2).amax(dim=1)
        return presence.float() @ F.relu(self.weight).t()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--grid", type=int, default=7)
    parser.add_argument("--prototypes", type=int, default=2048)
    parser.add_argument("--classes", type=int, default=200)
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)  # Debian's python3-torch defaults to one thread

    torch.manual_seed(0)
    head = ProtoQuantHead(torch.randn(args.prototypes, args.dim), args.classes, 0.1)
    features = torch.rand(args.batch, args.dim, args.grid, args.grid)
    labels = torch.randint(0, args.classes, (args.batch,))
    optimizer = torch.optim.Adam(head.parameters(), lr=5e-3)

    def step():
        optimizer.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.dtype == "bf16"):
            logits = head(features)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=0.1)
        loss.backward()
        optimizer.step()
        return loss

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - start
    print(f"threads: {torch.get_num_threads()}")
    print(f"steps_per_s: {args.steps / seconds:.4f}")


if __name__ == "__main__":
    main()
