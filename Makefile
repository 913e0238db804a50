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

.PHONY: setup demo test test-debian test-pypi test-cuda-build test-reliability test-cpp test-py docs notebooks fuzz sanitize bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/stemroi demo --out $(DEMO_OUT)

test: setup
	@$(MAKE) --no-print-directory test-debian test-pypi test-cuda-build test-reliability

test-debian: setup
	@echo "== Debian lane"
	@$(MAKE) --no-print-directory test-cpp test-py

test-pypi: setup
	@echo "== PyPI lane"
	@bash scripts/pypi_lane.sh

# The CUDA build (STEMROI_WITH_CUDA=ON) compiles and links against the PyPI
# lane's CUDA torch with this machine's nvcc; its GPU tests skip without a GPU.
test-cuda-build:
	@echo "== CUDA build against the PyPI lane's torch"
	@STEMROI_CUDA_PYTHON=$${STEMROI_CUDA_PYTHON:-.venv-pypi/bin/python} bash scripts/build_cuda.sh
	@STEMROI_CUDA_PYTHON=$${STEMROI_CUDA_PYTHON:-.venv-pypi/bin/python}; \
	  PYTHONPATH=build-cuda/pylib $$STEMROI_CUDA_PYTHON -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_device.py

# Reliability (docs/reliability.md): the 6 fuzz targets for CI_FUZZ_SECONDS each
# (clang + libFuzzer + ASan/UBSan for the C++ parsers, atheris for the Python
# readers; the script builds build-fuzz/ and installs atheris when missing),
# then the fast ASan + UBSan tier of the torch-free core and its C++ tests.
# 40 s per target keeps the fuzz step under 8 minutes with its build (60 s: ~10); a fixed
# libFuzzer seed (FUZZ_SEED, default 1) makes the CI run repeatable; `make fuzz` explores at random.
FUZZ_SECONDS ?= 60
CI_FUZZ_SECONDS ?= 40
test-reliability: setup
	@echo "== Reliability: fuzzing ($(CI_FUZZ_SECONDS) s per target) and sanitizers (fast tier)"
	@FUZZ_SEED=$${FUZZ_SEED:-1} bash scripts/fuzz.sh $(CI_FUZZ_SECONDS)
	@bash scripts/sanitize.sh --fast

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

fuzz: setup
	@bash scripts/fuzz.sh $(FUZZ_SECONDS)

sanitize: setup
	@bash scripts/sanitize.sh

bench: setup
	@for b in benchmarks/[!_]*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf build .stamps dist .venv-pypi
