"""Executes notebooks/multidefect_segmentation.ipynb with small settings
(STEMROI_NOTEBOOK_QUICK=1) on a kernel that runs this interpreter."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "multidefect_segmentation.ipynb"


@pytest.fixture
def kernel_name(tmp_path, monkeypatch):
    # a throw-away kernelspec pointing at sys.executable, so the notebook runs
    # in the same venv as the tests whatever kernels the machine has
    name = "stemroi-test-unet"
    spec_dir = tmp_path / "kernels" / name
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "stemroi test", "language": "python",
    }))
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join([str(tmp_path), os.environ.get("JUPYTER_PATH", "")]))
    return name


def test_notebook_runs_quick(ayyubi_dir, kernel_name, monkeypatch):
    monkeypatch.setenv("STEMROI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("STEMROI_DATA_DIR", str(ayyubi_dir.parent))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel_name, timeout=300,
                                     resources={"metadata": {"path": str(NOTEBOOK.parent)}})
    client.execute()
    outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "silhouette-chosen k" in outputs
    assert "constant image -> map range per channel" in outputs
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
