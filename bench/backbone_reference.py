#!/usr/bin/env python3
"""Eager-PyTorch reference for the backbone's speed: the quickstart's small CNN (or a torchvision
model) trained or run for extraction the way a PyTorch user writes it (channels-last,
torch.autocast("cpu", torch.bfloat16) for bf16, inference_mode for extraction, the loss in fp32).
Prints `images_per_s: X`. `protoquant bench backbone` runs it beside its own measurement.

    /usr/bin/python3 bench/backbone_reference.py --arch small_cnn --mode train --dtype bf16 \\
        [--batch 128] [--image-size 28] [--classes 10] [--threads 2] [--seconds 10]
"""
import argparse
import time

import torch
import torch.nn as nn


def block(cin, cout):
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def small_cnn(width, in_channels, classes):
    return nn.Sequential(*block(in_channels, width), *block(width, width), nn.MaxPool2d(2),
                         *block(width, 2 * width), *block(2 * width, 2 * width), nn.MaxPool2d(2),
                         *block(2 * width, 4 * width), *block(4 * width, 4 * width),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, classes))


def build(arch, in_channels, classes):
    if arch == "small_cnn":
        return small_cnn(32, in_channels, classes)
    import torchvision
    return getattr(torchvision.models, arch)(num_classes=classes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="small_cnn")
    ap.add_argument("--mode", choices=["train", "extract"], default="train")
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--image-size", type=int, default=28)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    channels = 1 if args.arch == "small_cnn" else 3
    model = build(args.arch, channels, args.classes).to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, channels, args.image_size, args.image_size).to(memory_format=torch.channels_last)
    y = torch.randint(0, args.classes, (args.batch,))
    bf16 = args.dtype == "bf16"
    if args.mode == "train":
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = nn.functional.cross_entropy(logits.float(), y)
            loss.backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(x)
    try:
        for _ in range(3):
            step()
    except RuntimeError as e:  # e.g. ConvNeXt under bf16 autocast in PyTorch 1.13 (LayerNorm)
        print(f"reference_error: {str(e).splitlines()[0]}")
        raise SystemExit(3)
    images, start = 0, time.perf_counter()
    while time.perf_counter() - start < args.seconds:
        step()
        images += args.batch
    rate = images / (time.perf_counter() - start)
    print(f"eager PyTorch {torch.__version__}: {args.arch} {args.mode} {args.dtype} batch {args.batch} "
          f"{args.image_size} px, {args.threads} threads")
    print(f"images_per_s: {rate:.2f}")


if __name__ == "__main__":
    main()
