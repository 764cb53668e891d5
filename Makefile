# Two entry points: `make demo` and `make test`. Each builds its own virtualenv first.
# `make test` is the complete suite (what CI and the README run); `make test-fast` leaves out the tests
# marked slow (real training, SIGKILL-resume, the demo) or distributed (torchrun), for the edit-test loop.
# Measured 2026-12-01 on the 2-core AMD EPYC dev machine: `make test` from a fresh clone ran 432 tests in
# 2.5-3 min (3.5 min with the virtualenv build; 3 min 36 s with ATEN_CPU_CAPABILITY=default); `make test-fast`
# ran 410 tests in 65 s (ATEN_CPU_CAPABILITY=avx2). 2026-12-02, same machine, otherwise quiet: `make test-fast`
# ran 463 tests in 54-63 s (~100 s of CPU; 68 s without the bytecode cache below); after marking four training
# tests slow, 459 tests in 55 s. `make test` from a fresh clone: 485 tests in 2.4 min (3.9 min with the
# virtualenv build); 3.0 min with ATEN_CPU_CAPABILITY=default, 2.8 min with =avx2.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast venv bench clean

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/bertwwm demo

test: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n 2 --dist loadfile -q

# PYTHONDONTWRITEBYTECODE= (both targets): where the environment sets it (sandboxes do), each xdist worker and each subprocess
# the tests start compiles bertwwm and pytest rewrites every test module again (~4 s of CPU per worker).
test-fast: $(STAMP)
	PYTHONDONTWRITEBYTECODE= $(BIN)/python -m pytest -n 2 --dist loadfile -q -m "not slow and not distributed"

bench: $(STAMP)
	# the speed and learning benchmarks; benchmarks/ablation.py is an experiment of hours, run it on its own
	for b in $(filter-out benchmarks/ablation.py,$(wildcard benchmarks/*.py)); do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache
