# The two README commands:
#   make demo   install what is missing, then run the main job on the embedded default
#   make test   install what is missing, then run every test in both lanes:
#               the Debian lane (C++ ctest + pytest on Debian's stack) and the PyPI lane
#               (fresh venv on PyPI's torch/numpy 2/scikit-learn, stemroi built from its sdist)
SHELL   := /bin/bash
.SHELLFLAGS := -eo pipefail -c
PY      := .venv/bin/python
DEMO_OUT ?= demo_out
PYTEST_ARGS ?=
# LibTorch's OpenMP threads spin-wait by default; on a busy machine that made
# 2-thread training 8x slower (README, "Threads"). Results do not depend on it.
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup demo test test-debian test-pypi test-cpp test-py docs notebooks bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/stemroi demo --out $(DEMO_OUT)

test: setup
	@$(MAKE) --no-print-directory test-debian test-pypi

test-debian: setup
	@echo "== Debian lane"
	@$(MAKE) --no-print-directory test-cpp test-py

test-pypi: setup
	@echo "== PyPI lane"
	@bash scripts/pypi_lane.sh

test-cpp:
	@echo "== C++ unit tests (ctest)"
	@ctest --test-dir $$(ls -d build/*/ | head -n1) --output-on-failure -j2

test-py:
	@echo "== Python tests (pytest)"
	@$(PY) -m pytest $(PYTEST_ARGS)

docs: setup
	@bash scripts/build_docs.sh

notebooks: setup
	@bash scripts/run_notebooks.sh

bench: setup
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build .stamps dist .venv-pypi
