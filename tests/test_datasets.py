"""Labelled patch folders: real CdTe/STO sets and synthetic folders with mixed storage."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

import stemroi
from stemroi.io.patch_folders import PatchDataset, class_from_filename, load_patch_folder

CDTE_COUNTS = {"Bulk": 185, "LC": 183, "SF1": 181, "SF2": 132, "Twin_Bound": 109, "Vacancy_CdTe": 174, "interstitial": 155}
STO_COUNTS = {"Bulk": 225, "Extra": 195, "IExtra": 143, "Mis": 201}


@pytest.fixture(scope="module")
def cdte(ayyubi_dir) -> PatchDataset:
    return load_patch_folder(ayyubi_dir / "CdTe")


@pytest.fixture(scope="module")
def sto(ayyubi_dir) -> PatchDataset:
    return load_patch_folder(ayyubi_dir / "STO")


def test_class_from_filename():
    assert class_from_filename("Twin_Bound_12.tif") == "Twin_Bound"
    assert class_from_filename("Vacancy_CdTe_3.tif") == "Vacancy_CdTe"
    assert class_from_filename("/a/b/Bulk_0.tif") == "Bulk"
    with pytest.raises(ValueError, match=r"Bulk\.tif: file name has no '_<index>' suffix"):
        class_from_filename("Bulk.tif")


@pytest.mark.parametrize("name,counts", [("cdte", CDTE_COUNTS), ("sto", STO_COUNTS)])
def test_real_sets_class_counts_and_values(request, name, counts):
    ds = request.getfixturevalue(name)
    n = sum(counts.values())
    assert ds.patches.shape == (n, 64, 64) and ds.patches.dtype == np.float32
    assert ds.labels.dtype == np.int64 and ds.labels.shape == (n,)
    assert ds.class_names == sorted(counts)
    assert ds.class_counts() == counts
    assert len(ds) == n and len(ds.files) == n
    assert 0.0 <= ds.patches.min() and ds.patches.max() <= 1.0
    # values are the stored uint8 / 255, exactly; the file order is class then numeric index
    for k in (0, n // 2, n - 1):
        with Image.open(ds.files[k]) as im:
            ref = np.asarray(im)
        ref = ref if ref.ndim == 2 else ref[..., 0]
        np.testing.assert_array_equal(ds.patches[k], ref.astype(np.float32) / np.float32(255))
        assert ds.class_names[ds.labels[k]] == class_from_filename(ds.files[k])
    first = [f.rsplit("/", 1)[-1] for f in ds.files[:3]]
    assert first == ["Bulk_0.tif", "Bulk_1.tif", "Bulk_2.tif"]


def test_mixed_storage_and_deterministic_order(tmp_path, rng):
    grey = [rng.integers(0, 256, size=(16, 16), dtype=np.uint8) for _ in range(6)]
    names = ["b_cls_10.tif", "b_cls_2.tif", "a_1.tif", "a_0.tif", "b_cls_1.tif", "a_11.tif"]
    modes = ["L", "RGB", "RGBA", "L", "RGBA", "RGB"]
    for g, name, mode in zip(grey, names, modes):
        arr = g if mode == "L" else np.dstack([g] * len(mode))
        Image.fromarray(arr, mode=mode).save(tmp_path / name)
    ds = load_patch_folder(tmp_path)
    assert [f.rsplit("/", 1)[-1] for f in ds.files] == ["a_0.tif", "a_1.tif", "a_11.tif", "b_cls_1.tif", "b_cls_2.tif", "b_cls_10.tif"]
    assert ds.class_names == ["a", "b_cls"]
    np.testing.assert_array_equal(ds.labels, [0, 0, 0, 1, 1, 1])
    by_name = dict(zip(names, grey))
    for f, p in zip(ds.files, ds.patches):
        np.testing.assert_array_equal(p, by_name[f.rsplit("/", 1)[-1]].astype(np.float32) / np.float32(255))
    again = load_patch_folder(tmp_path)
    np.testing.assert_array_equal(again.patches, ds.patches)
    assert stemroi.load_patch_folder is load_patch_folder


def test_class_subfolders_layout(tmp_path, rng):
    # torchvision ImageFolder / Keras layout: <folder>/<class>/<any name>
    made = {}
    for cls, names in {"Vacancy": ["x.tif", "y_2.tif", "y_10.tif"], "Bulk": ["p.tif", "q.tif"]}.items():
        (tmp_path / cls).mkdir()
        for n in names:
            made[(cls, n)] = rng.integers(0, 255, (16, 16), dtype=np.uint8)
            Image.fromarray(made[(cls, n)]).save(tmp_path / cls / n)
    (tmp_path / "empty").mkdir()  # a subfolder without patches is not a class
    (tmp_path / "notes.txt").write_text("ignored")
    ds = load_patch_folder(tmp_path)
    assert ds.class_names == ["Bulk", "Vacancy"] and ds.class_counts() == {"Bulk": 2, "Vacancy": 3}
    assert [f.rsplit("/", 2)[-2] + "/" + f.rsplit("/", 1)[-1] for f in ds.files] == [
        "Bulk/p.tif", "Bulk/q.tif", "Vacancy/x.tif", "Vacancy/y_2.tif", "Vacancy/y_10.tif"]
    for f, p, label in zip(ds.files, ds.patches, ds.labels):
        cls, name = f.rsplit("/", 2)[-2:]
        assert ds.class_names[label] == cls
        np.testing.assert_array_equal(p, made[(cls, name)].astype(np.float32) / np.float32(255))


def test_bad_folders(tmp_path, rng):
    with pytest.raises(NotADirectoryError, match="not a folder"):
        load_patch_folder(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"no files match pattern '\*\.tif', neither in the folder .* nor in class subfolders"):
        load_patch_folder(tmp_path)
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "a_0.tif")
    Image.fromarray(rng.integers(0, 255, (16, 20), dtype=np.uint8)).save(tmp_path / "a_1.tif")
    with pytest.raises(ValueError, match=r"a_1\.tif: patch of shape \(16, 20\), but a_0\.tif has shape \(16, 16\)"):
        load_patch_folder(tmp_path)
    (tmp_path / "a_1.tif").write_bytes(b"broken")
    with pytest.raises(OSError, match=r"a_1\.tif: cannot read TIFF"):
        load_patch_folder(tmp_path)


def test_image_files_the_pattern_leaves_out_are_named(tmp_path, rng):
    """A .png or .tiff beside the .tif patches is not read by the default pattern, and a warning says so."""
    for n in ("a_0.tif", "a_1.tif", "b_0.tif"):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / n)
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "b_1.png")
    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / "b_2.tiff")
    (tmp_path / "notes.txt").write_text("not an image: no warning for it")
    with pytest.warns(UserWarning, match=r"^2 image file\(s\) beside the 3 read do not match pattern '\*\.tif' and "
                      r"were not read \(b_1\.png, b_2\.tiff\)") as record:
        ds = load_patch_folder(tmp_path)
    assert len(record) == 1 and record[0].filename == __file__  # points at the caller
    assert len(ds) == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_patch_folder(tmp_path, "*_*.*").class_counts() == {"a": 2, "b": 3}  # every image read: no warning
    upper = tmp_path / "upper"  # only .TIF files: nothing matches '*.tif' on a case-sensitive file system
    upper.mkdir()
    for n in ("a_0.TIF", "b_0.TIF"):
        Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(upper / n, format="TIFF")
    if (upper / "a_0.tif").exists():
        pytest.skip("case-insensitive file system: '*.tif' matches .TIF")
    with pytest.raises(ValueError, match=r"no files match pattern '\*\.tif'.*; it holds 2 image file\(s\) of other "
                       r"names \(a_0\.TIF, b_0\.TIF\): pass a pattern that matches them, e\.g\. '\*\.TIF'"):
        load_patch_folder(upper)
    assert load_patch_folder(upper, "*.TIF").class_names == ["a", "b"]
