# Two entry points on a fresh machine with only Python 3.10+:
#   make demo   install into .venv, then generate from the shipped models
#   make test   install into .venv, then run the test suite (what CI runs)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
# torch first and pinned (2.13.0 is the CPU build on CI's disk); csrc/ is then compiled
# against it without build isolation, which would otherwise fetch another torch.
TORCH  ?= torch==2.13.0

.PHONY: install demo test test-all bench clean

$(VENV)/.installed: pyproject.toml setup.py $(wildcard csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel ninja
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[test]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/adjust demo

test: install
	$(BIN)/python -m pytest -q -m "not slow"

test-all: install
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python -m pytest benchmarks/ --benchmark-only -q

clean:
	rm -rf $(VENV) build *.egg-info adjust_kernels/_C*.so
