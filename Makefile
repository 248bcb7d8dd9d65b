# aptrank: two commands for a fresh clone (see README.md). Everything goes through scripts/install.sh.
PY := .venv/bin/python
export PYTHONHASHSEED := 0

.PHONY: setup run test lint bench clean

setup:
	@bash scripts/install.sh

run: setup
	@bash scripts/run_demo.sh

test: setup
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .
	@bash scripts/run_tests.sh

lint: setup
	@$(PY) -m ruff check .
	@$(PY) -m ruff format --check .

bench: setup
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .venv work .pytest_cache
