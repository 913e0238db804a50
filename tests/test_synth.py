"""Synthetic STEM images: ground truth consistent, deterministic, fast, bad input rejected."""
from __future__ import annotations

import time

import numpy as np
import pytest

import stemroi.io.synth as synth

ALL = {"vacancy": 2, "interstitial": 2, "antisite": 2, "column_shift": 2, "stacking_fault": 1}


@pytest.mark.parametrize("lattice", sorted(synth.LATTICES))
def test_ground_truth_is_consistent(lattice):
    s = synth.make_image((256, 320), lattice=lattice, defects=ALL, drift=3.0, random_state=7)
    assert s.image.shape == (256, 320) and s.image.dtype == np.float32
    assert s.image.min() == 0.0 and s.image.max() == 1.0
    assert s.defect_mask.dtype == np.int16 and s.defect_mask.shape == s.image.shape
    assert s.class_names[0] == "Bulk" and s.class_names == list(synth.CLASS_NAMES)
    assert sorted(d["kind"] for d in s.defects) == sorted(k for k, n in ALL.items() for _ in range(n))
    for d in s.defects:
        assert s.class_names[d["label"]] == d["kind"]
        r, c = int(round(d["row"])), int(round(d["col"]))
        assert s.defect_mask[r, c] == d["label"], d
    labels_present = set(np.unique(s.defect_mask).tolist())
    assert labels_present == {0} | {s.class_names.index(k) for k in ALL}
    assert (s.defect_mask == 0).mean() > 0.8  # defects are local, the rest is bulk


def test_point_defects_change_the_image_where_planted():
    clean = dict(dose=None, noise=0.0, phase=(3.0, 5.0), random_state=0)
    bulk = synth.make_image((128, 128), **clean)
    vac = synth.make_image((128, 128), defects=[{"kind": "vacancy", "row": 64, "col": 64}], **clean)
    d = vac.defects[0]
    r, c = int(round(d["row"])), int(round(d["col"]))
    assert abs(r - 64) <= 12 and abs(c - 64) <= 12  # nearest heavy column to the request
    assert vac.image[r, c] < 0.5 * bulk.image[r, c]  # the column is gone
    far = vac.defect_mask == 0
    np.testing.assert_allclose(vac.image[far][:500], bulk.image[far][:500], atol=0.02)
    inter = synth.make_image((128, 128), defects=[{"kind": "interstitial", "row": 64, "col": 64}], **clean)
    d = inter.defects[0]
    assert inter.image[int(round(d["row"])), int(round(d["col"]))] > bulk.image[int(round(d["row"])), int(round(d["col"]))] + 0.2


@pytest.mark.parametrize("lattice", ["perovskite", "cubic"])
def test_records_tell_the_variants_of_a_kind_apart(lattice):
    clean = dict(lattice=lattice, dose=None, noise=0.0, phase=(3.0, 5.0), random_state=0)
    bulk = synth.make_image((128, 128), **clean)

    def column(img, p):  # (row, col, intensity, sigma) of the rendered column nearest to p
        return img.columns[np.argmin(np.hypot(*(img.columns[:, :2] - p).T))]

    anti = synth.make_image((128, 128), defects=[{"kind": "antisite", "row": 64, "col": 64}], **clean)
    d = anti.defects[0]
    p = np.array([d["row"], d["col"]])
    assert column(anti, p)[2] == pytest.approx(d["intensity_to"])
    assert column(bulk, p)[2] == pytest.approx(d["intensity_from"])
    assert d["intensity_to"] != pytest.approx(d["intensity_from"])

    for seed in (0, 1, 2):
        moved = synth.make_image((128, 128), defects=[{"kind": "column_shift", "row": 64, "col": 64}],
                                 **{**clean, "random_state": seed})
        d = moved.defects[0]
        p = np.array([d["row"], d["col"]])
        dr, dc = column(moved, p)[:2] - column(bulk, p)[:2]
        assert np.hypot(dr, dc) > 1.0
        assert -180.0 < d["shift_deg"] <= 180.0
        assert np.degrees(np.arctan2(dr, dc)) == pytest.approx(d["shift_deg"], abs=1e-6)


def test_deterministic_and_seed_dependent():
    a = synth.make_image((96, 96), defects={"vacancy": 1}, random_state=3)
    b = synth.make_image((96, 96), defects={"vacancy": 1}, random_state=3)
    c = synth.make_image((96, 96), defects={"vacancy": 1}, random_state=4)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.defect_mask, b.defect_mask)
    assert a.defects == b.defects
    assert not np.array_equal(a.image, c.image)


