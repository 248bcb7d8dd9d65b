#!/usr/bin/env bash
# The whole test suite. pytest's exit code 5 ("no tests collected") is a failure here too: a suite
# that ran nothing proves nothing.
set -uo pipefail
cd "$(dirname "$0")/.."
.venv/bin/python -m pytest -q -p no:cacheprovider "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests" >&2
  exit 1
fi
exit "$rc"
