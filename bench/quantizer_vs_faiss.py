#!/usr/bin/env python3
"""protoquant's nearest-code assignment side by side with FAISS, on the same data, in one run.

    /usr/bin/python3 bench/quantizer_vs_faiss.py [--vectors 50000 --dim 768 --codes 2048
                                                  --subspaces 8 --pq-codes 256 --threads N]

Measures, at equal threads (needs Debian's python3-faiss):
  vq  fp32   protoquant `bench quantizer --kind vq`             vs faiss.IndexFlatL2 search (k=1)
  vq  bf16   bf16 candidates + exact fp32 re-rank                vs the same, plus agreement with exact
  pq  encode protoquant `bench quantizer --kind pq`             vs faiss.ProductQuantizer.compute_codes
  pq  train  k-means MSE after the same iterations and data      vs faiss.ProductQuantizer.train
Data: Gaussian mixture vectors (clustered, like real features), written once as raw float32.
"""
import argparse, os, re, subprocess, sys, tempfile, time

import numpy as np

try:
    import faiss
except ImportError:
    sys.exit("bench/quantizer_vs_faiss.py needs FAISS: apt-get install python3-faiss")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(ROOT, "build", "bin", "protoquant")


def protoquant(args):
    out = subprocess.run([CLI, "bench", "quantizer", *args], check=True, capture_output=True, text=True).stdout
    return {k: v for k, v in re.findall(r"^(\w+): (\S+)$", out, re.M)}


def best_of(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vectors", type=int, default=50000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--codes", type=int, default=2048)
    ap.add_argument("--subspaces", type=int, default=8)
    ap.add_argument("--pq-codes", type=int, default=256)
    ap.add_argument("--train-iterations", type=int, default=10)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--repeat", type=int, default=3)
    a = ap.parse_args()
    faiss.omp_set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((512, a.dim)).astype(np.float32) * 2
    x = (centres[rng.integers(0, 512, a.vectors)] + rng.standard_normal((a.vectors, a.dim))).astype(np.float32)
    book = x[rng.choice(a.vectors, a.codes, replace=False)] + 0.1 * rng.standard_normal((a.codes, a.dim)).astype(np.float32)
    print(subprocess.run([CLI, "--version"], check=True, capture_output=True, text=True).stdout.strip())
    print(f"load average {os.getloadavg()[0]:.2f}, threads {a.threads}, N={a.vectors} D={a.dim} K={a.codes}")

    with tempfile.TemporaryDirectory() as tmp:
        x.tofile(os.path.join(tmp, "vectors.f32"))
        book.astype(np.float32).tofile(os.path.join(tmp, "codebook.f32"))
        common = ["--vectors", str(a.vectors), "--dim", str(a.dim), "--threads", str(a.threads),
                  "--repeat", str(a.repeat), "--data", tmp]

        # --- vq: exact fp32 and bf16 candidates, against IndexFlatL2.
        index = faiss.IndexFlatL2(a.dim)
        index.add(book)
        t_faiss, (_, ref) = best_of(lambda: index.search(x, 1), a.repeat)
        faiss_rate = a.vectors / t_faiss
        print(f"faiss IndexFlatL2      {faiss_rate:12.0f} assignments/s")
        for dtype in ("fp32", "bf16"):
            codes_out = os.path.join(tmp, f"vq-{dtype}.i64")
            r = protoquant(["--kind", "vq", "--codes", str(a.codes), "--dtype", dtype, "--codes-out", codes_out, *common])
            rate = float(r["assignments_per_s"])
            agree = (np.fromfile(codes_out, np.int64) == ref[:, 0]).mean()
            print(f"protoquant vq {dtype}      {rate:12.0f} assignments/s  ratio {rate / faiss_rate:5.2f}x  "
                  f"agreement with exact {100 * agree:.3f}%")

        # --- pq: encode with FAISS-trained codebooks, then training MSE at equal iterations.
        pq = faiss.ProductQuantizer(a.dim, a.subspaces, int(np.log2(a.pq_codes)))
        pq.cp.niter = a.train_iterations
        sample = x[: min(a.vectors, 64 * a.pq_codes)]
        t_train, _ = best_of(lambda: pq.train(sample), 1)
        centroids = faiss.vector_to_array(pq.centroids).reshape(a.subspaces, a.pq_codes, a.dim // a.subspaces)
        centroids.astype(np.float32).tofile(os.path.join(tmp, "codebook.f32"))
        t_enc, codes = best_of(lambda: pq.compute_codes(x), a.repeat)
        faiss_pq_rate = a.vectors / t_enc
        faiss_mse = float(((pq.decode(pq.compute_codes(sample)) - sample) ** 2).sum(1).mean())
        codes_out = os.path.join(tmp, "pq.i64")
        r = protoquant(["--kind", "pq", "--codes", str(a.pq_codes), "--subspaces", str(a.subspaces),
                        "--codes-out", codes_out, *common])
        rate = float(r["assignments_per_s"])
        ours = np.fromfile(codes_out, np.int64).reshape(a.vectors, a.subspaces)
        agree = (ours == np.asarray(codes).reshape(a.vectors, a.subspaces).astype(np.int64)).mean()
        print(f"faiss PQ compute_codes {faiss_pq_rate:12.0f} vectors/s")
        print(f"protoquant pq encode   {rate:12.0f} vectors/s      ratio {rate / faiss_pq_rate:5.2f}x  "
              f"code agreement {100 * agree:.3f}%")
        sample.tofile(os.path.join(tmp, "vectors.f32"))
        r = protoquant(["--kind", "pq", "--codes", str(a.pq_codes), "--subspaces", str(a.subspaces),
                        "--train-iterations", str(a.train_iterations), "--repeat", "1", "--vectors", str(len(sample)),
                        "--dim", str(a.dim), "--threads", str(a.threads), "--data", tmp])
        print(f"pq train MSE ({a.train_iterations} iterations, {len(sample)} vectors): faiss {faiss_mse:.4f} "
              f"({t_train:.2f} s), protoquant {float(r['train_mse']):.4f} ({float(r['train_seconds']):.2f} s)")


if __name__ == "__main__":
    main()
