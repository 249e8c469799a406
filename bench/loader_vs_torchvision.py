#!/usr/bin/python3
"""Image loading throughput: `protoquant bench loader` against torchvision/PIL at equal threads.

Both decode every .jpg/.jpeg/.png under --root with the same training transform (random resized
crop to 224, horizontal flip, ImageNet normalisation) in batches of 64, in a shuffled order, and
report the fastest of --repeat passes in images per second. torchvision runs a torch DataLoader
with num_workers = --threads worker processes (its standard parallel loader; one torch thread per
worker); protoquant runs its loader with --threads worker threads and prefetch.

--make N first writes N photo-like JPEGs (smooth gradients, blurred shapes, mild noise; sizes
drawn around ImageNet's typical 500x375, some up to 1200 px, quality 90) into --root.

    /usr/bin/python3 bench/loader_vs_torchvision.py --root /tmp/loader-bench --make 400 --threads 2
"""
import argparse
import os
import random
import re
import subprocess
import sys
import time

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torchvision import transforms

EXTENSIONS = (".jpg", ".jpeg", ".png")


def make_images(root, count, seed=0):
    rng = random.Random(seed)
    nrng = np.random.default_rng(seed)
    os.makedirs(root, exist_ok=True)
    for i in range(count):
        long_side = rng.choice([500, 500, 500, 640, 800, 1024, 1200])
        short_side = int(long_side * rng.choice([0.75, 0.666, 0.5625]))
        w, h = (long_side, short_side) if rng.random() < 0.7 else (short_side, long_side)
        y, x = np.mgrid[0:h, 0:w].astype(np.float32)
        base = np.stack([(x / w) * rng.uniform(60, 200) + (y / h) * rng.uniform(0, 55) for _ in range(3)], axis=-1)
        img = Image.fromarray(base.clip(0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        for _ in range(rng.randint(8, 30)):
            x0, y0 = rng.randrange(w), rng.randrange(h)
            r = rng.randint(10, max(11, w // 5))
            colour = tuple(rng.randrange(256) for _ in range(3))
            draw.ellipse([x0 - r, y0 - r // 2, x0 + r, y0 + r // 2], fill=colour)
        img = img.filter(ImageFilter.GaussianBlur(2))
        noisy = np.asarray(img, dtype=np.int16) + nrng.normal(0, 6, (h, w, 3)).astype(np.int16)
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(os.path.join(root, f"img_{i:05d}.jpg"), quality=90)


def list_images(root):
    files = []
    for folder, _, names in os.walk(root):
        files.extend(os.path.join(folder, n) for n in names if n.lower().endswith(EXTENSIONS))
    return sorted(files)


class Files(torch.utils.data.Dataset):
    def __init__(self, files, transform):
        self.files, self.transform = files, transform

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        with open(self.files[i], "rb") as f:
            img = Image.open(f).convert("RGB")
        return self.transform(img), 0


def one_thread(_):
    torch.set_num_threads(1)


def bench_torchvision(files, threads, batch_size, repeat, size):
    transform = transforms.Compose([
        transforms.RandomResizedCrop(size),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
    ])
    best = 0.0
    for p in range(repeat):
        loader = torch.utils.data.DataLoader(Files(files, transform), batch_size=batch_size, shuffle=True,
                                             num_workers=threads, worker_init_fn=one_thread, prefetch_factor=2)
        start = time.perf_counter()
        n = 0
        for images, _ in loader:
            n += images.shape[0]
        seconds = time.perf_counter() - start
        print(f"torchvision pass {p + 1}: {n} images in {seconds:.3f} s")
        best = max(best, n / seconds)
    return best


def bench_protoquant(cli, root, threads, batch_size, repeat, size):
    out = subprocess.run([cli, "bench", "loader", "--root", root, "--threads", str(threads), "--batch-size",
                          str(batch_size), "--repeat", str(repeat), "--size", str(size)],
                         check=True, capture_output=True, text=True).stdout
    print("\n".join("protoquant " + line for line in out.strip().splitlines() if line.startswith("pass")))
    return float(re.search(r"images_per_s: ([0-9.]+)", out).group(1))


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--make", type=int, default=0, help="first write this many synthetic JPEGs into --root")
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--cli", default=os.path.join(here, "..", "build", "bin", "protoquant"))
    args = parser.parse_args()
    if args.make:
        make_images(args.root, args.make)
    files = list_images(args.root)
    if not files:
        sys.exit(f"{args.root}: no images")
    torch.set_num_threads(1)
    print(subprocess.run([args.cli, "--version"], check=True, capture_output=True, text=True).stdout.strip())
    print(f"images: {len(files)}  threads: {args.threads}  batch: {args.batch_size}  size: {args.size}")
    pq = bench_protoquant(args.cli, args.root, args.threads, args.batch_size, args.repeat, args.size)
    tv = bench_torchvision(files, args.threads, args.batch_size, args.repeat, args.size)
    print(f"protoquant_images_per_s: {pq:.1f}")
    print(f"torchvision_images_per_s: {tv:.1f}")
    print(f"speedup: {pq / tv:.2f}x")


if __name__ == "__main__":
    main()
