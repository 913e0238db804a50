"""The stemroi command line end to end on small inputs: train, detect, cluster,
anomaly, segment, info, demo; bad input exits 2 with a one-line message."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import stemroi
from stemroi.cli import main
from test_detect import synth_module  # noqa: F401  (fixture: stemroi.io.synth or a stand-in)

PY_ENV = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
SQUARE = (72, 88)  # rows and cols of the planted dark square in square.png
VACANCY = (80, 80)  # requested site of the planted vacancy in vacancy.png


def _save_png(path: Path, image01: np.ndarray) -> Path:
    Image.fromarray(np.clip(np.rint(image01 * 255), 0, 255).astype(np.uint8)).save(path)
    return path


def _other_lines(text: str) -> list:
    """stderr lines but the unfamiliar-image warnings (tiny test models find many frames unfamiliar)."""
    return [line for line in text.strip().splitlines() if not re.match(r"stemroi \w+: warning: .* unfamiliar", line)]


def _error_line(capsys) -> str:
    err = _other_lines(capsys.readouterr().err)
    assert len(err) == 1, err  # one line, no traceback
    return err[0]


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


@pytest.fixture(scope="module")
def frames(tmp_path_factory):
    """Synthetic perovskite frames (cell 8 px): a defect-free bulk frame, a frame with a
    dark 16 x 16 square, a frame with one vacancy, and a folder of labelled 32 px patches."""
    import tifffile

    from stemroi.io import synth

    d = tmp_path_factory.mktemp("frames")
    bulk = synth.make_image((160, 160), cell_px=8, random_state=1)
    other = synth.make_image((160, 160), cell_px=8, random_state=2).image.copy()
    other[SQUARE[0]:SQUARE[1], SQUARE[0]:SQUARE[1]] = other.min()
    vac = synth.make_image((160, 160), cell_px=8, defects=[{"kind": "vacancy", "row": VACANCY[0], "col": VACANCY[1]}],
                           random_state=2)
    patches, labels, names = synth.make_patch_dataset(12, 32, classes=["Bulk", "vacancy"], cell_px=8, random_state=0)
    folder = d / "patches"
    folder.mkdir()
    for i, (p, lab) in enumerate(zip(patches, labels)):
        tifffile.imwrite(folder / f"{names[lab]}_{i}.tif", np.rint(p * 255).astype(np.uint8))
    return {"bulk": _save_png(d / "bulk.png", bulk.image), "square": _save_png(d / "square.png", other),
            "vacancy": _save_png(d / "vacancy.png", vac.image), "vacancy_site": vac.defects[0], "patches": folder,
            "dir": d}


@pytest.fixture(scope="module")
def cvae_run(frames):
    """`stemroi anomaly --train` on the bulk frame, mapping the frame with the square (tiny training)."""
    out = frames["dir"] / "anomaly"
    model = frames["dir"] / "cvae.stemroi"
    rc = main(["anomaly", "--train", str(frames["bulk"]), "--model-out", str(model), str(frames["square"]),
               "--out", str(out), "--epochs", "2", "--crops", "200", "--crop", "32", "--stride", "16",
               "--threads", "1", "--quiet"])
    assert rc == 0
    return out, model


@pytest.fixture(scope="module")
def unet_run(frames):
    """`stemroi segment --train` on the patch folder, mapping the vacancy frame."""
    out = frames["dir"] / "segment"
    rc = main(["segment", "--train", str(frames["patches"]), str(frames["vacancy"]), "--out", str(out),
               "--epochs", "30", "--samples-per-epoch", "64", "--threads", "1", "--quiet",
               # the label-free pseudo-labels keep this test fast (the default recipe trains a CVAE first)
               "--pseudo-label", "lattice", "--learning-rate", "2e-3"])
    assert rc == 0
    return out, out / "model.stemroi"


# --------------------------------------------------------------------------- train / detect / demo
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
    # the thread count changes the speed and at most the last bits of the network's output (LibTorch's
    # reductions; bit-identical with Debian's torch, not with PyPI's), never the labels or flags
    rc = main(["detect", str(tmp_path / "frame.png"), "--model", str(model), "--out", str(tmp_path / "det1"),
               "--quiet", "--no-plot", "--threads", "1"])
    assert rc == 0
    one = json.loads((tmp_path / "det1" / "frame_rois.json").read_text())["tiles"]
    assert len(one) == len(doc["tiles"])
    for a, b in zip(one, doc["tiles"]):
        assert {k: v for k, v in a.items() if not isinstance(v, float)} == \
            {k: v for k, v in b.items() if not isinstance(v, float)}
        for k, v in a.items():
            if isinstance(v, float):
                assert v == pytest.approx(b[k], rel=1e-5, abs=1e-6), k
    assert (out / "frame_rois.csv").is_file() and (out / "frame_rois.png").stat().st_size > 1000
    assert json.loads((out / "summary.json").read_text())
    # a folder stands for its image files (sorted; other files ignored)
    folder = tmp_path / "frames"
    folder.mkdir()
    Image.fromarray(img).save(folder / "b.png")
    Image.fromarray(img[:, ::-1].copy()).save(folder / "a.tif")
    (folder / "notes.txt").write_text("not an image")
    rc = main(["detect", str(folder), "--model", str(model), "--out", str(tmp_path / "by_folder"), "--quiet", "--no-plot"])
    assert rc == 0
    assert list(json.loads((tmp_path / "by_folder" / "summary.json").read_text())) == [str(folder / "a.tif"),
                                                                                       str(folder / "b.png")]
    # an image unlike the training patches (a smooth lattice, where they are noise) gets a warning, also
    # with --quiet, on stderr and in summary.json; the frame like them does not
    yy, xx = np.mgrid[0:64, 0:96]
    Image.fromarray((127 + 120 * np.cos(xx / 2.0) * np.cos(yy / 2.0)).astype(np.uint8)).save(tmp_path / "other.png")
    capsys.readouterr()
    rc = main(["detect", str(tmp_path / "frame.png"), str(tmp_path / "other.png"), "--model", str(model), "--out",
               str(tmp_path / "mixed"), "--quiet", "--no-plot"])
    assert rc == 0
    err = capsys.readouterr().err
    records = json.loads((tmp_path / "mixed" / "summary.json").read_text())
    other = records[str(tmp_path / "other.png")]
    assert other["n_unfamiliar"] == other["n_tiles"] == 6
    assert other["warning"].startswith("6 of 6 tiles are unfamiliar")
    assert f"stemroi detect: warning: {tmp_path / 'other.png'}: 6 of 6 tiles are unfamiliar" in err
    assert "warning" not in records[str(tmp_path / "frame.png")] and "frame.png" not in err
    # info on a classifier file
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    text = capsys.readouterr().out
    assert "stemroi.PatchClassifier" in text and "Bulk, Vacancy_X" in text


def test_train_few_label_with_unlabelled_frame_then_detect_and_info(tmp_path, frames, capsys):
    # 12 labelled 32 px patches per class, the vacancy frame as unlabelled tiles for self-training
    model = tmp_path / "few.stemroi"
    rc = main(["train", str(frames["patches"]), "--few-label", "--unlabelled", str(frames["vacancy"]),
               str(frames["bulk"]), "--out", str(model), "--threads", "1"])
    assert rc == 0 and model.is_file()
    text = capsys.readouterr().out
    assert "24 labelled patches, 50 unlabelled for self-training" in text  # 2 frames of 5 x 5 tiles
    # the student (the default): the 24 labelled and the last round's 47 pseudo-labelled tiles, with the head
    assert ("predicts: 0.5 x a small_cnn student fine-tuned from the STEM weights on the labelled and 47 pseudo-"
            "labelled patches, plus 0.5 x the head (probabilities)") in text
    from stemroi import FewLabelClassifier

    loaded = FewLabelClassifier.load(model)
    assert loaded.n_pseudo_labelled_ == [25, 32, 40, 45, 47] and loaded.class_names_ == ["Bulk", "vacancy"]
    assert loaded.student_ is not None and loaded.student_.class_names_ == ["Bulk", "vacancy"]
    out = tmp_path / "det"
    rc = main(["detect", str(frames["vacancy"]), "--model", str(model), "--out", str(out), "--quiet", "--no-plot"])
    assert rc == 0
    doc = json.loads((out / "vacancy_rois.json").read_text())
    assert doc["summary"]["n_tiles"] == 25 and "FewLabelClassifier" in doc["summary"]["method"]
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    text = capsys.readouterr().out
    assert "stemroi.FewLabelClassifier" in text and "made by `stemroi train --few-label`" in text
    assert "unlabelled tiles of" in text and "lattice_residual (" in text


def test_few_label_unlabelled_stack_is_its_frames(tmp_path, frames, capsys):
    # the two frames saved as one stack give the tiles (and the self-training) of the two files
    from stemroi import FewLabelClassifier
    from stemroi.io import read_image

    stack = tmp_path / "series.npy"
    np.save(stack, np.stack([read_image(frames["vacancy"]), read_image(frames["bulk"])]))
    model = tmp_path / "few.stemroi"
    rc = main(["train", str(frames["patches"]), "--few-label", "--unlabelled", str(stack), "--student", "none",
               "--out", str(model), "--threads", "1"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "24 labelled patches, 50 unlabelled for self-training" in text and "predicts: the head" in text
    loaded = FewLabelClassifier.load(model)
    assert loaded.n_pseudo_labelled_ == [25, 32, 40, 45, 47] and loaded.student_ is None
    rc = main(["train", str(frames["patches"]), "--student", "small_cnn", "--out", str(tmp_path / "x.stemroi")])
    assert rc == 2 and "--student goes with --few-label" in _error_line(capsys)


def test_cli_errors(tmp_path, patch_folder, capsys):
    rc = main(["detect", str(tmp_path / "nope.png"), "--model", str(tmp_path / "nope.stemroi"), "--out", str(tmp_path)])
    assert rc == 2
    assert "nope.stemroi" in _error_line(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    rc = main(["train", str(empty), "--out", str(tmp_path / "m.stemroi"), "--quiet"])
    assert rc == 2
    assert "no files match" in _error_line(capsys)
    assert main(["train"]) == 2
    assert "patch_folder" in _error_line(capsys)


def test_demo_small(tmp_path, synth_module):
    """`stemroi demo --size 256` end to end (stemroi.io.synth, or the test stand-in before it is merged)."""
    out = tmp_path / "demo"
    rc = main(["demo", "--size", "256", "--threads", "1", "--out", str(out)])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["backbone"] and s["weights"]
    assert s["scores_vs_ground_truth"]["recall"] is not None
    for f in ("rois.png", "rois.json", "rois.csv", "model.stemroi"):
        assert (out / f).is_file()


def test_demo_subprocess_from_readme(tmp_path):
    """The README's command, as a fresh process (needs the real stemroi.io.synth)."""
    pytest.importorskip("stemroi.io.synth", reason="stemroi.io.synth (data area) not merged yet")
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "stemroi.cli", "demo", "--size", "256", "--threads", "1",
                        "--out", str(out)], capture_output=True, text=True, timeout=300, env=PY_ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "summary.json").read_text())["files"]


