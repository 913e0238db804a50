"""Execute the clustering-study notebook with small settings (STEMROI_NOTEBOOK_QUICK=1)."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "cdte_clustering_study.ipynb"


@pytest.fixture
def kernel_for_this_python(tmp_path, monkeypatch):
    """A temporary kernelspec that runs the current interpreter (the venv's), whatever is installed globally."""
    pytest.importorskip("ipykernel")
    spec_dir = tmp_path / "jupyter" / "kernels" / "stemroi-test"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "stemroi test", "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    return "stemroi-test"


def test_clustering_notebook_runs_quick(ayyubi_dir, kernel_for_this_python, tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("STEMROI_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("STEMROI_DATA_DIR", str(ayyubi_dir.parent))
    monkeypatch.setenv("STEMROI_NOTEBOOK_OUT", str(tmp_path / "out"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name=kernel_for_this_python, timeout=300,
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    for name in ("figure2_CdTe.png", "figure2_STO.png", "cdte_cluster_map.png", "cdte_cluster_montage.png"):
        f = tmp_path / "out" / name
        assert f.exists() and f.read_bytes()[:4] == b"\x89PNG", name
    # the summary table was produced for both data sets and both protocols
    text = "".join(o.get("data", {}).get("text/plain", "") for c in nb.cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "label-free" in text and "label-informed" in text and "STO" in text
