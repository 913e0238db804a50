"""Resumable many-frames runs (stemroi.detection.run_batch and the dask adapter):
a run SIGKILLed mid-way resumes to the same result files, byte for byte, as an
uninterrupted run; failures are recorded and retried."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from stemroi.detection import ROIResult, run_batch
from stemroi.detection._batch import MANIFEST_NAME, RESULT_SUFFIX, _exclusive
from stemroi.io import synth
from stemroi.models import PatchClassifier

N_FRAMES = 12
CHILD_TIMEOUT_S = 90

# the batch as a separate program: frames folder, model file, output folder and
# a per-frame delay (so the parent can kill it between frames or inside one)
CHILD = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    from stemroi.detection import run_batch, make_detector

    frames_dir, model_path, out_dir, delay = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    detector = make_detector(model_path, patch=64, stride=32)

    def slow(image):
        time.sleep(delay)
        return detector(image)

    res = run_batch(sorted(Path(frames_dir).glob("*.npy")), slow, out_dir)
    print(json.dumps({"computed": res.n_computed, "skipped": res.n_skipped, "status": res.status}))
""")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A small fitted model file and 12 synthetic 128 x 128 frames (.npy)."""
    root = tmp_path_factory.mktemp("batch")
    X, y, names = synth.make_patch_dataset(n_per_class=8, patch_size=64, classes=["Bulk", "vacancy"], random_state=0)
    clf = PatchClassifier(backbone="small_cnn", mode="finetune", weights=None, max_epochs=2, input_size=16,
                          batch_size=8, validation_fraction=0, calibrate=False, random_state=0, n_threads=1)
    clf.fit(X, y, class_names=names)
    clf.save(root / "model.stemroi")
    frames = root / "frames"
    frames.mkdir()
    for i in range(N_FRAMES):
        img = synth.make_image((128, 128), defects={"vacancy": 1 + i % 2}, random_state=100 + i).image
        np.save(frames / f"f{i:02d}.npy", img.astype(np.float32))
    (root / "child.py").write_text(CHILD)
    return root


def _child(workdir: Path, out_dir: Path, delay: float):
    cmd = [sys.executable, str(workdir / "child.py"), str(workdir / "frames"), str(workdir / "model.stemroi"),
           str(out_dir), str(delay)]
    env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def _finish(proc) -> dict:
    try:
        out, err = proc.communicate(timeout=CHILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the batch subprocess did not finish in time")
    assert proc.returncode == 0, err
    return json.loads(out.strip().splitlines()[-1])


def _manifest(out_dir: Path) -> list:
    return [json.loads(line) for line in (out_dir / MANIFEST_NAME).read_text().splitlines()]


def _done_lines(out_dir: Path) -> int:
    try:
        text = (out_dir / MANIFEST_NAME).read_text()
    except FileNotFoundError:
        return 0
    return text.count('"status": "done"')


def _result_files(out_dir: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(out_dir.glob("*" + RESULT_SUFFIX))}


def test_a_killed_run_resumes_to_the_results_of_an_uninterrupted_run(workdir, tmp_path):
    names = [f"f{i:02d}" for i in range(N_FRAMES)]
    ref = tmp_path / "ref"
    assert _finish(_child(workdir, ref, 0.0))["computed"] == N_FRAMES

    out = tmp_path / "resumed"
    proc = _child(workdir, out, 0.4)
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    try:
        while _done_lines(out) < 3:
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the batch subprocess made no progress"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=CHILD_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL
    done_before = _done_lines(out)
    assert 3 <= done_before < N_FRAMES

    summary = _finish(_child(workdir, out, 0.0))
    assert summary["skipped"] >= done_before  # a frame finished after the last poll counts too
    assert summary["computed"] + summary["skipped"] == N_FRAMES
    assert summary["status"] == ["done"] * N_FRAMES

    records = _manifest(out)
    assert [r["name"] for r in records] == names  # every frame exactly once, in input order
    assert all(r["status"] == "done" and r["file"] == r["name"] + RESULT_SUFFIX for r in records)
    assert sorted(p.name for p in out.iterdir()) == sorted([MANIFEST_NAME, ".stemroi-batch.lock"]
                                                           + [n + RESULT_SUFFIX for n in names])
    resumed, reference = _result_files(out), _result_files(ref)
    assert list(resumed) == [n + RESULT_SUFFIX for n in names]
    assert resumed == reference
    doc = json.loads(resumed["f00" + RESULT_SUFFIX])
    assert doc["summary"]["n_tiles"] == 9 and doc["summary"]["image_shape"] == [128, 128]


@pytest.fixture(scope="module")
def model(workdir):
    return PatchClassifier.load(workdir / "model.stemroi")


def _frames(n=4):
    return [(f"s{i}", synth.make_image((128, 128), random_state=i).image) for i in range(n)]


def test_a_failing_frame_is_recorded_and_retried_by_the_next_run(model, tmp_path):
    frames = _frames()
    bad = list(frames)
    bad[2] = ("s2", np.full((128, 128), np.nan, np.float32))
    seen = []
    res = run_batch(bad, model, tmp_path, patch=64, stride=64, progress=lambda d, t: seen.append((d, t)))
    assert res.status == ["done", "done", "failed", "done"]
    assert list(res.failed) == ["s2"] and res.failed["s2"].startswith("ValueError: image: contains NaN")
    assert res[2] is None and isinstance(res[3], ROIResult) and len(res[3]) == 4
    assert seen == [(0, 4), (1, 4), (2, 4), (3, 4), (4, 4)]
    rec = {r["name"]: r for r in _manifest(tmp_path)}
    assert rec["s2"]["status"] == "failed" and "NaN" in rec["s2"]["error"] and "s2" + RESULT_SUFFIX not in os.listdir(tmp_path)
    before = _result_files(tmp_path)

    again = run_batch(frames, model, tmp_path, patch=64, stride=64)
    assert again.ok and (again.n_computed, again.n_skipped) == (1, 3)
    assert [r["name"] for r in _manifest(tmp_path)] == ["s0", "s1", "s2", "s3"]
    after = _result_files(tmp_path)
    assert {k: after[k] for k in before} == before  # done frames untouched
    from stemroi import detect

    assert after["s2" + RESULT_SUFFIX].decode() == detect(frames[2][1], model, patch=64, stride=64).to_json()
    # results in input order, read back from the files
    for (name, img), r in zip(frames, again):
        np.testing.assert_allclose(r.probabilities, detect(img, model, patch=64, stride=64).probabilities)


def test_retries_within_a_run_and_damaged_results_are_recomputed(model, tmp_path):
    from stemroi.detection import make_detector

    calls = []
    det = make_detector(model, patch=64, stride=64)

    def flaky(image):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("transient read error")
        return det(image)

    res = run_batch(_frames(3), flaky, tmp_path, retries=1)
    assert res.ok and len(calls) == 4
    assert [r.get("attempts") for r in _manifest(tmp_path)] == [1, 2, 1]
    (tmp_path / ("s1" + RESULT_SUFFIX)).write_text('{"tiles": []}')  # changed on disk: sha256 differs
    (tmp_path / ("s0" + RESULT_SUFFIX)).unlink()
    again = run_batch(_frames(3), det, tmp_path)
    assert (again.n_computed, again.n_skipped) == (2, 1)
    fresh = run_batch(_frames(3), det, tmp_path, resume=False)
    assert (fresh.n_computed, fresh.n_skipped) == (3, 0)


def test_frame_names_and_arguments_are_checked(model, tmp_path):
    img = np.zeros((128, 128), np.float32)
    with pytest.raises(ValueError, match="duplicate frame name 'a'"):
        run_batch([("a", img), ("a", img)], model, tmp_path)
    with pytest.raises(ValueError, match="frame name '../x'"):
        run_batch([("../x", img)], model, tmp_path)
    with pytest.raises(ValueError, match="retries must be an integer >= 0, got -1"):
        run_batch([("a", img)], model, tmp_path, retries=-1)
    with pytest.raises(TypeError, match="got int"):
        run_batch([3], model, tmp_path)
    with pytest.raises(TypeError, match="got dict"):
        run_batch([("a", img)], {"not": "a model"}, tmp_path)
    with _exclusive(tmp_path):
        with pytest.raises(OSError, match="in use by another batch run"):
            run_batch([("a", img)], model, tmp_path)


def test_dask_runs_resume_through_the_same_manifest(workdir, tmp_path):
    distributed = pytest.importorskip("distributed")
    from stemroi.adapters.dask import detect_frames

    files = sorted((workdir / "frames").glob("*.npy"))[:4]
    local = run_batch(files, workdir / "model.stemroi", tmp_path / "local", patch=64, stride=32)
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=2, dashboard_address=None) as client:
        res = detect_frames(files, workdir / "model.stemroi", client=client, out_dir=tmp_path / "dask",
                            patch=64, stride=32)
        assert res.ok and res.n_computed == 4
        assert _result_files(tmp_path / "dask") == _result_files(tmp_path / "local")
        (tmp_path / "dask" / ("f01" + RESULT_SUFFIX)).unlink()
        frames = files + [("g", np.full((128, 128), np.inf, np.float32))]
        again = detect_frames(frames, workdir / "model.stemroi", client=client, out_dir=tmp_path / "dask",
                              patch=64, stride=32)
    assert (again.n_computed, again.n_skipped) == (2, 3)  # f01 (deleted) and g
    assert again.status == ["done"] * 4 + ["failed"]
    assert "contains NaN or infinity" in again.failed["g"]
    assert _result_files(tmp_path / "dask") == _result_files(tmp_path / "local")
    assert [r["name"] for r in _manifest(tmp_path / "dask")] == ["f00", "f01", "f02", "f03", "g"]
    assert [r.counts() for r in again[:4]] == [r.counts() for r in local]
