#!/usr/bin/env bash
# Quantizer ablation on Fashion-MNIST: {vq, ema_vq, pq, rvq} x K in {64, 256, 1024}.
#   bench/quantizer_ablation.sh [CODES...]
# Trains the black box once (the quickstart's stage 0) and reuses it for every run through
# stages.blackbox.weights, so only the stages that differ are recomputed. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/.."
CODES=("${@:-64 256 1024}")
OUT=${OUT:-runs/ablation-quantizers}
mkdir -p "$OUT"
BASE=experiments/ablations/quantizers.toml
if [[ ! -f "$OUT/blackbox/results.json" ]]; then
  build/bin/protoquant run "$BASE" --out "$OUT/blackbox" --set stages.codebook.epochs=0 --set stages.head.epochs=0 \
    > "$OUT/blackbox.log" 2>&1
fi
WEIGHTS="$OUT/blackbox/model/backbone.pt"
build/bin/protoquant --version
echo "| quantizer | K | head accuracy | black box | g(Zq) accuracy | codes used | perplexity | seconds |"
echo "|---|---|---|---|---|---|---|---|"
for codes in ${CODES[*]}; do
  for quantizer in vq ema_vq pq rvq; do
    run="$OUT/$quantizer-$codes"
    build/bin/protoquant run "$BASE" --out "$run" --set stages.blackbox.weights="$WEIGHTS" \
      --set quantizer.type="$quantizer" --set quantizer.codes="$codes" > "$run.log" 2>&1
    python3 - "$run/results.json" "$quantizer" "$codes" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); cb = r["metrics"]["codebook"]; m = dict(r["metrics"]["accuracy"], quantized_blackbox_accuracy=cb["quantized_blackbox_accuracy"])
capacity = cb["codebooks"] * cb["codes_per_codebook"]
seconds = sum(r["stages"][s]["seconds"] for s in ("codebook", "head"))
print(f"| {sys.argv[2]} | {sys.argv[3]} | {m['accuracy']:.4f} | {m['blackbox_accuracy']:.4f} | "
      f"{m['quantized_blackbox_accuracy']:.4f} | {cb['used_codes']}/{capacity} | {cb['mean_perplexity']:.1f} | {seconds:.1f} |")
PY
  done
done
