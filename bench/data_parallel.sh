#!/usr/bin/env bash
# Data-parallel overhead: the quickstart on a dataset.limit slice, 2 processes x 1 thread against
# 1 process x 2 threads, same manifest and global batch, in one run. Prints each stage's seconds
# (whole stage, extraction included), the ratio of throughputs (single / data-parallel seconds;
# target >= 0.85) and the test accuracy of both (target: within 1.5 points), plus the CPU.
# Also per stage: the 2 x 1 run's seconds in collectives (sync) and, for the codebook, both runs'
# k-means init seconds.
#   bench/data_parallel.sh [LIMIT]     (default 10000 images per split)
#   KEEP=DIR bench/data_parallel.sh    keeps both runs (records, logs) in DIR
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${1:-10000}
cli=build/bin/protoquant
work=${KEEP:-$(mktemp -d)}
[ -n "${KEEP:-}" ] || trap 'rm -rf "$work"' EXIT
common=(experiments/quickstart.toml --set "dataset.limit=$limit" --set report.enabled=false)

grep -m1 'model name' /proc/cpuinfo | sed 's/.*: /cpu: /'
echo "cores: $(nproc); slice: $limit images per split"
"$cli" run "${common[@]}" --set experiment.threads=2 --out "$work/single" --store "$work/s1" --db "$work/d1" 2>"$work/single.log"
"$cli" run "${common[@]}" --set experiment.threads=1 --nproc-per-node 2 --out "$work/dp" --store "$work/s2" --db "$work/d2" 2>"$work/dp.log"

python3 - "$work" <<'PY'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
def load(run):
    return json.loads((work / run / "results.json").read_text())
single, dp = load("single"), load("dp")
print(f"{'stage':<10} {'1x2 s':>8} {'2x1 s':>8} {'throughput ratio':>17} {'2x1 sync s':>11} {'init s 1x2/2x1':>15}")
for stage in ("blackbox", "codebook", "head"):
    a = json.loads((work / "single" / "stages" / f"{stage}.json").read_text())
    b = json.loads((work / "dp" / "stages" / f"{stage}.json").read_text())
    init = f"{a['init_seconds']:.2f}/{b['init_seconds']:.2f}" if "init_seconds" in a else ""
    print(f"{stage:<10} {a['seconds']:8.1f} {b['seconds']:8.1f} {a['seconds'] / b['seconds']:17.2f} "
          f"{b.get('sync_seconds', 0):11.2f} {init:>15}")
acc = lambda r: r["metrics"]["accuracy"]["accuracy"] * 100
print(f"accuracy: 1x2 {acc(single):.2f} %, 2x1 {acc(dp):.2f} % (difference {acc(dp) - acc(single):+.2f} points)")
print(f"total: 1x2 {single['total_seconds']:.1f} s, 2x1 {dp['total_seconds']:.1f} s")
PY
