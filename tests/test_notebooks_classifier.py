"""Execute the CdTe / STO study notebooks with small settings (STEMROI_NOTEBOOK_QUICK=1)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ["cdte_vgg16_study.ipynb", "sto_vgg16_study.ipynb"]


@pytest.fixture(scope="module")
def kernel_name(tmp_path_factory):
    """A temporary kernelspec running this interpreter (the venv's python), whatever is installed globally."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    d = tmp_path_factory.mktemp("kernels") / "kernels" / "stemroi-test"
    d.mkdir(parents=True)
    (d / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "stemroi test", "language": "python"}))
    old = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(d.parent.parent) + (os.pathsep + old if old else "")
    yield "stemroi-test"
    if old is None:
        os.environ.pop("JUPYTER_PATH", None)
    else:
        os.environ["JUPYTER_PATH"] = old


# about 1 to 2 minutes per notebook on a shared 2-core machine even with the quick settings
@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name, kernel_name, ayyubi_dir, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("STEMROI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("STEMROI_DATA_DIR", str(ayyubi_dir.parent))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name=kernel_name,
                   resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "grouped-split accuracy" in text