def test_768_image_is_fast():
    synth.make_image((64, 64), random_state=0)  # warm-up
    t = time.perf_counter()
    synth.make_image((768, 768), defects=ALL, drift=2.0, random_state=0)
    elapsed = time.perf_counter() - t
    assert elapsed < 3.0, elapsed  # well under a second on an idle core; generous on a loaded machine


def test_patch_dataset():
    patches, labels, names = synth.make_patch_dataset(n_per_class=4, patch_size=48, random_state=1, cell_px=12.0)
    assert names == list(synth.CLASS_NAMES)
    assert patches.shape == (4 * len(names), 48, 48) and patches.dtype == np.float32
    assert labels.dtype == np.int64 and np.bincount(labels).tolist() == [4] * len(names)
    assert patches.min() >= 0.0 and patches.max() <= 1.0
    again = synth.make_patch_dataset(n_per_class=4, patch_size=48, random_state=1, cell_px=12.0)
    np.testing.assert_array_equal(again[0], patches)
    # random lattice phase: bulk patches differ from each other
    assert not np.allclose(patches[0], patches[1], atol=0.1)
    # the defect of each non-bulk patch lies inside it, near the centre
    _, labels, names, planted = synth.make_patch_dataset(n_per_class=6, random_state=2, return_defects=True)
    for lab, defects in zip(labels, planted):
        if names[lab] == "Bulk":
            assert defects == []
            continue
        assert [d["kind"] for d in defects] == [names[lab]]
        r, c = defects[0]["row"], defects[0]["col"]
        assert 4 <= r <= 59 and 4 <= c <= 59, defects
        if names[lab] != "stacking_fault":  # a fault line runs through the requested point exactly
            assert abs(r - 31.5) <= 8 + 16 and abs(c - 31.5) <= 8 + 16  # jitter + nearest site
    sub = synth.make_patch_dataset(n_per_class=2, classes=["Bulk", "vacancy"], random_state=0)
    assert sub[2] == ["Bulk", "vacancy"] and sub[0].shape == (4, 64, 64)
    _, _, _, planted = synth.make_patch_dataset(n_per_class=3, classes=["stacking_fault"], lattice="dumbbell",
                                                fault="twin", random_state=0, return_defects=True)
    assert [d[0]["fault"] for d in planted] == ["twin"] * 3
    assert sub[2] == ["Bulk", "vacancy"] and sub[0].shape == (4, 64, 64)


def _fault_image(fault, **kw):
    """A noise-free dumbbell (zinc blende [110]) image with one planar fault through the centre."""
    clean = dict(lattice="dumbbell", cell_px=12.0, orientation_deg=20.0, dose=None, noise=0.0, phase=(2.0, 3.0),
                 random_state=5)
    clean.update(kw)
    bulk = synth.make_image((128, 128), **clean)
    s = synth.make_image((128, 128), defects=[{"kind": "stacking_fault", "row": 64, "col": 64}], fault=fault, **clean)
    return bulk, s


def _beyond(s, cols):
    d = s.defects[0]
    t = np.radians(d["angle_deg"])
    normal = np.array([-np.cos(t), np.sin(t)])  # (row, col) of the unit normal the planter used
    return (cols[:, :2] - np.array([d["row"], d["col"]])) @ normal > 1e-6, normal, np.array([np.sin(t), np.cos(t)])


def _nearest(a, b):
    """Distance from each point of ``a`` to its nearest point of ``b``."""
    return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1)).min(axis=1)


@pytest.mark.parametrize("fault", synth.FAULT_TYPES)
def test_every_fault_type_has_consistent_ground_truth(fault):
    lattices = [lat for lat in sorted(synth.LATTICES) if fault in synth.fault_types(lat)]
    assert lattices == (["dumbbell"] if fault == "twin" else sorted(synth.LATTICES))
    for lattice in lattices:
        s = synth.make_image((160, 192), lattice=lattice, defects={"stacking_fault": 1, "vacancy": 1}, fault=fault,
                             drift=2.0, random_state=3)
        (f,) = [d for d in s.defects if d["kind"] == "stacking_fault"]
        assert f["fault"] == fault
        assert s.defect_mask[int(round(f["row"])), int(round(f["col"]))] == synth.CLASS_NAMES.index("stacking_fault")
        assert 0.02 < (s.defect_mask == synth.CLASS_NAMES.index("stacking_fault")).mean() < 0.5


