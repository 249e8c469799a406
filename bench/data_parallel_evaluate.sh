#!/usr/bin/env bash
# Data-parallel evaluation: the synthparts interpretability suite on one trained model, evaluated
# by 1 process x 2 threads and by 2 processes x 1 thread (protoquant evaluate --nproc-per-node 2),
# each on its own copy of the run and store, so both extract the features and compute every
# metric. Prints the feature extraction's and the metric pass's seconds, the throughput ratio
# (target >= 0.85) and the largest difference between the two runs' metric values, plus the CPU.
#   bench/data_parallel_evaluate.sh [TRAIN_PER_CLASS] [TEST_PER_CLASS]   (default 100 and 100)
set -euo pipefail
cd "$(dirname "$0")/.."
train=${1:-100}
test=${2:-100}
cli=build/bin/protoquant
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$cli" --version
echo "slice: $train training and $test test images per class"
timeout 1800 "$cli" run experiments/synthparts.toml --out "$work/one" --store "$work/store-one" --db "$work/train.db" \
  --set "dataset.train_per_class=$train" --set "dataset.test_per_class=$test" --set stages.blackbox.epochs=3 \
  --set stages.codebook.epochs=1 --set stages.head.epochs=2 --set report.enabled=false \
  --set 'metrics=[{type = "accuracy"}]' --set experiment.threads=0 >/dev/null 2>"$work/train.log"
cp -r "$work/one" "$work/two"
cp -r "$work/store-one" "$work/store-two"
suite=(--metric consistency:half_size=9 --metric stability:half_size=9 --metric purity:patch_size=8 --metric sizes
       --metric grounding --metric spatial_misalignment:margin=3)
# experiment.threads = 0: the cores shared among a node's processes (2 here, 1 each on two ranks).
timeout 1800 "$cli" evaluate "$work/one" --store "$work/store-one" --db "$work/one.db" "${suite[@]}" >/dev/null 2>"$work/one.log"
timeout 1800 "$cli" evaluate "$work/two" --store "$work/store-two" --db "$work/two.db" "${suite[@]}" \
  --nproc-per-node 2 >/dev/null 2>"$work/two.log"

python3 - "$work" <<'PY'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
one, two = (json.loads((work / r / "results.json").read_text()) for r in ("one", "two"))
print(f"threads per process: 1 process {one['environment']['threads']}, 2 processes {two['environment']['threads']}")
print(f"{'part':<22} {'1x2 s':>8} {'2x1 s':>8} {'throughput ratio':>17}")
for name in ("features", "evaluate"):
    a, b = one["stages"][name]["seconds"], two["stages"][name]["seconds"]
    print(f"{name:<22} {a:8.2f} {b:8.2f} {a / b:17.2f}")
def numbers(x, path=""):
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        yield path, x
    elif isinstance(x, dict):
        for k, v in x.items():
            yield from numbers(v, f"{path}.{k}")
a = dict(numbers(one["metrics"])); b = dict(numbers(two["metrics"]))
worst = max((abs(a[k] - b[k]), k) for k in a if k in b)
print(f"largest metric difference: {worst[0]:.2e} ({worst[1]}) over {len(a)} values")
PY
