# The two set-up commands of README.md: `make serve` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: serve test conformance bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed-%: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e ".[$*]"
	touch $@

serve: $(VENV)/.installed-test
	$(BIN)/python -m ai00ref serve

test: $(VENV)/.installed-test
	HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-ci} $(BIN)/python -m pytest -q

conformance: $(VENV)/.installed-test
	$(BIN)/python -m conformance --backend ref

bench: $(VENV)/.installed-test
	$(BIN)/python -m pytest tests/bench_*.py --benchmark-enable -q

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks
