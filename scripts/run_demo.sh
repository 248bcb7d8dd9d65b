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
URI="sqlite:///$ABS_WORK/mlflow.db"
cat <<EOT
Look at it (each line runs as pasted; aptrank printed the same commands above):
  .venv/bin/mlflow ui --backend-store-uri $URI --host 127.0.0.1 --port 5000   # then open http://127.0.0.1:5000/#/experiments?workflowType=machine_learning
  cat $ABS_WORK/features/summary.json                                          # ETL: rows, rejects, label rates
  .venv/bin/aptrank serve --model models:/kuairand-demo@champion --tracking-uri $URI
  MLFLOW_TRACKING_URI=$URI .venv/bin/mlflow models serve -m models:/kuairand-demo@champion --env-manager local --port 5001
EOT
exit $rc
