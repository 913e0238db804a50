"""Helpers of the unet/mobilenet benchmarks: patch folders and images read
through stemroi's own readers, the 70:20:10 random and overlap-blocked splits
these benchmarks report, and a minimal Gaussian-column lattice with planted
vacancies / interstitials at known positions."""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    d = Path(os.environ.get("STEMROI_DATA_DIR", ROOT.parent / "shared" / "data"))
    if not (d / "ayyubi-stem-defects").is_dir():
        sys.exit(f"reference data not found under {d} (set STEMROI_DATA_DIR to the shared/data folder)")
    return d


def load_patch_folder(path):
    """(patches (n, 64, 64) float32 in [0, 1], labels (n,) str, files) via stemroi.load_patch_folder."""
    import stemroi

    ds = stemroi.load_patch_folder(path)
    names = [Path(f).name for f in ds.files]
    order = np.argsort(names, kind="stable")  # lexicographic, as these benchmarks' seeded splits were run
    return ds.patches[order], np.asarray(ds.class_names)[ds.labels][order], [names[i] for i in order]


def read_grey(path):
    """An 8-bit image file as float32 grey in [0, 1] via stemroi.read_image."""
    import stemroi

    return stemroi.read_image(path) / np.float32(255.0)


def random_split(n, fractions=(0.7, 0.2, 0.1), random_state=0):
    rng = np.random.default_rng(random_state)
    perm = rng.permutation(n)
    a = int(round(fractions[0] * n))
    b = a + int(round(fractions[1] * n))
    return perm[:a], perm[a:b], perm[b:]


SPACING = 8


def lattice(shape, rng, vacancies=(), interstitials=(), noise=0.03, sigma=1.3, spacing=SPACING):
    """Square lattice of Gaussian columns (sites at spacing/2 + k*spacing);
    vacancies remove a column, interstitials add one (0.9 x) at a cell centre."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros(shape)
    vac = set(map(tuple, vacancies))
    for r in range(spacing // 2, h + spacing, spacing):
        for c in range(spacing // 2, w + spacing, spacing):
            if (r, c) not in vac:
                img += np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma**2))
    for r, c in interstitials:
        img += 0.9 * np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sigma**2))
    img = img / 1.2 + rng.normal(0, noise, shape)
    return np.clip(img, 0, 1).astype(np.float32)


def synthetic_patches(rng, n_per_class=60, size=64):
    """Bulk / Vacancy / Interstitial patches with the defect near the centre; truth positions."""
    patches, labels, truth = [], [], []
    s = SPACING
    k = size // s
    for _ in range(n_per_class):
        patches.append(lattice((size, size), rng)); labels.append("Bulk"); truth.append(None)
        r, c = s // 2 + s * rng.integers(k // 2 - 2, k // 2 + 2, size=2)
        patches.append(lattice((size, size), rng, vacancies=[(r, c)])); labels.append("Vacancy"); truth.append((r, c))
        r, c = s * rng.integers(k // 2 - 2, k // 2 + 2, size=2)
        patches.append(lattice((size, size), rng, interstitials=[(r, c)])); labels.append("Interstitial"); truth.append((r, c))
    return np.stack(patches), np.array(labels), truth


def synthetic_field(rng, shape=(256, 256), n_each=6, min_dist=24):
    """A large field with n_each vacancies and n_each interstitials at known positions."""
    s = SPACING
    placed = []
    vac, inter = [], []
    while len(vac) + len(inter) < 2 * n_each:
        kind = "Vacancy" if len(vac) < n_each else "Interstitial"
        r, c = rng.integers(2, shape[0] // s - 2), rng.integers(2, shape[1] // s - 2)
        pos = (s // 2 + s * r, s // 2 + s * c) if kind == "Vacancy" else (s * r, s * c)
        if all(np.hypot(pos[0] - p[0], pos[1] - p[1]) >= min_dist for p in placed):
            placed.append(pos)
            (vac if kind == "Vacancy" else inter).append(pos)
    img = lattice(shape, rng, vacancies=vac, interstitials=inter)
    return img, {"Vacancy": vac, "Interstitial": inter}


def overlap_adjacency(patches, seg_len: int = 32, min_shared: int = 4, min_std: float = 2.0 / 255):
    """Sparse boolean (n, n) matrix: patches i, j share >= min_shared exact row
    segments of length seg_len (i.e. they overlap: shifted crops)."""
    from scipy import sparse

    q = np.round(np.asarray(patches) * 255).astype(np.uint8)
    n = q.shape[0]
    segs = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(q, seg_len, axis=2))
    owner = np.broadcast_to(np.arange(n)[:, None, None], segs.shape[:3]).ravel()
    flat = segs.reshape(-1, seg_len)
    keep = flat.astype(np.float32).std(axis=1) >= min_std * 255
    keys = flat[keep].view(np.dtype((np.void, seg_len))).ravel()
    owner = owner[keep]
    _, inv = np.unique(keys, return_inverse=True)
    P = sparse.csr_matrix((np.ones(len(inv), np.float32), (owner, inv)), shape=(n, inv.max() + 1))
    P.data[:] = 1
    P.sum_duplicates()
    P.data[:] = 1
    A = (P @ P.T).tocsr()
    A.setdiag(0)
    A.eliminate_zeros()
    return A >= min_shared


def blocked_split(adjacency, labels, fractions=(0.7, 0.2, 0.1), random_state=0):
    """Overlap-aware 70:20:10 split when overlap chains connect whole classes
    (every class of these sets is one connected set of shifted crops): per
    class, the test and validation sets are contiguous regions grown by
    breadth-first search over the overlap graph from random seeds, and every
    training patch that overlaps a validation or test patch is dropped
    (purged), so no training patch shares pixels with an evaluated one.
    Returns (train, val, test, n_purged)."""
    from collections import deque

    rng = np.random.default_rng(random_state)
    A = adjacency.tocsr()
    labels = np.asarray(labels)
    n = len(labels)
    role = np.zeros(n, np.int8)  # 0 train, 1 val, 2 test

    def grow(members, target, role_id):
        free = [i for i in members if role[i] == 0]
        got = 0
        while got < target and free:
            seed = free[rng.integers(len(free))]
            queue = deque([seed])
            while queue and got < target:
                i = queue.popleft()
                if role[i] != 0 or labels[i] != labels[seed]:
                    continue
                role[i] = role_id
                got += 1
                queue.extend(A.indices[A.indptr[i]:A.indptr[i + 1]].tolist())
            free = [i for i in members if role[i] == 0]

    for c in np.unique(labels):
        members = np.flatnonzero(labels == c).tolist()
        grow(members, int(round(fractions[2] * len(members))), 2)
        grow(members, int(round(fractions[1] * len(members))), 1)
    held = role > 0
    touches = np.asarray(A[:, held].sum(axis=1)).ravel() > 0
    purged = (role == 0) & touches
    train = np.flatnonzero((role == 0) & ~touches)
    return train, np.flatnonzero(role == 1), np.flatnonzero(role == 2), int(purged.sum())