def test_partial_fault_shifts_the_far_half_by_a_sixth_of_the_diagonal():
    bulk, s = _fault_image("partial")
    cols, ref = s.columns[:, :2], bulk.columns[:, :2]
    beyond, _, direction = _beyond(s, s.columns)
    inner = (cols[:, 0] > 10) & (cols[:, 0] < 118) & (cols[:, 1] > 10) & (cols[:, 1] < 118)
    np.testing.assert_allclose(_nearest(cols[inner & ~beyond], ref), 0.0, atol=1e-9)
    # projected Shockley partial: |a1 + a2| / 6 = 12 * sqrt(3) / 6 px along the fault line
    shift = 12.0 * np.sqrt(3.0) / 6.0 * direction
    np.testing.assert_allclose(_nearest(cols[inner & beyond] - shift, ref), 0.0, atol=1e-9)
    assert _nearest(cols[inner & beyond], ref).min() > 1.0  # not the bulk lattice
    # the line lies in the widest gap between rows of columns: no column within 0.3 px of it
    d = s.defects[0]
    _, normal, _ = _beyond(s, s.columns)
    assert np.abs((cols - [d["row"], d["col"]]) @ normal).min() > 0.3


def test_twin_mirrors_the_far_half_across_a_row_of_columns():
    bulk, s = _fault_image("twin")
    cols, ref = s.columns[:, :2], bulk.columns[:, :2]
    beyond, normal, _ = _beyond(s, s.columns)
    p = np.array([s.defects[0]["row"], s.defects[0]["col"]])
    inner = (cols[:, 0] > 10) & (cols[:, 0] < 118) & (cols[:, 1] > 10) & (cols[:, 1] < 118)
    np.testing.assert_allclose(_nearest(cols[inner & ~beyond], ref), 0.0, atol=1e-9)
    q = cols[inner & beyond]
    mirrored = q - 2.0 * ((q - p) @ normal)[:, None] * normal[None, :]
    np.testing.assert_allclose(_nearest(mirrored, ref), 0.0, atol=1e-9)  # the mirror image of bulk ...
    assert np.median(_nearest(q, ref)) > 1.0  # ... which is not bulk itself
    assert np.abs((cols - p) @ normal).min() < 1e-9  # the mirror is a plane of columns
    assert q.shape[0] > 0.3 * inner.sum()  # the far half is filled with columns, not left empty
    assert np.abs(s.image - bulk.image)[s.defect_mask == 0].max() > 0.3  # and the image shows it, beyond the band


def test_bad_input():
    with pytest.raises(ValueError, match="lattice must be one of"):
        synth.make_image((64, 64), lattice="hexagonal")
    with pytest.raises(ValueError, match=r"unknown defect kind\(s\) \['dislocation'\]"):
        synth.make_image((64, 64), defects={"dislocation": 1})
    with pytest.raises(ValueError, match=r"defects\['vacancy'\] must be an int >= 0, got -1"):
        synth.make_image((64, 64), defects={"vacancy": -1})
    with pytest.raises(ValueError, match=r"shape must be at least \(8, 8\), got \(4, 64\)"):
        synth.make_image((4, 64))
    with pytest.raises(ValueError, match="cell_px must be a number > 0, got -2"):
        synth.make_image((64, 64), cell_px=-2)
    with pytest.raises(ValueError, match="cannot place 50 defects"):
        synth.make_image((64, 64), defects={"vacancy": 50}, random_state=0)
    with pytest.raises(ValueError, match=r"fault must be one of \['slide', 'partial', 'twin'\], got 'wedge'"):
        synth.make_image((64, 64), fault="wedge")
    with pytest.raises(ValueError, match="a twin across the diagonal of a square lattice"):
        synth.make_image((64, 64), lattice="cubic", defects={"stacking_fault": 1}, fault="twin", random_state=0)
    with pytest.raises(ValueError, match=r"a stacking_fault's 'fault' must be one of .*got 'x'"):
        synth.make_image((64, 64), defects=[{"kind": "stacking_fault", "row": 32, "col": 32, "fault": "x"}])
    with pytest.raises(ValueError, match="classes must be distinct names"):
        synth.make_patch_dataset(2, classes=["Bulk", "grain"])
    with pytest.raises(ValueError, match=r"patch_size \(20\) must be at least two cells"):
        synth.make_patch_dataset(2, patch_size=20)


@pytest.mark.parametrize("fault", synth.FAULT_TYPES)
def test_every_fault_type_is_told_from_bulk_by_the_default_clusterer(fault):
    import stemroi

    kw = dict(lattice="dumbbell", cell_px=10.0, dose=2000, noise=0.02)
    bulk, _, _ = synth.make_patch_dataset(30, 64, classes=["Bulk"], random_state=0, **kw)
    faults, _, _ = synth.make_patch_dataset(30, 64, classes=["stacking_fault"], random_state=1, fault=fault, **kw)
    y = np.repeat([0, 1], 30)
    cl = stemroi.PatchClusterer(k_range=[2], random_state=0, n_threads=2).fit(np.concatenate([bulk, faults]))
    assert stemroi.cluster_accuracy(y, cl.labels_) >= 0.95  # measured 1.0 for each type
