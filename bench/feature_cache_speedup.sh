#!/usr/bin/env bash
# What the feature cache saves per head-stage epoch on the quickstart, measured side by side.
#   bench/feature_cache_speedup.sh [THREADS] [--set key=value]...
# One fresh run trains the black box and files its features in the artifact store; then, three times
# each and alternating, a run reads the features from the store (B) and one recomputes them with the
# same frozen backbone (C). Both reuse the filed black box and codebook and recompute the head
# (--force head), so the head stage is what they measure.
# A head epoch that recomputes the backbone costs C's train-split feature pass plus C's own head
# epoch; one from the cache costs B's head epoch (its data waits included). Prints both and the
# ratio (medians; every run's figures are printed too: this shared 2-core VM drifts by 15-25%).
# Extra --set options go to every run, e.g. --set head.dtype=bf16 --set experiment.feature_dtype=bf16.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=$(nproc)
if [[ $# -gt 0 && $1 != --* ]]; then THREADS=$1; shift; fi
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
build/bin/protoquant --version
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), threads: $THREADS"
run() {  # run NAME [--set ...]
  local name=$1; shift
  build/bin/protoquant run experiments/quickstart.toml --out "$OUT/$name" --store "$OUT/store" --set experiment.threads="$THREADS" \
    --set stages.codebook.epochs=1 "$@" > "$OUT/$name.log" 2>&1 || { cat "$OUT/$name.log"; exit 1; }
}
run fresh --set experiment.store_features=true "$@"
for i in 1 2 3; do
  run "cached$i" --set experiment.store_features=true --force head "$@"
  run "recomputed$i" --force head "$@"
done
/usr/bin/python3 - "$OUT" "$THREADS" <<'PY'
import json, statistics, sys
out, threads = sys.argv[1], sys.argv[2]
def measure(name):
    results = json.load(open(f"{out}/{name}/results.json"))
    stages, epochs = results["stages"], results["manifest"]["stages"]["head"]["epochs"]
    head = stages["head"]
    split = stages["features"]["splits"]["train"]
    return split, head["train_seconds"] / epochs, head["data_seconds"] / epochs
runs = (1, 2, 3)
cached = [measure(f"cached{i}") for i in runs]
recomputed = [measure(f"recomputed{i}") for i in runs]
for i, (c, r) in enumerate(zip(cached, recomputed), 1):
    print(f"run {i}: cached head epoch {c[1]:.2f} s; recomputing: backbone pass {r[0]['seconds']:.2f} s "
          f"+ head epoch {r[1]:.2f} s")
assert all(s["from"] == "cache" for s, _, _ in cached) and all(s["from"] == "backbone" for s, _, _ in recomputed)
features = statistics.median(s["seconds"] for s, _, _ in recomputed)
recomputed_head = statistics.median(e for _, e, _ in recomputed)
load = statistics.median(s["seconds"] for s, _, _ in cached)
epoch = statistics.median(e for _, e, _ in cached)
waits = statistics.median(w for _, _, w in cached)
print(f"threads {threads}; train split: backbone pass {features:.2f} s, cache load {load:.2f} s")
print(f"head epoch from the cache:      {epoch:.2f} s (of which {waits:.2f} s waiting for batches)")
print(f"head epoch recomputing features: {features + recomputed_head:.2f} s "
      f"(backbone pass + that run's head epoch, {recomputed_head:.2f} s)")
print(f"speed-up per head epoch: {(features + recomputed_head) / epoch:.1f}x")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
