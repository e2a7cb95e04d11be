# ppl_hw — every target sets up .venv first (once), from the pinned stack.
#   make demo    the main job          make test    the whole test suite
#   make lint    ruff + mypy           make bench   benchmark ratios -> docs/benchmarks.md
#   make docs    the Sphinx site       make lock    regenerate requirements/lock.txt
# The second tested stack (Python 3.13, current jax/NumPyro/ArviZ 1.x, no torch), in
# .venv313 (docs/installation.md):
#   make install-313   make test-313 (NumPyro half + neutral core + ArviZ bridge)
#   make lock-313      regenerate requirements/lock-py313.txt

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
INSTALL = $(BIN)/python -m pip install --disable-pip-version-check \
          torch==2.13.0 -c requirements/lock.txt -e ".[all,test,test-pyro]"

# Python 3.13: pyenv's newest 3.13.x if pyenv is there, else python3.13 on PATH.
PYTHON313 ?= $(shell p=$$(pyenv prefix 3.13 2>/dev/null) && test -x "$$p/bin/python3.13" \
                && echo "$$p/bin/python3.13" || command -v python3.13 2>/dev/null)
VENV313   := .venv313
BIN313    := $(VENV313)/bin
STAMP313  := $(VENV313)/.installed
EXTRAS313 := numpyro,mnist1d,test
INSTALL313 = $(BIN313)/python -m pip install --disable-pip-version-check \
             -c requirements/lock-py313.txt -e ".[$(EXTRAS313)]"

.PHONY: install demo test test-fast lint format bench docs lock clean \
        install-313 test-313 lock-313

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
	.lock-venv/bin/python -m pip install --disable-pip-version-check torch==2.13.0 -e ".[all,test,test-pyro]"
	{ echo "# Exact pins of the tested stack (Python 3.11). Used as a constraints file:"; \
	  echo '#   pip install torch==2.13.0 -c requirements/lock.txt -e ".[all,test,test-pyro]"'; \
	  echo "# Regenerate with 'make lock' after changing setup.cfg."; \
	  .lock-venv/bin/python -m pip freeze --exclude-editable | sed 's/+cpu$$//'; } > requirements/lock.txt
	rm -rf .lock-venv

# The second stack: Python 3.13, the NumPyro side at its current releases, no torch.
install-313: $(STAMP313)

$(STAMP313): setup.cfg pyproject.toml requirements/lock-py313.txt
	@test -n "$(PYTHON313)" || { echo "make install-313 needs Python 3.13 (pyenv install 3.13, or python3.13 on PATH, or PYTHON313=...)"; exit 1; }
	@$(PYTHON313) -c 'import sys; assert sys.version_info[:2] == (3, 13), "PYTHON313 must be Python 3.13, found " + sys.version'
	test -x $(BIN313)/python || $(PYTHON313) -m venv $(VENV313)
	$(INSTALL313)
	touch $(STAMP313)

# The NumPyro half, the neutral core and the ArviZ bridge, warnings as errors (the
# conftest leaves out the Pyro half: torch is not in this stack).
test-313: $(STAMP313)
	$(BIN313)/python -m pytest -n 2 --dist worksteal $(ARGS)

lock-313:
	@test -n "$(PYTHON313)" || { echo "make lock-313 needs Python 3.13 (pyenv install 3.13, or python3.13 on PATH, or PYTHON313=...)"; exit 1; }
	rm -rf .lock-venv313
	$(PYTHON313) -m venv .lock-venv313
	.lock-venv313/bin/python -m pip install --disable-pip-version-check -e ".[$(EXTRAS313)]"
	{ echo "# Exact pins of the second tested stack (Python 3.13, NumPyro half, no torch)."; \
	  echo "# Used as a constraints file:"; \
	  echo '#   pip install -c requirements/lock-py313.txt -e ".[$(EXTRAS313)]"'; \
	  echo "# Regenerate with 'make lock-313' after changing setup.cfg."; \
	  .lock-venv313/bin/python -m pip freeze --exclude-editable; } > requirements/lock-py313.txt
	rm -rf .lock-venv313

clean:
	rm -rf $(VENV) $(VENV313) docs/_build demo_output .pytest_cache .ruff_cache .mypy_cache
