#!/usr/bin/env bash
# The PyPI lane: what users run. A fresh venv (no system site packages) with
# PyPI's current torch (a CUDA build), torchvision, numpy 2, SciPy,
# scikit-learn, hyperspy, rosettasciio and py4DSTEM, pinned in
# requirements/pypi.txt; stemroi built from its sdist against that torch's
# LibTorch; then the whole pytest suite.
#   STEMROI_PYPI_VENV    venv path (default: ./.venv-pypi, recreated each run)
#   STEMROI_PYPI_PYTHON  interpreter for the venv (default: python3 on PATH, ignoring an
#                        activated venv, whose python3 would be Debian's 3.11.2 here)
#   STEMROI_WHEELHOUSE   download cache kept across runs (default: ~/.cache/stemroi-pypi/wheels)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${STEMROI_PYPI_VENV:-$root/.venv-pypi}"
if [[ -n "${STEMROI_PYPI_PYTHON:-}" ]]; then
  python="$STEMROI_PYPI_PYTHON"
else
  # an activated venv (e.g. the Debian lane's .venv) must not choose the lane's interpreter
  path_without_venv="$(tr ':' '\n' <<<"$PATH" | grep -vxF "${VIRTUAL_ENV:-/nonexistent}/bin" | paste -sd: -)"
  python="$(PATH="$path_without_venv" command -v python3 || true)"
  [[ -n "$python" ]] || { echo "stemroi PyPI lane: no python3 on PATH (set STEMROI_PYPI_PYTHON)" >&2; exit 1; }
fi
# the pins of requirements/pypi.txt need it (soupsieve 4.1.3: Requires-Python >= 3.11.5)
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11, 5))'; then
  echo "stemroi PyPI lane: $python is Python $("$python" -c 'import platform; print(platform.python_version())'); the" \
       "pins of requirements/pypi.txt need >= 3.11.5. Set STEMROI_PYPI_PYTHON to such an interpreter." >&2
  exit 1
fi
wheelhouse="${STEMROI_WHEELHOUSE:-$HOME/.cache/stemroi-pypi/wheels}"
log="$root/.stamps/pypi-lane.log"
mkdir -p "$root/.stamps" "$wheelhouse"

step() {  # step "description" command...: run quietly, fail loudly naming the step
  local what="$1"; shift
  local t0=$SECONDS
  if ! "$@" >>"$log" 2>&1; then
    echo "stemroi PyPI lane: FAILED at step: $what" >&2
    echo "---- last lines of $log ----" >&2
    tail -n 60 "$log" >&2
    exit 1
  fi
  echo "stemroi PyPI lane: $what ($((SECONDS - t0)) s)"
}
: >"$log"

# Eigen, OpenMP and a compiler come from the machine (scripts/setup.sh installs them);
# everything Python, torch included, comes from PyPI.
step "create fresh venv ($($python --version 2>&1))" bash -c "rm -rf '$venv' && '$python' -m venv '$venv'"
py="$venv/bin/python"
step "download wheels into $wheelhouse (cached across runs)" \
  "$py" -m pip download -q --disable-pip-version-check -d "$wheelhouse" -r requirements/pypi.txt
step "install requirements/pypi.txt from the wheelhouse" \
  "$py" -m pip install -q --disable-pip-version-check --no-index --find-links "$wheelhouse" -r requirements/pypi.txt
rm -rf "$root/dist"
step "build the sdist (python -m build --sdist)" "$py" -m build --sdist --no-isolation --outdir "$root/dist" .
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
step "build and install stemroi from the sdist against PyPI's torch" \
  "$py" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps "$root"/dist/stemroi-*.tar.gz
"$py" - <<'PY'
import numpy, scipy, sklearn, torch, torchvision
import stemroi, stemroi._lib
print("stemroi PyPI lane: python", __import__("sys").version.split()[0], "| torch", torch.__version__,
      "| torchvision", torchvision.__version__, "| numpy", numpy.__version__, "| scipy", scipy.__version__,
      "| scikit-learn", sklearn.__version__)
PY
echo "== Python tests, PyPI lane (pytest)"
# run from a copy of the tests so that the installed stemroi, not python/, is imported
cd "$root"
"$py" -m pytest -p no:cacheprovider ${PYTEST_ARGS:-}
