#!/usr/bin/env bash
# The quickstart, side by side with its eager-PyTorch reference, in one run on this machine.
#   bench/quickstart_vs_reference.sh [THREADS]
# Prints both accuracies, both wall times (whole pipeline, data loading to evaluation) and the
# speed ratio. Run on an idle machine: the script prints the load average for that reason.
set -euo pipefail
cd "$(dirname "$0")/.."
THREADS=${1:-$(nproc)}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
build/bin/protoquant --version
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg), threads: $THREADS"

start=$EPOCHREALTIME
build/bin/protoquant run experiments/quickstart.toml --out "$OUT/cpp" --store "$OUT/store" --set experiment.threads="$THREADS" \
  > "$OUT/cpp.log" 2>&1
cpp_wall=$(python3 -c "print($EPOCHREALTIME - $start)")

start=$EPOCHREALTIME
/usr/bin/python3 bench/quickstart_reference.py --threads "$THREADS" > "$OUT/ref.log" 2>&1
ref_wall=$(python3 -c "print($EPOCHREALTIME - $start)")

/usr/bin/python3 - "$OUT/cpp/results.json" "$OUT/ref.log" "$cpp_wall" "$ref_wall" <<'PY'
import json, sys
cpp = json.load(open(sys.argv[1]))
ref = json.loads(open(sys.argv[2]).read().strip().splitlines()[-1])
cpp_wall, ref_wall = float(sys.argv[3]), float(sys.argv[4])
print(f"{'':24}{'protoquant (C++)':>18}{'eager PyTorch':>16}")
acc = cpp['metrics']['accuracy']
print(f"{'head accuracy':24}{acc['accuracy']:>18.4f}{ref['accuracy']:>16.4f}")
print(f"{'black-box accuracy':24}{acc['blackbox_accuracy']:>18.4f}{ref['blackbox_accuracy']:>16.4f}")
print(f"{'codes used (test)':24}{cpp['metrics']['codebook']['used_codes']:>18}{ref['codes_used']:>16}")
print(f"{'wall seconds (process)':24}{cpp_wall:>18.1f}{ref_wall:>16.1f}")
for stage in ["blackbox", "features", "codebook", "head", "evaluate"]:  # features: inside the first stage that reads them
    print(f"  {stage + ' s':22}{cpp['stages'][stage]['seconds']:>18.1f}")
print("  reference stages s:   ", {k: round(v, 1) for k, v in ref["seconds"].items()})
print(f"speed-up (reference wall / protoquant wall): {ref_wall / cpp_wall:.2f}x")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
