# Two commands: `make run` (every notebook on the default profile) and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.dfx-installed
PROFILE ?= mini

.PHONY: run test smoke lab bench docs latest-tables clean-runs

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Python 3.11 is needed (python3.11 or python3 on PATH)"; exit 1; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[test]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/dfx run --profile $(PROFILE)

test: $(STAMP)
	$(BIN)/python -m pytest -q

smoke: $(STAMP)
	$(BIN)/dfx run --profile smoke

lab: $(STAMP)
	$(BIN)/dfx lab

docs: $(STAMP)  # the pages generated from dfxlib: the ledger of differences (docs/differences.md, README)
	$(BIN)/python -c "from dfxlib.config import project_root; from dfxlib.evaluation.differences import write_docs; write_docs(project_root())"

latest-tables: $(STAMP)  # docs/latest-tables.md's tables from runs/mini-seeds (seed 0 and the seed summary)
	$(BIN)/python -c "from dfxlib.evaluation.tables import refresh_sections as r; r('docs/latest-tables.md', 'runs/mini-seeds/seed-0', 'runs/mini-seeds')"

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_index.py
	$(BIN)/python benchmarks/bench_minidfx.py
	$(BIN)/python benchmarks/bench_fusion.py
	$(BIN)/python benchmarks/bench_evaluation.py
	$(BIN)/python benchmarks/bench_predict.py
	$(BIN)/python benchmarks/bench_predict_memory.py
	$(BIN)/python benchmarks/bench_pixels.py
	$(BIN)/python benchmarks/bench_plan.py

clean-runs:
	rm -rf runs/smoke runs/mini runs/.lab runs/test-artifacts
