#!/usr/bin/env bash
# Execute the study notebooks in full mode, one after the other, and write their outputs in place
# (figures embedded, the stamp cell last). tests/test_notebook_outputs.py checks the result.
#
#   scripts/run_notebooks.sh                      # all notebooks in notebooks/
#   scripts/run_notebooks.sh cdte_vgg16_study     # some of them (name with or without .ipynb)
#   NOTEBOOK_OUT=/tmp/nb scripts/run_notebooks.sh # write executed copies there instead of in place
#   STEMROI_NOTEBOOK_QUICK=1 NOTEBOOK_OUT=/tmp/nb scripts/run_notebooks.sh   # quick mode, copies only
#
# The kernel runs this project's interpreter (PYTHON, default .venv/bin/python). OMP_WAIT_POLICY=PASSIVE
# keeps LibTorch's threads from spin-waiting on a shared machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
[ -x "$PYTHON" ] || PYTHON=python3
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
unset MPLBACKEND
if [ "${STEMROI_NOTEBOOK_QUICK:-0}" = "1" ] && [ -z "${NOTEBOOK_OUT:-}" ]; then
    echo "quick mode writes copies only: set NOTEBOOK_OUT" >&2
    exit 2
fi
exec "$PYTHON" - "$@" <<'PY'
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

root = Path("notebooks").resolve()
names = [a if a.endswith(".ipynb") else a + ".ipynb" for a in sys.argv[1:]] or sorted(p.name for p in root.glob("*.ipynb"))
out_dir = Path(os.environ["NOTEBOOK_OUT"]).resolve() if os.environ.get("NOTEBOOK_OUT") else None

# a kernelspec that runs this interpreter, whatever the machine's python3 kernel points at
spec_root = Path(tempfile.mkdtemp(prefix="stemroi_kernels_"))
spec = spec_root / "kernels" / "stemroi-notebooks"
spec.mkdir(parents=True)
(spec / "kernel.json").write_text('{"argv": ["%s", "-Xfrozen_modules=off", "-m", "ipykernel_launcher", "-f", "{connection_file}"], '
                                  '"display_name": "Python 3", "language": "python"}' % sys.executable)
os.environ["JUPYTER_PATH"] = str(spec_root) + os.pathsep + os.environ.get("JUPYTER_PATH", "")
os.environ["STEMROI_NOTEBOOK_DIR"] = str(root)   # the stamp cell hashes the code cells of the file it came from

failed = []
for name in names:
    path = root / name
    nb = nbformat.read(path, as_version=4)
    kernelspec = dict(nb.metadata.get("kernelspec", {}))
    t0 = time.perf_counter()
    print(f"{name}: executing ...", flush=True)
    try:
        NotebookClient(nb, timeout=1800, kernel_name="stemroi-notebooks",
                       resources={"metadata": {"path": str(root)}}).execute()
    except Exception as exc:  # keep going; report at the end
        failed.append(name)
        print(f"{name}: FAILED after {time.perf_counter() - t0:.0f} s: {type(exc).__name__}: {str(exc)[-2000:]}", flush=True)
        continue
    if kernelspec:
        nb.metadata["kernelspec"] = kernelspec
    target = (out_dir / name) if out_dir else path
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    os.replace(tmp, target)
    print(f"{name}: {time.perf_counter() - t0:.0f} s wall, {target.stat().st_size / 1e6:.2f} MB -> {target}", flush=True)
sys.exit(1 if failed else 0)
PY
