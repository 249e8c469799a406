#!/usr/bin/env bash
# A sweep that has already run, run again with nothing to train: how long the whole command takes
# and where its seconds go.
#   bench/sweep_rerun.sh [LIMIT]
# A 4-member sweep that `extends` the quickstart (dataset.limit = LIMIT, default 3000; one epoch a
# stage; head.temperature x quantizer.codes) is run once, then three more times. Each rerun should
# reuse every stage, the report's figures included: no feature pass, no epoch. Prints each
# rerun's wall time, the command's own start (`protoquant --version`), and per member the seconds
# results.json gives to the dataset, each reused stage, the evaluation and the report.
set -euo pipefail
cd "$(dirname "$0")/.."
LIMIT=${1:-3000}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
build/bin/protoquant --version
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cat > "$OUT/sweep.toml" <<TOML
extends = "$PWD/experiments/quickstart.toml"
[experiment]
name = "rerun"
[dataset]
limit = $LIMIT
[stages.blackbox]
epochs = 1
[stages.codebook]
epochs = 1
[stages.head]
epochs = 1
[sweep.grid]
"head.temperature" = [0.1, 0.2]
"quantizer.codes" = [64, 128]
TOML
sweep() { timeout 900 build/bin/protoquant run "$OUT/sweep.toml" --out "$OUT/runs" > "$OUT/$1.log" 2>&1 || { cat "$OUT/$1.log"; exit 1; }; }
start=$(date +%s.%N); sweep first; end=$(date +%s.%N)
echo "first run (trains everything): $(echo "$end - $start" | bc) s"
startup_start=$(date +%s.%N); build/bin/protoquant --version > /dev/null; startup_end=$(date +%s.%N)
echo "the command's start alone (--version): $(echo "$startup_end - $startup_start" | bc) s"
start=$(date +%s.%N); timeout 300 build/bin/protoquant run "$OUT/sweep.toml" --out "$OUT/runs" --dry-run > "$OUT/plan.log" 2>&1; end=$(date +%s.%N)
echo "the plan alone (--dry-run: plugins, dataset, every key): $(echo "$end - $start" | bc) s"
for i in 1 2 3; do
  start=$(date +%s.%N); sweep "rerun$i"; end=$(date +%s.%N)
  echo "rerun $i: $(echo "$end - $start" | bc) s wall; $(grep -c ' reused ' "$OUT/rerun$i.log") stage reuses; $(grep -c 'done in' "$OUT/rerun$i.log" || true) stages computed; $(grep -c '\[features\]\|epoch ' "$OUT/rerun$i.log" || true) feature or epoch lines"
done
/usr/bin/python3 - "$OUT/runs" <<'PY'
import json, os, sys
root = sys.argv[1]
for member in sorted(os.listdir(root)):
    path = os.path.join(root, member, "results.json")
    if not os.path.exists(path):
        continue
    results = json.load(open(path))
    stages = results["stages"]
    parts = [f"{name} {stage.get('seconds', 0):.3f}" for name, stage in stages.items()]
    print(f"{member}: total {results['total_seconds']:.3f} s = " + ", ".join(parts))
PY