# --------------------------------------------------------------------------- cluster
def test_cluster_blank_frame_says_why(tmp_path, capsys):
    """A blank frame (beam off, constant detector) has nothing to cluster: a clear error, no outputs."""
    import tifffile

    path = tmp_path / "blank.tif"
    tifffile.imwrite(path, np.full((128, 128), 0.5, np.float32))
    out = tmp_path / "cl"
    rc = main(["cluster", str(path), "--out", str(out), "--patch", "32", "--threads", "1", "--quiet"])
    assert rc == 2
    assert "all identical (blank or constant input?)" in _error_line(capsys)
    assert not out.exists() or not any(out.iterdir())


def test_cluster_small_image_lowers_the_default_k_max(tmp_path, frames, capsys):
    """9 tiles (160 px at 64 px: origins 0, 64 and 96, the last flush with the border): the default
    k = 2..10 becomes 2..8 (the silhouette needs k <= n - 1), and says so."""
    out = tmp_path / "cl"
    rc = main(["cluster", str(frames["square"]), "--out", str(out), "--patch", "64", "--threads", "1", "--no-plot"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "9 samples, so k = 2..8" in err
    s = json.loads((out / "summary.json").read_text())
    assert f", {s['result']['n_roi']} of 9 tiles flagged; wrote {out}" in err
    assert s["k_range"] == [2, 8] and sorted(int(k) for k in s["silhouette"]) == list(range(2, 9))


def test_cluster_image(tmp_path, frames):
    """Label-free cluster map of a 160 px frame cut into 25 tiles of 32 px."""
    out = tmp_path / "cl"
    rc = main(["cluster", str(frames["square"]), "--out", str(out), "--patch", "32", "--k-max", "5",
               "--threads", "1", "--quiet"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    sil = {int(k): v for k, v in s["silhouette"].items()}
    assert sorted(sil) == [2, 3, 4, 5] and all(-1 <= v <= 1 for v in sil.values())
    assert s["chosen_k"] == max(sil, key=sil.get)
    assert s["input_kind"] == "image" and s["n_tiles"] == 25 and s["patch"] == s["stride"] == 32
    doc = json.loads((out / "square_rois.json").read_text())
    assert doc["summary"]["n_tiles"] == 25 and doc["metadata"]["n_clusters"] == s["chosen_k"]
    labels = [t["label"] for t in doc["tiles"]]
    assert doc["bulk_label"] == max(set(labels), key=labels.count)  # the most frequent cluster is "bulk"
    # the two tiles holding the dark square (rows/cols 72-88 span tiles 64-96) leave the bulk cluster
    square_tiles = [t for t in doc["tiles"] if t["row"] == 64 and t["col"] == 64]
    assert square_tiles and all(t["roi"] for t in square_tiles)
    assert (out / "square_rois.csv").read_text().count("\n") == 26
    for f in ("square_rois.png", "silhouette.png", "montage.png"):
        assert (out / f).stat().st_size > 1000



def test_cluster_several_images_pools_their_tiles(tmp_path, frames, capsys):
    """Several images: one clustering of all their tiles (the same k and silhouettes as PatchClusterer on the
    pooled tiles), a map per image with the same cluster numbers; a folder among them is refused."""
    from stemroi.cluster import PatchClusterer
    from stemroi.detection import to_unit_range
    from stemroi.io import read_image
    from stemroi.preprocessing import PatchGrid

    twin = tmp_path / "twin"
    twin.mkdir()
    copy = twin / "square.png"  # the same frame under the same stem: outputs square_1 / square_2
    copy.write_bytes(frames["square"].read_bytes())
    out = tmp_path / "cl"
    rc = main(["cluster", str(frames["square"]), str(frames["bulk"]), str(copy), "--out", str(out), "--patch", "32",
               "--k-max", "5", "--threads", "1", "--no-plot"])
    assert rc == 0
    assert "75 tiles of 3 images, clustered together" in capsys.readouterr().err
    s = json.loads((out / "summary.json").read_text())
    assert s["input_kind"] == "images" and s["n_tiles"] == 75
    assert list(s["images"]) == [str(frames["square"]), str(frames["bulk"]), str(copy)]
    assert all(r["n_tiles"] == 25 for r in s["images"].values())
    grid = PatchGrid(patch_size=32, stride=32, edge="drop")
    tiles = np.concatenate([grid.extract(to_unit_range(read_image(p))) for p in (frames["square"], frames["bulk"], copy)])
    # an image's tiles: lattice_residual and the silhouette, the maps' recipe
    ref = PatchClusterer("lattice_residual", k_range=range(2, 6), random_state=0, n_threads=1).fit(tiles)
    assert s["features"] == "lattice_residual" and s["k_rule"] == "silhouette" and s["k_selected_by"] == "silhouette"
    assert s["chosen_k"] == ref.n_clusters_
    assert {int(k): v for k, v in s["silhouette"].items()} == pytest.approx(ref.silhouette_scores_, abs=1e-12)
    first, second = (json.loads((out / f"square_{i}_rois.json").read_text())["tiles"] for i in (1, 2))
    assert [t["label"] for t in first] == [t["label"] for t in second]  # one clustering: same tiles, same cluster
    assert [t["label"] for t in first] == [f"cluster {c}" for c in ref.predict(tiles[:25])]
    assert (out / "bulk_rois.csv").is_file()
    assert main(["cluster", str(frames["square"]), str(twin), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert "a patch folder is clustered on its own" in _error_line(capsys)
    # the same three frames as one stack file: the same clustering, maps named by frame
    series = tmp_path / "series.npy"
    np.save(series, np.stack([read_image(p) for p in (frames["square"], frames["bulk"], copy)]))
    rc = main(["cluster", str(series), "--out", str(tmp_path / "st"), "--patch", "32", "--k-max", "5",
               "--threads", "1", "--no-plot", "--quiet"])
    assert rc == 0
    st = json.loads((tmp_path / "st" / "summary.json").read_text())
    assert list(st["images"]) == [f"{series}[{i}]" for i in range(3)] and st["chosen_k"] == s["chosen_k"]
    frame0 = json.loads((tmp_path / "st" / "series_frame0_rois.json").read_text())["tiles"]
    assert [t["label"] for t in frame0] == [t["label"] for t in first]
    # a calibrated TIFF series: every frame keeps the file's pixel size in the summary
    import tifffile

    tseries = tmp_path / "series.tif"
    tifffile.imwrite(tseries, np.stack([read_image(p) for p in (frames["square"], frames["bulk"])]), imagej=True,
                     resolution=(1 / 0.05, 1 / 0.05), metadata={"unit": "nm", "axes": "TYX"})
    assert main(["cluster", str(tseries), "--out", str(tmp_path / "tt"), "--patch", "32", "--k-max", "5",
                 "--threads", "1", "--no-plot", "--quiet"]) == 0
    tt = json.loads((tmp_path / "tt" / "summary.json").read_text())
    assert [r["calibration"] for r in tt["images"].values()] == [{"pixel_size": 0.05, "unit": "nm"}] * 2

def test_cluster_image_roi_rules(tmp_path, frames):
    """--roi and --roi-threshold reach cluster_map (recorded in the ROIs' metadata); bad values are refused."""
    docs = {}
    for rule in ("score", "cluster"):
        out = tmp_path / rule
        rc = main(["cluster", str(frames["square"]), "--out", str(out), "--patch", "32", "--k-max", "4",
                   "--threads", "1", "--quiet", "--no-plot", "--roi", rule, "--roi-threshold", "2.5"])
        assert rc == 0
        docs[rule] = json.loads((out / "square_rois.json").read_text())
    assert docs["score"]["metadata"]["roi_threshold"] == 2.5 and "median" in docs["score"]["metadata"]["roi_rule"]
    assert docs["cluster"]["metadata"]["roi_threshold"] is None
    bulk = docs["cluster"]["bulk_label"]
    assert [t["roi"] for t in docs["cluster"]["tiles"]] == [t["label"] != bulk for t in docs["cluster"]["tiles"]]
    cut = docs["score"]["metadata"]["roi_score_cut"]
    assert [t["roi"] for t in docs["score"]["tiles"]] == [t["score"] > cut for t in docs["score"]["tiles"]]
    for bad in (["--roi", "outlier"], ["--roi-threshold", "0"], ["--roi-threshold", "nan"]):
        assert main(["cluster", str(frames["square"]), "--out", str(tmp_path / "bad"), "--quiet", *bad]) == 2


def test_cluster_k_rule_silhouette_1se_is_the_estimators_choice(tmp_path, frames, capsys):
    """--k-rule silhouette_1se: the k that PatchClusterer's 1-SE rule picks on the same patches,
    recorded in summary.json; a small image's default k range shrinks to what 80 % subsamples allow."""
    out = tmp_path / "c1se"
    rc = main(["cluster", str(frames["patches"]), "--out", str(out), "--features", "fft", "--k-rule",
               "silhouette_1se", "--threads", "1", "--quiet", "--no-plot"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    ds = stemroi.load_patch_folder(frames["patches"])
    ref = stemroi.PatchClusterer("fft", k_range=range(2, 11), random_state=0, n_threads=1, k_criteria="stability",
                                 k_rule="silhouette_1se").fit(np.asarray(ds.patches, np.float32))
    assert s["k_rule"] == "silhouette_1se" and s["k_range"] == [2, 10]
    assert s["chosen_k"] == ref.n_clusters_ == ref.selection_.choices["silhouette_1se"]
    rows = (out / "clusters.csv").read_text().splitlines()[1:]
    np.testing.assert_array_equal([int(r.split(",")[2]) for r in rows], ref.labels_)
    # 9 tiles: the silhouette allows k up to 8, the 1-SE rule's subsamples of 7 up to 6
    rc = main(["cluster", str(frames["square"]), "--out", str(tmp_path / "small"), "--patch", "64", "--k-rule",
               "silhouette_1se", "--threads", "1", "--no-plot"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "9 samples, so k = 2..6 (the 1-SE rule's 80 % subsamples need k < 0.8 n)" in err
    assert "chosen by the silhouette_1se rule" in err
    assert json.loads((tmp_path / "small" / "summary.json").read_text())["k_range"] == [2, 6]


def test_cluster_k_rule_agreement_is_the_estimators_choice(tmp_path, frames, capsys):
    """A patch folder with the default options: the k and labels of PatchClusterer() (the Tukey
    descriptor, the agreement rule) on the same patches, with the agreement per k in summary.json."""
    out = tmp_path / "cagree"
    rc = main(["cluster", str(frames["patches"]), "--out", str(out), "--threads", "1", "--no-plot"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    ds = stemroi.load_patch_folder(frames["patches"])
    ref = stemroi.PatchClusterer(k_range=range(2, 11), random_state=0, n_threads=1).fit(np.asarray(ds.patches,
                                                                                                  np.float32))
    assert s["features"] == "lattice_residual_tukey" and s["k_rule"] == "agreement"
    assert s["k_selected_by"] == ref.k_selected_by_ and s["chosen_k"] == ref.n_clusters_
    assert s["agreement"] == {str(k): pytest.approx(v) for k, v in ref.agreement_scores_.items()}
    rows = (out / "clusters.csv").read_text().splitlines()[1:]
    np.testing.assert_array_equal([int(r.split(",")[2]) for r in rows], ref.labels_)
    said = "chosen by the agreement rule" if ref.k_selected_by_ == "agreement" else "agree only at k = 2"
    assert said in capsys.readouterr().err
    # named explicitly: the same run
    rc = main(["cluster", str(frames["patches"]), "--out", str(tmp_path / "explicit"), "--features",
               "lattice_residual_tukey", "--k-rule", "agreement", "--threads", "1", "--no-plot", "--quiet"])
    assert rc == 0
    assert json.loads((tmp_path / "explicit" / "summary.json").read_text())["chosen_k"] == ref.n_clusters_


def test_cluster_patch_folder(tmp_path, frames):
    """A labelled folder: clusters.csv and the cluster accuracy against the file names' classes."""
    out = tmp_path / "clf"
    rc = main(["cluster", str(frames["patches"]), "--out", str(out), "--features", "fft", "--k-max", "4",
               "--threads", "1", "--quiet", "--no-plot"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["input_kind"] == "patch_folder" and s["n_patches"] == 24 and s["class_names"] == ["Bulk", "vacancy"]
    assert 0.5 <= s["cluster_accuracy"] <= 1.0
    assert s["cluster_accuracy"] <= s["evaluation"]["purity"] <= 1.0  # many-to-one matches at least as many
    assert s["evaluation_at_k_classes"]["n_clusters"] == 2
    rows = (out / "clusters.csv").read_text().splitlines()
    assert rows[0] == "file,class,cluster" and len(rows) == 25
    assert {r.split(",")[1] for r in rows[1:]} == {"Bulk", "vacancy"}


@pytest.mark.parametrize("option,value,key", [("--features", "lattice_residual_invariant", "features"),
                                              ("--features", "lattice_residual_invariant_local", "features"),
                                              ("--features", "lattice_residual_tukey", "features"),
                                              ("--algorithm", "average_linkage", "algorithm")])
def test_cluster_descriptor_and_algorithm_options(tmp_path, frames, option, value, key):
    """--features lattice_residual_invariant / lattice_residual_invariant_local / lattice_residual_tukey
    and --algorithm average_linkage reach PatchClusterer and are recorded; an unknown value is refused."""
    out = tmp_path / "opt"
    rc = main(["cluster", str(frames["patches"]), "--out", str(out), option, value,
               "--k-max", "4", "--threads", "1", "--quiet", "--no-plot"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s[key] == value
    assert s["evaluation_at_k_classes"]["accuracy"] >= 0.9, s["evaluation_at_k_classes"]
    assert main(["cluster", str(frames["patches"]), "--out", str(out), option, "ward", "--quiet"]) == 2


def test_cluster_sto_folder(tmp_path, ayyubi_dir):
    """The real STO patches (764, 4 classes), the default options: the Tukey descriptor and the
    agreement rule pick k = 4 with a cluster accuracy of 0.944 (the label-free goal: 0.90; the
    default before, lattice_residual and the silhouette: k = 5, 0.865)."""
    sto = ayyubi_dir / "STO"
    if not sto.is_dir():
        pytest.skip(f"no STO folder in {ayyubi_dir}")
    out = tmp_path / "sto"
    rc = main(["cluster", str(sto), "--out", str(out), "--k-max", "6", "--threads", "1", "--quiet"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["n_patches"] == 764 and s["class_names"] == ["Bulk", "Extra", "IExtra", "Mis"]
    assert s["features"] == "lattice_residual_tukey" and s["k_selected_by"] == "agreement"
    assert s["chosen_k"] == 4
    assert s["cluster_accuracy"] >= 0.90
    assert s["evaluation_at_k_classes"]["n_clusters"] == 4
    assert (out / "silhouette.png").stat().st_size > 1000


# --------------------------------------------------------------------------- anomaly
def test_anomaly_train_and_map(cvae_run, frames):
    """The CVAE trained on bulk flags every crop that holds the planted dark square; the
    per-pixel map peaks inside the square."""
    out, model = cvae_run
    assert model.is_file()
    s = json.loads((out / "summary.json").read_text())
    assert s["model"]["path"] == str(model) and len(s["model"]["sha256"]) == 64
    assert s["training"]["epochs"] == 2 and s["detector"]["kind"] == "energy"
    doc = json.loads((out / "square_rois.json").read_text())
    tiles = doc["tiles"]
    assert len(tiles) == 9 * 9  # 32 px crops every 16 px on 160 px
    lo, hi = SQUARE
    covering = [t for t in tiles if t["row"] <= lo and t["row"] + 32 >= hi and t["col"] <= lo and t["col"] + 32 >= hi]
    assert covering and all(t["label"] == "Anomaly" for t in covering)
    top = max(tiles, key=lambda t: t["score"])
    assert top["row"] <= (lo + hi) // 2 < top["row"] + 32 and top["col"] <= (lo + hi) // 2 < top["col"] + 32
    flagged_elsewhere = sum(t["roi"] for t in tiles if t not in covering)
    assert flagged_elsewhere <= 0.2 * (len(tiles) - len(covering))
    assert (out / "square_rois.csv").is_file() and (out / "square_rois.png").stat().st_size > 1000


def test_anomaly_with_saved_model(tmp_path, cvae_run, frames, capsys):
    _, model = cvae_run
    out = tmp_path / "again"
    rc = main(["anomaly", "--model", str(model), str(frames["square"]), str(frames["bulk"]), "--out", str(out),
               "--stride", "16", "--threads", "1", "--quiet", "--no-plot"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    square, bulk = s["images"][str(frames["square"])], s["images"][str(frames["bulk"])]
    first = json.loads((cvae_run[0] / "summary.json").read_text())["images"][str(frames["square"])]
    assert square["n_flagged"] == first["n_flagged"]  # the saved model maps exactly as the trained one
    assert square["map_max"] > bulk["map_max"]
    assert not (out / "square_rois.png").exists()
    # info: the model card of the CVAE
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    text = capsys.readouterr().out
    from stemroi.io import file_sha256

    assert "architecture:  cvae" in text and file_sha256(model) in text
    assert "source: " + str(frames["bulk"]) in text and "final_train_loss" in text
    assert main(["info", str(model), "--json"]) == 0
    meta = json.loads(capsys.readouterr().out)
    assert meta["architecture"] == "cvae" and meta["estimator"]["detector"] == "energy"


def test_anomaly_resamples_an_image_at_another_pixel_size(tmp_path, frames, capsys):
    """Trained on a calibrated bulk frame, the CVAE records its pixel size; a frame taken at twice the
    magnification (half the pixel size, 2x the pixels) is resampled to it and flagged at the square, on
    its own pixel grid; a frame without a calibration is used as it is, with a warning."""
    import tifffile

    from stemroi.io import read_image

    def save_tif(path, image, pixel_nm):
        tifffile.imwrite(path, image, imagej=True, resolution=(1 / pixel_nm, 1 / pixel_nm), metadata={"unit": "nm"})
        return path

    bulk = save_tif(tmp_path / "bulk.tif", read_image(frames["bulk"]), 0.05)
    square = read_image(frames["square"])
    zoomed = save_tif(tmp_path / "zoomed.tif", np.kron(square, np.ones((2, 2), np.float32)), 0.025)
    same = save_tif(tmp_path / "same.tif", square, 0.05)
    out = tmp_path / "out"
    with pytest.warns(UserWarning, match="pixel size is unknown"):  # square.png says nothing of its pixel
        rc = main(["anomaly", "--train", str(bulk), str(same), str(zoomed), str(frames["square"]), "--out",
                   str(out), "--epochs", "2", "--crops", "200", "--crop", "32", "--stride", "16", "--threads", "1",
                   "--quiet", "--no-plot"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    same_rec, zoomed_rec, png_rec = (s["images"][str(p)] for p in (same, zoomed, frames["square"]))
    assert same_rec["resampling"] == {"resampled": False, "scale": 1.0,
                                      "model_pixel_size": {"pixel_size": 0.05, "unit": "nm"},
                                      "image_pixel_size": {"pixel_size": 0.05, "unit": "nm"}}
    assert zoomed_rec["resampling"]["resampled"] and zoomed_rec["resampling"]["scale"] == pytest.approx(0.5)
    assert png_rec["resampling"]["image_pixel_size"] is None and not png_rec["resampling"]["resampled"]
    assert zoomed_rec["image_shape"] == [320, 320]  # reported on the zoomed frame's own grid
    tiles = json.loads((out / "zoomed_rois.json").read_text())["tiles"]
    top = max(tiles, key=lambda t: t["score"])
    mid = sum(SQUARE)  # the square's centre on the 2x grid
    assert top["row"] <= mid < top["row"] + top["height"] and top["col"] <= mid < top["col"] + top["width"]
    assert {(t["height"], t["width"]) for t in tiles} == {(64, 64)}  # the 32 px crops, mapped back
    from stemroi import BulkCVAE

    assert BulkCVAE.load(out / "model.stemroi").pixel_size_.pixel_size == 0.05
    capsys.readouterr()
    assert main(["info", str(out / "model.stemroi")]) == 0
    assert "  pixel size:    0.05 nm\n" in capsys.readouterr().out


def test_pixel_size_option_is_recorded_and_resamples(tmp_path, frames, capsys):
    """--pixel-size: recorded by `train`, used by `detect` for a file without a calibration (a PNG at 2x the
    magnification is resampled to the model's pixel size, its tiles reported on its own grid); bad values
    are refused with the value named, before any work."""
    from stemroi import PatchClassifier
    from stemroi.io import read_image

    model = tmp_path / "m.stemroi"
    assert main(["train", str(frames["patches"]), "--out", str(model), "--epochs", "2", "--threads", "1", "--quiet",
                 "--pixel-size", "0.5", "A"]) == 0
    assert PatchClassifier.load(model).pixel_size_.to_dict() == {"pixel_size": 0.5, "unit": "A"}
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    assert "  pixel size:    0.5 A\n" in capsys.readouterr().out
    zoomed = _save_png(tmp_path / "zoomed.png", np.kron(read_image(frames["vacancy"]) / 255.0, np.ones((2, 2))))
    out = tmp_path / "det"
    assert main(["detect", str(zoomed), "--model", str(model), "--out", str(out), "--quiet", "--no-plot",
                 "--pixel-size", "0.025", "nm"]) == 0
    rec = json.loads((out / "summary.json").read_text())[str(zoomed)]
    assert rec["resampling"]["resampled"] and rec["resampling"]["scale"] == pytest.approx(0.5)
    assert rec["resampling"]["image_pixel_size"] == {"pixel_size": 0.025, "unit": "nm"}
    tiles = json.loads((out / "zoomed_rois.json").read_text())["tiles"]
    assert len(tiles) == 25 and {(t["height"], t["width"]) for t in tiles} == {(64, 64)}
    # the same PNG without --pixel-size: used as it is (the library warns that its pixel size is unknown)
    with pytest.warns(UserWarning, match="pixel size is unknown"):
        assert main(["detect", str(zoomed), "--model", str(model), "--out", str(tmp_path / "d2"), "--quiet",
                     "--no-plot"]) == 0
    plain = json.loads((tmp_path / "d2" / "summary.json").read_text())[str(zoomed)]
    assert not plain["resampling"]["resampled"] and plain["calibration"] is None
    assert rec["calibration"] == {"pixel_size": 0.025, "unit": "nm"}
    # a model without a pixel size: --pixel-size is recorded but changes nothing, and the run says so
    bare = tmp_path / "bare.stemroi"
    assert main(["train", str(frames["patches"]), "--out", str(bare), "--epochs", "1", "--threads", "1",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["detect", str(zoomed), "--model", str(bare), "--out", str(tmp_path / "d4"), "--quiet", "--no-plot",
                 "--pixel-size", "0.025", "nm"]) == 0
    assert "the model records no pixel size, so --pixel-size 0.025 nm changes nothing" in _error_line(capsys)
    rec4 = json.loads((tmp_path / "d4" / "summary.json").read_text())[str(zoomed)]
    assert "resampling" not in rec4 and rec4["calibration"] == {"pixel_size": 0.025, "unit": "nm"}
    assert rec4["n_tiles"] == 100  # 32 px tiles of the 320 px frame, as it is
    assert main(["info", str(bare)]) == 0
    assert "  pixel size:    not recorded\n" in capsys.readouterr().out
    for bad, says in ((["-1", "nm"], "--pixel-size -1 nm: the value must be a finite number > 0"),
                      (["0.02", "furlong"], "unknown unit 'furlong'; expected nm, A, pm or um")):
        assert main(["detect", str(zoomed), "--model", str(model), "--out", str(tmp_path / "d3"),
                     "--pixel-size", *bad]) == 2
        assert says in _error_line(capsys)
    assert not (tmp_path / "d3").exists()
    assert main(["train", str(frames["patches"]), "--few-label", "--pixel-size", "0.05", "nm",
                 "--out", str(tmp_path / "f.stemroi")]) == 2
    assert "--pixel-size does not apply with --few-label" in _error_line(capsys)
    # segment --train records it too
    from stemroi import DefectSegmenter

    seg = tmp_path / "seg.stemroi"
    assert main(["segment", "--train", str(frames["patches"]), "--model-out", str(seg), "--epochs", "1",
                 "--samples-per-epoch", "8", "--pseudo-label", "lattice", "--threads", "1", "--quiet",
                 "--pixel-size", "50", "pm"]) == 0
    assert DefectSegmenter.load(seg).pixel_size_.to_dict() == {"pixel_size": 50.0, "unit": "pm"}


# --------------------------------------------------------------------------- segment
def test_segment_train_and_map(unet_run, frames, capsys):
    """The U-Net's vacancy channel peaks at the planted vacancy (within 4 px)."""
    out, model = unet_run
    s = json.loads((out / "summary.json").read_text())
    assert s["channels"] == ["vacancy", "background"]
    assert s["training"]["class_counts"] == {"Bulk": 12, "vacancy": 12}
    doc = json.loads((out / "vacancy_rois.json").read_text())
    assert doc["class_names"] == ["vacancy", "background"]
    tiles = doc["tiles"]
    assert len(tiles) == 5 * 5 and all(0 <= t["p_vacancy"] <= 1 for t in tiles)
    site = frames["vacancy_site"]
    best = max(tiles, key=lambda t: t["p_vacancy"])
    assert best["row"] <= site["row"] < best["row"] + 32 and best["col"] <= site["col"] < best["col"] + 32
    assert (out / "vacancy_rois.png").stat().st_size > 1000
    # the same map from the saved model, and its card
    from stemroi.detection import segmentation_map, to_unit_range
    from stemroi.io import read_image
    from stemroi.models import DefectSegmenter

    seg = DefectSegmenter.load(model, n_threads=1)
    vmap = segmentation_map(to_unit_range(read_image(frames["vacancy"])), seg).maps["vacancy"]
    r, c = np.unravel_index(int(np.argmax(vmap)), vmap.shape)
    assert abs(r - site["row"]) <= 4 and abs(c - site["col"]) <= 4
    capsys.readouterr()
    assert main(["info", str(model)]) == 0
    text = capsys.readouterr().out
    assert "unet_multilabel" in text and "class names:   vacancy, background" in text
    assert "source: " + str(frames["patches"]) in text


def test_segment_with_saved_model(tmp_path, unet_run, frames):
    _, model = unet_run
    out = tmp_path / "seg2"
    rc = main(["segment", "--model", str(model), str(frames["bulk"]), "--out", str(out), "--threshold", "0.3",
               "--threads", "1", "--quiet", "--no-plot"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    img = s["images"][str(frames["bulk"])]
    assert img["n_tiles"] == 25 and set(img["channel_max"]) == {"vacancy", "background"}
    assert json.loads((out / "bulk_rois.json").read_text())["metadata"]["threshold"] == 0.3



# --------------------------------------------------------------------------- batches with a bad image
@pytest.mark.parametrize("command", ["detect", "anomaly", "segment"])
def test_batch_goes_past_a_bad_image_and_maps_each_frame_of_a_stack(command, tmp_path, frames, cvae_run, unet_run,
                                                                      capsys):
    """A corrupt file or complex pixels in a batch are skipped with its error in summary.json; the
    images after it are still mapped, and the run ends with status 1 (not 2, not 0). A stack (a
    series saved as one file) is mapped frame by frame: path[i] in the summary, <stem>_frame<i> files."""
    from stemroi.io import read_image

    model = {"anomaly": cvae_run[1], "segment": unet_run[1]}.get(command)
    if command == "detect":
        model = tmp_path / "m.stemroi"
        assert main(["train", str(frames["patches"]), "--out", str(model), "--epochs", "1", "--quiet",
                     "--threads", "1", "--no-overlap-groups"]) == 0
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "a_bulk.png").write_bytes(frames["bulk"].read_bytes())
    (batch / "b_corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    np.save(batch / "c_complex.npy", np.ones((160, 160), np.complex64))
    series = np.stack([read_image(frames["square"]), read_image(frames["bulk"])])
    np.save(batch / "d_series.npy", series)
    out = tmp_path / "out"
    capsys.readouterr()
    rc = main([command, str(batch), "--model", str(model), "--out", str(out), "--threads", "1", "--quiet", "--no-plot"])
    assert rc == 1
    err = _other_lines(capsys.readouterr().err)
    assert err[0] == f"stemroi {command}: skipped {batch / 'b_corrupt.png'}: not a readable PNG image (corrupt or wrong format)"
    assert err[1] == (f"stemroi {command}: skipped {batch / 'c_complex.npy'}: unsupported pixel dtype complex64 "
                      "(expected integer, bool or real float pixels)")
    assert err[2] == (f"stemroi {command}: 2 of 5 images failed and were skipped (b_corrupt.png, c_complex.npy); "
                      "their errors are in summary.json")
    s = json.loads((out / "summary.json").read_text())
    records = s if command == "detect" else s["images"]
    frame_keys = [f"{batch / 'd_series.npy'}[{i}]" for i in (0, 1)]
    assert list(records) == [str(batch / n) for n in ("a_bulk.png", "b_corrupt.png", "c_complex.npy")] + frame_keys
    assert set(records[str(batch / "b_corrupt.png")]) == {"error"} and set(records[str(batch / "c_complex.npy")]) == {"error"}
    for key in [str(batch / "a_bulk.png")] + frame_keys:
        assert records[key]["n_tiles"] > 0
    for stem in ("a_bulk", "d_series_frame0", "d_series_frame1"):
        assert (out / f"{stem}_rois.csv").is_file()
    assert not list(out.glob("b_corrupt*")) and not list(out.glob("c_complex*"))
    # frame 1 of the series is the bulk frame: the same map as the bulk file
    bulk_doc = json.loads((out / "a_bulk_rois.json").read_text())
    frame_doc = json.loads((out / "d_series_frame1_rois.json").read_text())
    assert frame_doc["metadata"]["source"] == frame_keys[1]
    assert [t["label"] for t in frame_doc["tiles"]] == [t["label"] for t in bulk_doc["tiles"]]


def test_interrupted_batch_keeps_the_summary_of_what_was_done(tmp_path, frames, cvae_run, monkeypatch, capsys):
    """summary.json is rewritten after every image: Ctrl-C in the second image leaves the first recorded."""
    import stemroi.detection as detection

    real, calls = detection.anomaly_map, []

    def interrupted_second(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(detection, "anomaly_map", interrupted_second)
    out = tmp_path / "out"
    rc = main(["anomaly", "--model", str(cvae_run[1]), str(frames["square"]), str(frames["bulk"]), "--out", str(out),
               "--threads", "1", "--quiet", "--no-plot"])
    assert rc == 130 and "stemroi anomaly: interrupted" in capsys.readouterr().err
    assert list(json.loads((out / "summary.json").read_text())["images"]) == [str(frames["square"])]


def test_one_bad_image_is_still_exit_2(tmp_path, cvae_run, capsys):
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    assert main(["anomaly", "--model", str(cvae_run[1]), str(bad), "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert _error_line(capsys) == f"stemroi anomaly: error: {bad}: not a readable PNG image (corrupt or wrong format)"
    # a batch in which every image fails: status 2 too, with the errors recorded
    also = tmp_path / "empty.npy"
    np.save(also, np.zeros((0, 0), np.float32))
    assert main(["anomaly", "--model", str(cvae_run[1]), str(bad), str(also), "--out", str(tmp_path / "o"),
                 "--quiet"]) == 2
    assert "2 of 2 images failed" in capsys.readouterr().err
    assert set(json.loads((tmp_path / "o" / "summary.json").read_text())["images"]) == {str(bad), str(also)}

# --------------------------------------------------------------------------- errors and help
@pytest.mark.parametrize("argv, needle", [
    (["cluster", "IMG", "--out", "OUT", "--patch", "0"], "--patch: must be an integer >= 8, got 0"),
    (["cluster", "IMG", "--out", "OUT", "--k-min", "5", "--k-max", "3"], "--k-max must be >= --k-min (5), got 3"),
    (["cluster", "IMG", "--out", "OUT", "--k-max", "30", "--patch", "64"],
     "--k-max 30 needs at least 31 samples; square.png cut into 64 px tiles at stride 64"),
    (["cluster", "IMG", "--out", "OUT", "--patch", "80", "--k-min", "4"],
     "--k-min 4 needs at least 5 samples; square.png cut into 80 px tiles at stride 80"),
    (["cluster", "IMG", "--out", "OUT", "--patch", "64", "--k-rule", "silhouette_1se", "--k-max", "8"],
     "--k-max 8 needs at least 11 samples for --k-rule silhouette_1se (its 80 % subsamples hold k + 1); "
     "square.png cut into 64 px tiles at stride 64"),
    (["cluster", "IMG", "--out", "OUT", "--k-rule", "silhouette_1se", "--algorithm", "average_linkage"],
     "--k-rule silhouette_1se resamples K-means; with --algorithm average_linkage only --k-rule silhouette"),
    (["cluster", "IMG", "--out", "OUT", "--k-rule", "agreement", "--algorithm", "average_linkage"],
     "--k-rule agreement compares two K-means clusterings; with --algorithm average_linkage only --k-rule silhouette"),
    (["cluster", "IMG", "--out", "OUT", "--k-rule", "agreement", "--features", "lattice_residual_invariant_local"],
     "--k-rule agreement compares the clustering with lattice_residual_invariant_local's: give another --features"),
    (["cluster", "MISSING", "--out", "OUT"], "missing.png: not found"),
    (["anomaly", "--train", "MISSING", "IMG", "--out", "OUT"], "missing.png"),
    (["anomaly", "--train", "IMG", "--out", "OUT", "--crop", "36"], "--crop must be a multiple of 8, got 36"),
    (["anomaly", "--train", "IMG", "--out", "OUT", "--energy-quantile", "1.5"],
     "--energy-quantile: must be in (0, 1), got 1.5"),
    (["anomaly", "--model", "CVAE", "IMG"], "--out DIR is needed"),
    (["segment", "--model", "CVAE", "IMG", "--out", "OUT"], "is a BulkCVAE (CVAE anomaly model) model"),
    (["detect", "IMG", "--model", "CVAE", "--out", "OUT"], "stemroi detect needs a PatchClassifier"),
    (["segment", "--train", "IMG", "--out", "OUT"], "--train"),
    (["segment", "--train", "PATCHES", "--bulk-class", "Perfect", "--out", "OUT"], "--bulk-class 'Perfect'"),
    (["train", "PATCHES", "--unlabelled", "IMG", "--out", "OUT"], "--unlabelled goes with --few-label"),
    (["train", "PATCHES", "--few-label", "--mode", "head", "--out", "OUT"], "--mode does not apply with --few-label"),
    (["train", "PATCHES", "--few-label", "--unlabelled", "MISSING", "--out", "OUT"], "missing.png: not found"),
    # the images to map are read before training: these would otherwise fail minutes later
    (["anomaly", "--train", "IMG", "STACK", "--out", "OUT"],
     "stack.npy (40x40) is smaller than the 64-pixel crops (--crop 64)"),  # a stack's frames are mapped, if large enough
    (["anomaly", "--train", "IMG", "CORRUPT", "--out", "OUT"], "corrupt.png: not a readable PNG image"),
    (["anomaly", "--train", "IMG", "SMALL", "--out", "OUT", "--crop", "48"],
     "small.npy (40x40) is smaller than the 48-pixel crops (--crop 48)"),
    (["segment", "--train", "PATCHES", "CORRUPT", "--out", "OUT"], "corrupt.png: not a readable PNG image"),
    # output paths that cannot be written are refused before any training
    (["train", "PATCHES", "--out", "DIR"], "dir: is a folder; give a file name, such as"),
    (["train", "PATCHES", "--out", "AFILE/m.stemroi"], "afile is a file, not a folder"),
    (["detect", "IMG", "--model", "CVAE", "--out", "AFILE"], "afile: exists and is not a folder"),
    (["cluster", "IMG", "--out", "AFILE"], "afile: exists and is not a folder"),
    (["anomaly", "--train", "IMG", "IMG", "--out", "AFILE/o"], "afile is a file, not a folder"),
    (["anomaly", "--train", "IMG", "--model-out", "DIR"], "dir: is a folder; give a file name"),
    (["anomaly", "--model", "CVAE", "DIR", "--out", "OUT"], "dir holds no image files (.tif"),
    (["segment", "--train", "PATCHES", "IMG", "--out", "AFILE"], "afile: exists and is not a folder"),
    (["demo", "--out", "AFILE"], "afile: exists and is not a folder"),
    (["info", "IMG"], "square.png: not a stemroi model file"),
    (["info", "MISSING"], "missing.png: model file not found"),
])
def test_bad_input_exits_2(argv, needle, tmp_path, frames, cvae_run, capsys):
    np.save(tmp_path / "stack.npy", np.ones((3, 40, 40), np.float32))
    np.save(tmp_path / "small.npy", np.ones((40, 40), np.float32))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage")
    subst = {"IMG": str(frames["square"]), "MISSING": str(tmp_path / "missing.png"), "OUT": str(tmp_path / "o"),
             "CVAE": str(cvae_run[1]), "PATCHES": str(frames["patches"]), "STACK": str(tmp_path / "stack.npy"),
             "SMALL": str(tmp_path / "small.npy"), "CORRUPT": str(tmp_path / "corrupt.png")}
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "dir").mkdir()
    argv = [a.replace("AFILE", str(tmp_path / "afile")).replace("DIR", str(tmp_path / "dir")) if a.startswith(("AFILE", "DIR"))
            else a for a in argv]
    assert main([subst.get(a, a) for a in argv]) == 2
    line = _error_line(capsys)
    assert line.startswith(f"stemroi {argv[0]}: error: ") and needle in line, line
    assert not (tmp_path / "o").exists()  # nothing written before the input is checked


def test_corrupted_model_exits_2(tmp_path, cvae_run, frames, capsys):
    data = bytearray(cvae_run[1].read_bytes())
    data[-100] ^= 0xFF
    bad = tmp_path / "bad.stemroi"
    bad.write_bytes(bytes(data))
    assert main(["anomaly", "--model", str(bad), str(frames["square"]), "--out", str(tmp_path / "o")]) == 2
    assert "bad.stemroi" in _error_line(capsys)


@pytest.mark.parametrize("command", ["train", "detect", "cluster", "anomaly", "segment", "info", "demo"])
def test_help_shows_an_example(command, capsys):
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    assert "example" in text and f"\n  stemroi {command} " in text


def test_info_subprocess(cvae_run):
    """`python -m stemroi.cli info MODEL` as a fresh process."""
    r = subprocess.run([sys.executable, "-m", "stemroi.cli", "info", str(cvae_run[1])], capture_output=True,
                       text=True, timeout=120, env=PY_ENV)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "BulkCVAE" in r.stdout and "SHA-256" in r.stdout


def test_cluster_vgg16_features(tmp_path, frames):
    """--features vgg16 (untrained weights, 32 px input: the wiring, not the quality)."""
    out = tmp_path / "vgg"
    rc = main(["cluster", str(frames["square"]), "--out", str(out), "--features", "vgg16", "--weights", "random",
               "--input-size", "32", "--patch", "32", "--k-max", "3", "--threads", "1", "--quiet", "--no-plot"])
    assert rc == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["features"] == "vgg16" and s["n_tiles"] == 25 and s["chosen_k"] in (2, 3)
    assert "VGG16Features" in json.loads((out / "square_rois.json").read_text())["metadata"]["features"]
