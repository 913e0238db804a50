"""Overlap groups, grouped splits, leakage report and label audit."""
from __future__ import annotations

import numpy as np
import pytest

import stemroi
from stemroi.model_selection._overlap import (
    GroupedStratifiedKFold,
    grouped_train_test_split,
    label_audit,
    leakage_report,
    mosaic_positions,
    overlap_groups,
    purge_overlapping,
    spatial_blocks,
    spatial_train_test_split,
)

P = 32


def _planted(rng, return_origins=False):
    """Crops of two random integer images at known origins; returns patches and the true partition."""
    big = rng.integers(0, 256, size=(2, 300, 300)).astype(np.float32) / np.float32(255)
    plan = [
        (0, [(10, 10), (12, 15), (20, 30), (5, 3)]),  # one cluster: shifted crops (chain)
        (0, [(150, 150), (150, 170), (160, 155)]),  # a second cluster in the same image
        (1, [(10, 10), (13, 9)]),  # same origin as cluster 1 but another image: unrelated to it
        (0, [(250, 10)]),  # singletons
        (1, [(200, 200)]),
        (1, [(100, 260)]),
    ]
    patches, truth = [], []
    for cluster, (img, origins) in enumerate(plan):
        for r, c in origins:
            patches.append(big[img, r : r + P, c : c + P])
            truth.append(cluster)
    order = rng.permutation(len(patches))
    origins = np.array([o for _, origins in plan for o in origins])[order]
    out = np.ascontiguousarray(np.stack(patches)[order]), np.asarray(truth)[order]
    return out + (origins,) if return_origins else out


