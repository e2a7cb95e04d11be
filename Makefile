# ppl_hw — every target sets up .venv first (once), from the pinned stack.
#   make demo    the main job          make test    the whole test suite
#   make lint    ruff + mypy           make bench   benchmark ratios -> docs/benchmarks.md
#   make docs    the Sphinx site       make lock    regenerate requirements/lock.txt

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
INSTALL = $(BIN)/python -m pip install --disable-pip-version-check \
          torch==2.13.0 -c requirements/lock.txt -e ".[all,test]"

.PHONY: install demo test test-fast lint format bench docs lock clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml requirements/lock.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "ppl_hw needs Python >= 3.11, found " + sys.version'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(INSTALL)
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m ppl_hw.demo $(ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal $(ARGS)

test-fast: $(STAMP)
	$(BIN)/python -m pytest -n 2 --dist worksteal -m "not slow" $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy ppl_hw/core ppl_hw/config.py ppl_hw/metrics.py ppl_hw/datasets.py

format: $(STAMP)
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP)
	$(BIN)/python benchmarks/run.py --write-docs docs/benchmarks.md $(ARGS)

docs: $(STAMP)
	$(BIN)/sphinx-build -W --keep-going -b html docs docs/_build/html

# Resolve the stack afresh in a scratch venv and pin what it chose.
lock:
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --disable-pip-version-check torch==2.13.0 -e ".[all,test]"
	{ echo "# Exact pins of the tested stack (Python 3.11). Used as a constraints file:"; \
	  echo '#   pip install torch==2.13.0 -c requirements/lock.txt -e ".[all,test]"'; \
	  echo "# Regenerate with 'make lock' after changing setup.cfg."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements/lock.txt
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) docs/_build demo_output .pytest_cache .ruff_cache .mypy_cache
