#!/usr/bin/env bash
# Install what is missing on a fresh Debian 12 machine, then build and install
# stemroi (editable) into ./.venv. Idempotent: a re-run only rebuilds what changed.
#   STEMROI_VENV   venv path (default: ./.venv)
#   STEMROI_NATIVE ON (default) tunes this local build for this CPU; OFF for a portable build
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
venv="${STEMROI_VENV:-$root/.venv}"
stamps="$root/.stamps"
mkdir -p "$stamps"
log="$stamps/setup.log"
: >"$log"

step() {  # step "description" command...: run quietly, fail loudly naming the step
  local what="$1"; shift
  : >"$log"
  if ! "$@" >>"$log" 2>&1; then
    echo "stemroi setup: FAILED at step: $what" >&2
    echo "---- last lines of $log ----" >&2
    tail -n 40 "$log" >&2
    exit 1
  fi
}

# 1. Debian packages (LibTorch, Eigen, pybind11, OpenMP, OpenBLAS, the Python stack;
#    Sphinx, pandoc and Chromium for scripts/build_docs.sh).
debs=(build-essential cmake ninja-build git pkg-config
      libtorch-dev libeigen3-dev pybind11-dev libgtest-dev libomp-dev nlohmann-json3-dev
      libopenblas0-pthread
      python3-dev python3-venv python3-pip python3-torch python3-torchvision python3-numpy
      python3-scipy python3-sklearn python3-h5py python3-tifffile python3-pil
      python3-matplotlib python3-pytest python3-pandas python3-tqdm python3-packaging
      python3-pathspec python3-nbformat python3-nbclient python3-ipykernel
      python3-sphinx python3-myst-parser python3-nbsphinx furo pandoc chromium)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "stemroi setup: installing Debian packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  step "apt-get update" $SUDO apt-get update -q
  step "apt-get install ${missing[*]}" env DEBIAN_FRONTEND=noninteractive \
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# 2. A venv on Debian's Python that sees Debian's numpy/torch.
if [ ! -x "$venv/bin/python" ]; then
  echo "stemroi setup: creating venv $venv"
  step "create venv" /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
py="$venv/bin/python"

# 3. PyPI packages Debian lacks (build backend, hypothesis, the optional hyperspy /
#    py4DSTEM / dask adapters), pinned so that Debian's compiled stack stays.
req_hash="$(cat requirements/dev.txt requirements/adapters.txt requirements/constraints.txt | sha256sum | cut -c1-16)"
if [ ! -f "$stamps/pip-$req_hash" ]; then
  echo "stemroi setup: installing PyPI packages (requirements/dev.txt, requirements/adapters.txt)"
  step "pip install requirements/dev.txt requirements/adapters.txt" "$py" -m pip install -q \
    --disable-pip-version-check -c requirements/constraints.txt \
    -r requirements/dev.txt -r requirements/adapters.txt
  rm -f "$stamps"/pip-*; touch "$stamps/pip-$req_hash"
fi

# 4. Build and install stemroi (incremental: CMake's build dir persists under build/).
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
step "build and install stemroi (pip install --no-build-isolation -e .)" \
  "$py" -m pip install -q --disable-pip-version-check --no-build-isolation --no-deps \
    --config-settings=cmake.define.STEMROI_BUILD_TESTS=ON \
    --config-settings=cmake.define.STEMROI_NATIVE="${STEMROI_NATIVE:-ON}" -e .
step "import check" "$py" -c "import stemroi, stemroi._core"
exit 0