def _same_partition(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return all((a == a[i]).tolist() == (b == b[i]).tolist() for i in range(a.size))


def test_planted_shifted_crops_are_grouped_exactly(rng):
    patches, truth = _planted(rng)
    groups, edges, shares = overlap_groups(patches, segment_length=8, min_overlap=0.2, return_edges=True)
    assert groups.dtype == np.int64 and groups.shape == truth.shape
    assert _same_partition(groups, truth)
    assert groups[0] == 0 and np.all(np.diff(np.unique(groups, return_index=True)[1]) > 0)  # numbered by first patch
    # each edge's shift is real: patch j at (r, c) equals patch i at (r + dy, c + dx)
    assert edges.shape == (patches.shape[0] - np.unique(truth).size, 4)
    for (i, j, dy, dx), share in zip(edges, shares):
        a, b = patches[i], patches[j]
        r0, r1, c0, c1 = max(0, -dy), min(P, P - dy), max(0, -dx), min(P, P - dx)
        np.testing.assert_array_equal(b[r0:r1, c0:c1], a[r0 + dy : r1 + dy, c0 + dx : c1 + dx])
        assert share == pytest.approx((r1 - r0) * (c1 - c0) / P**2) and share >= 0.2
    # determinism across thread counts
    np.testing.assert_array_equal(overlap_groups(patches, segment_length=8, min_overlap=0.2, n_threads=1), groups)
    assert stemroi.overlap_groups is overlap_groups


def test_min_overlap_noise_and_labels(rng):
    big = rng.integers(0, 256, size=(100, 100)).astype(np.float32) / np.float32(255)
    pair = np.stack([big[0:P, 0:P], big[0:P, 20 : 20 + P]])  # overlap 32 x 12 = 37.5 %
    assert overlap_groups(pair, segment_length=8, min_overlap=0.3).tolist() == [0, 0]
    assert overlap_groups(pair, segment_length=8, min_overlap=0.5).tolist() == [0, 1]
    assert overlap_groups(pair, segment_length=8, min_overlap=0.3, labels=[0, 1], across_classes=False).tolist() == [0, 1]
    assert overlap_groups(pair, segment_length=8, min_overlap=0.3, labels=[0, 1]).tolist() == [0, 0]
    assert overlap_groups(pair, segment_length=8, min_overlap=0.3, labels=["SF", "LC"], across_classes=False).tolist() == [0, 1]
    # a copy with one changed pixel is linked only when min_match tolerates it
    edited = np.stack([big[:P, :P], big[2 : P + 2, 1 : P + 1].copy()])
    edited[1, 10, 10] += 0.5
    assert overlap_groups(edited, segment_length=8).tolist() == [0, 1]
    assert overlap_groups(edited, segment_length=8, min_match=0.99).tolist() == [0, 0]
    # flat patches never link
    assert overlap_groups(np.zeros((3, P, P), np.float32), segment_length=8).tolist() == [0, 1, 2]


def test_overlap_groups_bad_input(rng):
    with pytest.raises(ValueError, match=r"patches: expected a 3-D array, got shape \(32, 32\)"):
        overlap_groups(np.zeros((P, P), np.float32))
    bad = rng.random((2, P, P)).astype(np.float32)
    bad[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match="patches: contains NaN"):
        overlap_groups(bad)
    with pytest.raises(ValueError, match=r"labels: expected shape \(2,\)"):
        overlap_groups(bad[:1].repeat(2, 0), labels=[0, 1, 2])
    with pytest.raises(ValueError, match=r"min_overlap must be in \(0, 1\], got 0"):
        overlap_groups(bad[:1], min_overlap=0)
    with pytest.raises(ValueError, match=r"segment_length must be an int in \[2, patch width 32\], got 64"):
        overlap_groups(bad[:1], segment_length=64)
    with pytest.raises(TypeError, match="unsupported dtype complex"):
        overlap_groups(np.ones((2, 4, 4), np.complex64))
    with pytest.raises(ValueError, match="across_classes=False needs labels"):
        overlap_groups(bad[:1], across_classes=False)


def _group_data(rng, n_groups=60, n_classes=3):
    sizes = rng.integers(1, 9, size=n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    labels = rng.integers(0, n_classes, size=n_groups)[groups]
    return labels, groups


def test_grouped_split_has_zero_leakage_and_is_stratified(rng):
    labels, groups = _group_data(rng)
    train, test = grouped_train_test_split(labels, groups, test_size=0.25, random_state=3)
    assert np.intersect1d(train, test).size == 0 and np.union1d(train, test).size == labels.size
    assert np.intersect1d(groups[train], groups[test]).size == 0
    for k in np.unique(labels):
        share = np.mean(labels[test] == k) / np.mean(labels == k) * test.size / labels.size
        assert abs(share - 0.25) < 0.1, (k, share)
    assert abs(test.size / labels.size - 0.25) < 0.05
    again = grouped_train_test_split(labels, groups, test_size=0.25, random_state=3)
    np.testing.assert_array_equal(again[1], test)
    report = leakage_report(groups, train, test)
    assert report["leakage"] == 0.0 and report["n_groups_split"] == 0 and report["n_test"] == test.size
    with pytest.raises(ValueError, match=r"test_size must be a fraction in \(0, 1\), got 1.5"):
        grouped_train_test_split(labels, groups, test_size=1.5)
    with pytest.raises(ValueError, match="same length"):
        grouped_train_test_split(labels[:-1], groups)
    with pytest.raises(ValueError, match="need at least 2 groups"):
        grouped_train_test_split([0, 1], [5, 5])


def test_grouped_kfold(rng):
    labels, groups = _group_data(rng, n_groups=80)
    cv = GroupedStratifiedKFold(n_splits=4, shuffle=True, random_state=0)
    assert cv.get_n_splits() == 4
    seen = np.zeros(labels.size, int)
    for train, test in cv.split(np.zeros((labels.size, 1)), labels, groups):
        seen[test] += 1
        assert np.intersect1d(groups[train], groups[test]).size == 0
        assert abs(test.size / labels.size - 0.25) < 0.06
        for k in np.unique(labels):
            assert abs(np.mean(labels[test] == k) - np.mean(labels == k)) < 0.08
    np.testing.assert_array_equal(seen, 1)
    folds1 = [t.tolist() for _, t in cv.split(None, labels, groups)]
    folds2 = [t.tolist() for _, t in GroupedStratifiedKFold(4, shuffle=True, random_state=0).split(None, labels, groups)]
    assert folds1 == folds2
    with pytest.raises(ValueError, match=r"n_splits=100 is more than the number of groups \(80\)"):
        list(GroupedStratifiedKFold(100).split(None, labels, groups))
    with pytest.raises(ValueError, match="n_splits must be an int >= 2, got 1"):
        list(GroupedStratifiedKFold(1).split(None, labels, groups))


def test_leakage_report_of_random_split_and_from_patches(rng):
    patches, truth, origins = _planted(rng, return_origins=True)
    train = np.arange(0, patches.shape[0], 2)
    test = np.arange(1, patches.shape[0], 2)
    from_groups = leakage_report(truth, train, test)
    from_patches = leakage_report(patches, train, test, segment_length=8, min_overlap=0.2)
    assert {k: from_patches[k] for k in from_groups} == from_groups
    # direct twins are a subset of same-group patches
    assert 0 < from_patches["n_test_with_twin"] <= from_patches["n_test_leaked"]
    # overlaps of any size: the share of each test patch covered by train crops of the same image
    image = np.array([0, 0, 1, 0, 1, 1])[truth]
    shared = []
    for j in test:
        covered = np.zeros((P, P), bool)
        for i in train[image[train] == image[j]]:
            dy, dx = origins[i] - origins[j]
            if abs(dy) <= P - 8 and abs(dx) <= P - 8:
                covered[max(0, dy) : P + min(0, dy), max(0, dx) : P + min(0, dx)] = True
        shared.append(covered.mean())
    shared = np.array(shared)
    assert from_patches["n_test_any_overlap"] == np.count_nonzero(shared) >= from_patches["n_test_with_twin"]
    assert from_patches["shared_share_min"] == pytest.approx(shared[shared > 0].min())
    assert from_patches["shared_share_max"] == pytest.approx(shared.max())
    leaked = sum(np.isin(truth[t], truth[train]) for t in test)
    assert from_groups["n_test_leaked"] == leaked and from_groups["leakage"] == pytest.approx(leaked / test.size)
    with pytest.raises(ValueError, match="train_idx and test_idx share samples"):
        leakage_report(truth, train, train)
    with pytest.raises(ValueError, match=r"test_idx: indices must be in \[0, 12\)"):
        leakage_report(truth, train, [99])


def test_label_audit():
    groups = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    labels = np.array([0, 0, 1, 2, 2, 1, 0, 1])
    audit = label_audit(groups, labels, class_names=["Bulk", "SF", "LC"])
    assert [a["group"] for a in audit] == [1, 3]
    assert audit[0]["labels"] == {"SF": 1, "LC": 2} and audit[0]["size"] == 3
    np.testing.assert_array_equal(audit[0]["indices"], [2, 3, 4])
    assert label_audit(groups, np.zeros(8, int)) == []


# ---------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_sets(ayyubi_dir):
    from stemroi.io.patch_folders import load_patch_folder

    return {name: load_patch_folder(ayyubi_dir / name) for name in ("CdTe", "STO")}


@pytest.mark.parametrize("name", ["CdTe", "STO"])
def test_real_sets_random_split_leaks_grouped_does_not(real_sets, name):
    from sklearn.model_selection import train_test_split

    ds = real_sets[name]
    groups, edges, _ = overlap_groups(ds.patches, return_edges=True)
    pos = mosaic_positions(groups, edges)
    n = len(ds)
    n_groups = np.unique(groups).size
    assert 1 < n_groups < 0.9 * n  # many patches are shifted crops of others
    idx = np.arange(n)
    train, test = train_test_split(idx, test_size=0.2, stratify=ds.labels, random_state=0)
    leaky = leakage_report(groups, train, test, positions=pos)
    assert leaky["leakage"] > 0.9 and leaky["twin_leakage"] > 0.9  # most test patches have a twin in train
    train, test = grouped_train_test_split(ds.labels, groups, test_size=0.2, random_state=0)
    assert leakage_report(groups, train, test)["leakage"] == 0.0
    assert test.size > 0  # small: whole classes are single overlap groups (see docs/data.md)
    audit = label_audit(groups, ds.labels, ds.class_names)
    assert audit and all(len(a["labels"]) >= 2 for a in audit)
    # spatial blocks of the mosaics + purge: a larger test set, still no direct twin in train
    blocks = spatial_blocks(groups, pos, block_size=128)
    train, test = grouped_train_test_split(ds.labels, blocks, test_size=0.2, random_state=0)
    train = purge_overlapping(train, test, groups, pos)
    assert leakage_report(groups, train, test, positions=pos, min_overlap=1e-9)["twin_leakage"] == 0.0
    assert test.size > 0.1 * n


def _bruteforce_groups(patches, min_overlap):
    """Reference: exact equality at any shift with enough overlap, every pair, by FFT (NumPy only)."""
    n, p, _ = patches.shape
    s = 2 * p
    x = patches.astype(np.float64)
    fa, fa2, f1 = (np.fft.rfft2(v, s=(s, s)) for v in (x, x**2, np.ones((p, p))))
    enough = np.rint(np.fft.irfft2(f1 * np.conj(f1), s=(s, s))) >= min_overlap * p * p - 1e-9
    linked = np.eye(n, dtype=bool)
    for i in range(n - 1):
        j = np.arange(i + 1, n)
        ssd = np.fft.irfft2(fa2[i] * np.conj(f1) + f1 * np.conj(fa2[j]) - 2 * fa[i] * np.conj(fa[j]), s=(s, s))
        linked[i, j] = linked[j, i] = ((np.abs(ssd) < 1e-7) & enough).any(axis=(1, 2))
    from scipy.sparse.csgraph import connected_components

    return connected_components(linked, directed=False)[1]


@pytest.mark.parametrize("name", ["CdTe", "STO"])
def test_real_groups_match_bruteforce_reference(real_sets, name):
    ds = real_sets[name]
    sub = ds.patches[:70]  # Bulk_0..69: crops of the same regions, many twins
    ref = _bruteforce_groups(sub, 0.25)
    got = overlap_groups(sub, min_overlap=0.25)
    assert np.unique(ref).size < 60  # the subset really has twins
    assert _same_partition(got, ref)


def test_mosaic_positions_recover_crop_origins(rng):
    patches, truth, origins = _planted(rng, return_origins=True)
    groups, edges, _ = overlap_groups(patches, segment_length=8, min_overlap=0.2, return_edges=True)
    pos = mosaic_positions(groups, edges)
    for grp in np.unique(groups):
        idx = np.flatnonzero(groups == grp)
        # positions equal the true origins up to one offset per group
        np.testing.assert_array_equal(pos[idx] - pos[idx[0]], origins[idx] - origins[idx[0]])


def test_spatial_blocks_and_purge_give_zero_twin_leakage(rng):
    # one long strip cropped every 8 pixels: a single overlap group that group splits cannot divide
    strip = rng.integers(0, 256, size=(P, 900)).astype(np.float32) / np.float32(255)
    patches = np.stack([strip[:, c : c + P] for c in range(0, 900 - P, 8)])
    labels = np.arange(patches.shape[0]) % 2
    groups, edges, _ = overlap_groups(patches, segment_length=8, return_edges=True)
    assert np.unique(groups).size == 1
    pos = mosaic_positions(groups, edges)
    blocks = spatial_blocks(groups, pos, block_size=96, patch_shape=(P, P))
    assert np.unique(blocks).size == int(np.ceil((pos[:, 1].max() + P // 2 + 1) / 96))
    train, test = grouped_train_test_split(labels, blocks, test_size=0.25, random_state=0)
    before = leakage_report(groups, train, test, positions=pos, patch_shape=(P, P))
    assert before["twin_leakage"] > 0  # neighbours across block borders overlap
    kept = purge_overlapping(train, test, groups, pos, patch_shape=(P, P))
    after = leakage_report(groups, kept, test, positions=pos, patch_shape=(P, P), min_overlap=1e-9)
    assert after["twin_leakage"] == 0.0 and 0 < kept.size < train.size
    # brute force on pixels: no kept train patch shares a rectangle with a test patch
    for i in kept:
        assert np.all(np.abs(pos[test] - pos[i]).max(axis=1) >= P) or np.all(np.abs(pos[test, 1] - pos[i, 1]) >= P)
    with pytest.raises(ValueError, match=r"positions: expected shape \(\d+, 2\)"):
        spatial_blocks(groups, pos[:3])
    # the one-call version gives the same split
    tr1, te1 = spatial_train_test_split(patches, labels, 0.25, block_size=96, random_state=0, segment_length=8)
    np.testing.assert_array_equal(te1, test)
    np.testing.assert_array_equal(tr1, kept)


def test_grouped_kfold_balance_matches_sklearn_stratified_group_kfold(rng):
    from sklearn.model_selection import StratifiedGroupKFold

    labels, groups = _group_data(rng, n_groups=120, n_classes=4)

    def worst_deviation(splits):
        overall = np.bincount(labels, minlength=4) / labels.size
        return max(np.abs(np.bincount(labels[te], minlength=4) / te.size - overall).max() for _, te in splits)

    ours = list(GroupedStratifiedKFold(5, shuffle=True, random_state=0).split(None, labels, groups))
    ref = list(StratifiedGroupKFold(5, shuffle=True, random_state=0).split(np.zeros(labels.size), labels, groups))
    for _, te in ours:
        assert np.intersect1d(groups[te], groups[np.setdiff1d(np.arange(labels.size), te)]).size == 0
    assert worst_deviation(ours) <= worst_deviation(ref)  # 0.007 vs 0.16 with these data
