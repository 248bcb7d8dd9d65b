#!/usr/bin/env bash
# `make run`: the product's main job on the embedded defaults, on the shipped real KuaiRand sample.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
WORK="${APTRANK_WORKDIR:-work/demo}"
mkdir -p "$WORK"

echo "== 1/2 ETL: data/samples/kuairand-pure -> $WORK/features"
aptrank etl --source kuairand --input data/samples/kuairand-pure --out "$WORK/features" \
  --config configs/etl/kuairand.yaml

echo "== 2/2 train + evaluate: configs/demo.yaml -> $WORK/train"
aptrank train --features "$WORK/features" --config configs/demo.yaml --run-dir "$WORK/train"

echo
echo "done: ETL summary $WORK/features/summary.json, evaluation $WORK/train/evaluation.json"
