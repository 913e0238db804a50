"""The stemroi command line end to end on tiny inputs (train, detect, demo)."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from stemroi.cli import main
from test_detect import synth_module  # noqa: F401  (fixture: stemroi.synth or a stand-in)


@pytest.fixture
def patch_folder(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "patches"
    d.mkdir()
    for k, name in enumerate(["Bulk", "Vacancy_X"]):
        for i in range(12):
            a = (rng.random((32, 32)) * 60).astype(np.uint8)
            if k == 1:
                a[8:24, 8:24] = 250
            a[0, 0] = i  # no exact duplicates
            Image.fromarray(a).save(d / f"{name}_{i}.tif")
    return d


def test_train_then_detect(tmp_path, patch_folder, capsys):
    model = tmp_path / "m.stemroi"
    rc = main(["train", str(patch_folder), "--out", str(model), "--epochs", "3", "--quiet", "--threads", "1",
               "--no-overlap-groups"])
    assert rc == 0 and model.is_file()
    img = (np.random.default_rng(1).random((64, 96)) * 60).astype(np.uint8)
    img[:32, :32] = 250
    Image.fromarray(img).save(tmp_path / "frame.png")
    out = tmp_path / "det"
    rc = main(["detect", str(tmp_path / "frame.png"), "--model", str(model), "--out", str(out), "--quiet"])
    assert rc == 0
    doc = json.loads((out / "frame_rois.json").read_text())
    assert doc["summary"]["n_tiles"] == 2 * 3
    assert (out / "frame_rois.csv").is_file() and (out / "frame_rois.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())


def test_cli_errors(tmp_path, patch_folder, capsys):
    rc = main(["detect", str(tmp_path / "nope.png"), "--model", str(tmp_path / "nope.stemroi"), "--out", str(tmp_path)])
    assert rc == 1
    assert "error" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["train", str(empty), "--out", str(tmp_path / "m.stemroi"), "--quiet"])
    assert rc == 1
    with pytest.raises(SystemExit):
        main(["train"])


def test_demo_small(tmp_path, synth_module):
    """`stemroi demo --size 256` end to end (stemroi.synth, or the test stand-in before it is merged)."""
    out = tmp_path / "demo"
    rc = main(["demo", "--size", "256", "--threads", "1", "--out", str(out)])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["backbone"] and s["weights"]
    assert s["scores_vs_ground_truth"]["recall"] is not None
    for f in ("rois.png", "rois.json", "rois.csv", "model.stemroi"):
        assert (out / f).is_file()


def test_demo_subprocess_from_readme(tmp_path):
    """The README's command, as a fresh process (needs the real stemroi.synth)."""
    pytest.importorskip("stemroi.synth", reason="stemroi.synth (data area) not merged yet")
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "stemroi.cli", "demo", "--size", "256", "--threads", "1", "--out", str(out)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["files"]
