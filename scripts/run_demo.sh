#!/usr/bin/env bash
# `make run`: the product's main job on the embedded defaults, on the shipped real KuaiRand sample:
# ETL -> train -> evaluate -> ONNX export (parity-gated) -> MLflow registry -> promotion gate.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
WORK="${APTRANK_WORKDIR:-work/demo}"

echo "== aptrank run --config configs/demo.yaml --workdir $WORK"
aptrank run --config configs/demo.yaml --workdir "$WORK"
rc=$?
case $rc in
  0) echo "== done: the registered model's champion is models:/kuairand-demo@champion" ;;
  3) echo "== done: the gate kept the current champion (the new model was not better); exit 3 is expected then"; rc=0 ;;
  *) echo "== the job failed (exit $rc)"; exit $rc ;;
esac
ABS_WORK="$(cd "$WORK" && pwd)"
cat <<EOT
Look at it:
  .venv/bin/mlflow ui --backend-store-uri sqlite:///$ABS_WORK/mlflow.db     # runs, plots, registry
  cat $ABS_WORK/features/summary.json                                        # ETL: rows, rejects, label rates
  .venv/bin/aptrank serve --model models:/kuairand-demo@champion             # online scorer (MLFLOW_TRACKING_URI=sqlite:///$ABS_WORK/mlflow.db)
EOT
exit $rc
